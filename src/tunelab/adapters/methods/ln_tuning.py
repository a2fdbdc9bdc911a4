"""LN tuning (peft LNTuningConfig): only (a trained copy of) the normalization layers train, plus
the task head: the answer to BitFit on bias-free Llama-style models. Mergeable."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from peft import LNTuningConfig, PeftType
from peft.utils import TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING

from tunelab.adapters.targets import WeightAdapter
from tunelab.config.errors import ConfigError


def norm_modules(net: torch.nn.Module) -> list[str]:
    """Names (last component) of the body's normalization layers: BERT's `LayerNorm`, Llama's
    `input_layernorm`, `post_attention_layernorm` and `norm`. peft has a per-architecture list
    only for some architectures (none for BERT); the layer classes say it for all."""
    return sorted({name.rsplit(".", 1)[-1] for name, mod in net.named_modules()
                   if name and type(mod).__name__.endswith("Norm")})


@dataclass
class LnTuning(WeightAdapter):
    """The normalization layers train; `target_modules` null means all of them."""

    config_class = LNTuningConfig
    peft_type = PeftType.LN_TUNING
    peft_defaults = TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING
    candidates = "normalization layers"

    def default_targets(self, model: DictConfig, net: torch.nn.Module | None) -> list[str]:
        return norm_modules(net) if net is not None else []

    def candidate_names(self, net: torch.nn.Module) -> list[str]:
        return norm_modules(net)

    def check_fit(self, skeleton: torch.nn.Module, model: DictConfig) -> None:
        if self.targets(model, skeleton) is None:
            raise ConfigError("adapter", self.name,
                              f"model={model.name} ({skeleton.config.model_type}) has no "
                              "normalization layers for ln-tuning to train: name some in "
                              "adapter.target_modules, or use adapter=lora/ia3")
        super().check_fit(skeleton, model)
