"""IA3 (peft IA3Config): learned per-channel scaling vectors on keys, values and the feed-forward
input; ~10x fewer parameters than LoRA r=8. The task head trains fully. Mergeable."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig
from peft import IA3Config, PeftType
from peft.utils import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING

from tunelab.adapters.method import OWN, setting
from tunelab.adapters.targets import WeightAdapter
from tunelab.config.errors import ConfigError


@dataclass
class Ia3(WeightAdapter):
    """Scaling vectors on the target modules' outputs (inputs for the feed-forward ones)."""
    feedforward_modules: list[str] | None = setting(  # noqa: RUF009 - setting() is a field()
        None, peft=OWN, doc="peft's name: targets whose *input* is scaled (the feed-forward down "
                            "projection); null: the preset's ia3_feedforward; a subset of the "
                            "targets")

    config_class = IA3Config
    peft_type = PeftType.IA3
    peft_defaults = TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING
    preset = "ia3_targets"

    def feedforward(self, model: DictConfig) -> list[str] | None:
        return list(self.feedforward_modules or model.ia3_feedforward) or None

    def placement(self, net: torch.nn.Module | None, model: DictConfig,
                  task: DictConfig | None) -> dict[str, Any]:
        return {**super().placement(net, model, task),
                "feedforward_modules": self.feedforward(model)}

    def check_fit(self, skeleton: torch.nn.Module, model: DictConfig) -> None:
        targets = self.targets(model, skeleton)
        extra = sorted(set(self.feedforward(model) or []) - set(targets or []))
        if extra:
            raise ConfigError("adapter.feedforward_modules", extra,
                              f"a subset of the IA3 target modules {targets}")
        super().check_fit(skeleton, model)
