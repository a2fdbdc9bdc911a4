"""rsLoRA (peft LoraConfig use_rslora): LoRA scaled by alpha/sqrt(r) instead of alpha/r, so the
update does not shrink as the rank grows; the point of it is higher ranks. Mergeable like LoRA."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from tunelab.adapters.methods.lora import Lora


@dataclass
class RsLora(Lora):
    """LoRA's settings; `alpha` scales by alpha/sqrt(r)."""
    fixed: ClassVar[dict[str, Any]] = {"use_rslora": True}
