"""LoHa (peft LoHaConfig, from LyCORIS): the update is the Hadamard product of two rank-r
products, so its rank can reach r^2 for 2x LoRA's parameters. The task head trains fully.
Mergeable."""

from __future__ import annotations

from dataclasses import dataclass

from peft import LoHaConfig, PeftType
from peft.utils import TRANSFORMERS_MODELS_TO_LOHA_TARGET_MODULES_MAPPING

from tunelab.adapters.method import FRACTION, POSITIVE, POSITIVE_INT, setting
from tunelab.adapters.targets import WeightAdapter


@dataclass
class Loha(WeightAdapter):
    """A Hadamard product of two low-rank updates on each target."""
    r: int = setting(8, check=POSITIVE_INT, doc="rank of each of the two factors")
    alpha: float = setting(8, check=POSITIVE, doc="the update is scaled by alpha/r")
    rank_dropout: float = setting(0.0, check=FRACTION,
                                  doc="peft's name: drops rank components of the update while "
                                      "training")
    module_dropout: float = setting(0.0, check=FRACTION,
                                    doc="peft's name: drops a whole module's update per step")

    config_class = LoHaConfig
    peft_type = PeftType.LOHA
    peft_defaults = TRANSFORMERS_MODELS_TO_LOHA_TARGET_MODULES_MAPPING
