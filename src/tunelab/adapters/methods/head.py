"""Linear probe: the body is frozen and only the task head trains; the floor every method must
beat. The run saves only the head's tensors, reloaded onto the base its config rebuilds."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from tunelab.adapters.method import AdapterMethod
from tunelab.adapters.selection import head_parameters, train_only


@dataclass
class Head(AdapterMethod):
    """Only the task head trains (fits every model, so nothing to check)."""

    def apply(self, net: torch.nn.Module, model: DictConfig, task: DictConfig) -> torch.nn.Module:
        return train_only(net, set(head_parameters(net)))
