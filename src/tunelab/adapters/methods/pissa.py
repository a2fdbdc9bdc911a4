"""PiSSA (peft LoraConfig init_lora_weights="pissa"): LoRA started from the top-r singular vectors
of each target weight, the residual left in the base weight. The exact SVD (not the randomised
"pissa_niter_N") is deterministic, so the saved adapter reloads on a freshly built base by
recomputing the same residual (tests/test_adapters.py checks it). Mergeable like LoRA."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from tunelab.adapters.methods.lora import Lora


@dataclass
class Pissa(Lora):
    """LoRA's settings; the adapter starts as the weight's principal part."""
    fixed: ClassVar[dict[str, Any]] = {"init_lora_weights": "pissa"}
