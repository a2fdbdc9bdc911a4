"""LoRA (peft LoraConfig): low-rank updates W + (alpha/r)·BA on the target modules; the task head
trains fully. Mergeable. Its variants (dora, rslora, pissa) subclass it and set `fixed`."""

from __future__ import annotations

from dataclasses import dataclass

from peft import LoraConfig, PeftType
from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

from tunelab.adapters.method import FRACTION, POSITIVE, POSITIVE_INT, setting
from tunelab.adapters.targets import WeightAdapter


@dataclass
class Lora(WeightAdapter):
    """Low-rank updates of the target weights."""
    r: int = setting(8, check=POSITIVE_INT,
                     doc="rank of the update: capacity, parameters and memory grow linearly")
    alpha: float = setting(16, peft="lora_alpha", check=POSITIVE,
                           doc="the update is scaled by alpha/r; keep alpha ≈ 2r when changing r")
    dropout: float = setting(0.1, peft="lora_dropout", check=FRACTION,
                             doc="dropout on the adapter input; 0 for tiny data-rich runs")

    config_class = LoraConfig
    peft_type = PeftType.LORA
    peft_defaults = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
