"""Full fine-tuning: every weight trains. The baseline every method is compared against; the run
saves the whole model (`save_pretrained`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from tunelab.adapters.method import AdapterMethod


@dataclass
class Full(AdapterMethod):
    """No adapter: the model as loaded, all of it trainable."""

    def apply(self, net: torch.nn.Module, model: DictConfig, task: DictConfig) -> torch.nn.Module:
        return net.requires_grad_(True)
