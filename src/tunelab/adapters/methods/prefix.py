"""Prefix tuning (peft PrefixTuningConfig): trained key/value vectors prepended to every attention
layer; the base stays untouched, the task head trains fully. Adds virtual tokens rather than
weight deltas, so it cannot merge into the base. On transformers >= 5.24 it goes through
`adapters.compat` (see there)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig
from peft import PeftType, PrefixTuningConfig

from tunelab.adapters.method import POSITIVE_INT, PeftMethod, setting
from tunelab.config.errors import ConfigError


@dataclass
class Prefix(PeftMethod):
    """Trained prefixes of every layer's keys and values."""
    num_virtual_tokens: int = setting(20, check=POSITIVE_INT,
                                      doc="prefix length per layer: more capacity, attention cost "
                                          "grows with it")
    prefix_projection: bool = setting(False, doc="peft's name: reparametrise the prefix through an "
                                                 "MLP (steadier, more parameters)")
    encoder_hidden_size: int | None = setting(None, doc="peft's name: that MLP's width; null: the "
                                                        "model's hidden size")

    merges = False
    config_class = PrefixTuningConfig
    peft_type = PeftType.PREFIX_TUNING

    def check_values(self, model: DictConfig) -> None:
        super().check_values(model)
        if model.gradient_checkpointing:
            raise ConfigError("model.gradient_checkpointing", True,
                              "false with adapter=prefix (prefix key/values break checkpointed "
                              "recomputation); use adapter=lora or turn checkpointing off")
