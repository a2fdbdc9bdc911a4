"""DoRA (peft LoraConfig use_dora): LoRA on the direction of each target weight plus a trained
per-column magnitude; often closer to full fine-tuning than LoRA at the same rank, slower steps.
Mergeable like LoRA."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from tunelab.adapters.methods.lora import Lora


@dataclass
class Dora(Lora):
    """LoRA's settings; peft decomposes each weight into magnitude and direction."""
    fixed: ClassVar[dict[str, Any]] = {"use_dora": True}
