"""BitFit (Ben Zaken et al., 2022): only the bias terms of the body, plus the task head, train.
No new modules; the run saves just those tensors. Refused on models without biases (Llama-style),
where it would train the head alone."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from tunelab.adapters.method import AdapterMethod
from tunelab.adapters.selection import head_parameters, train_only
from tunelab.config.errors import ConfigError


def bias_parameters(net: torch.nn.Module) -> list[str]:
    """Every bias term of the body, head excluded."""
    head = set(head_parameters(net))
    return [name for name, _ in net.named_parameters()
            if name.rsplit(".", 1)[-1] == "bias" and name not in head]


@dataclass
class BitFit(AdapterMethod):
    """The body's biases and the task head train."""

    def check_fit(self, skeleton: torch.nn.Module, model: DictConfig) -> None:
        if not bias_parameters(skeleton):
            raise ConfigError("adapter", self.name,
                              f"model={model.name} ({skeleton.config.model_type}) has no bias "
                              "terms, so bitfit would train the head alone: use adapter=head for "
                              "that, or adapter=ia3/lora")

    def apply(self, net: torch.nn.Module, model: DictConfig, task: DictConfig) -> torch.nn.Module:
        return train_only(net, set(head_parameters(net)) | set(bias_parameters(net)))
