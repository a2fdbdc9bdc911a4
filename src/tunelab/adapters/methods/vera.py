"""VeRA (peft VeraConfig): one pair of frozen random projections shared by all target layers and
per-layer trained scaling vectors; ~10x fewer parameters than LoRA. The projections are rebuilt
from `projection_prng_key` on reload, so the saved adapter holds only the trained vectors (and the
head). Mergeable."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from peft import PeftType, VeraConfig
from peft.utils import TRANSFORMERS_MODELS_TO_VERA_TARGET_MODULES_MAPPING

from tunelab.adapters.method import FRACTION, POSITIVE_INT, setting
from tunelab.adapters.targets import WeightAdapter


@dataclass
class Vera(WeightAdapter):
    """Trained scaling vectors around shared frozen random projections."""
    r: int = setting(256, check=POSITIVE_INT,
                     doc="rank of the shared projections: costs memory, adds few trained "
                         "parameters")
    d_initial: float = setting(0.1, doc="peft's name: initial value of the trained d vector")
    dropout: float = setting(0.0, peft="vera_dropout", check=FRACTION,
                             doc="dropout on the adapter input")
    projection_prng_key: int = setting(0, doc="peft's name: seed of the shared projections "
                                              "(rebuilt from it on reload)")

    config_class = VeraConfig
    peft_type = PeftType.VERA
    peft_defaults = TRANSFORMERS_MODELS_TO_VERA_TARGET_MODULES_MAPPING
    fixed: ClassVar[dict[str, Any]] = {"save_projection": False}
