"""OFT (peft OFTConfig): a learned block-diagonal orthogonal rotation of each target's input;
keeps the weight's spectrum intact. The task head trains fully. Mergeable."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from omegaconf import DictConfig
from peft import OFTConfig, PeftType
from peft.utils import TRANSFORMERS_MODELS_TO_OFT_TARGET_MODULES_MAPPING

from tunelab.adapters.method import FRACTION, POSITIVE_INT, setting
from tunelab.adapters.targets import WeightAdapter, matches
from tunelab.config.errors import ConfigError


@dataclass
class Oft(WeightAdapter):
    """An orthogonal rotation, in blocks, of each target's input."""
    oft_block_size: int = setting(32, check=POSITIVE_INT,
                                  doc="peft's name: rotation block size; must divide every "
                                      "target's in_features")
    module_dropout: float = setting(0.0, check=FRACTION,
                                    doc="peft's name: drops whole blocks of the rotation per step")

    config_class = OFTConfig
    peft_type = PeftType.OFT
    peft_defaults = TRANSFORMERS_MODELS_TO_OFT_TARGET_MODULES_MAPPING
    # r=0: the block count follows from oft_block_size (peft takes exactly one of the two)
    fixed: ClassVar[dict[str, Any]] = {"r": 0}

    def check_fit(self, skeleton: torch.nn.Module, model: DictConfig) -> None:
        """peft would silently change a block size that does not divide a target's in_features,
        so a run would not train what it records."""
        super().check_fit(skeleton, model)
        targets = self.targets(model, skeleton) or []
        bad = {name: mod.in_features for name, mod in skeleton.named_modules()
               if isinstance(mod, torch.nn.Linear) and any(matches(name, t) for t in targets)
               and mod.in_features % self.oft_block_size}
        if bad:
            raise ConfigError("adapter.oft_block_size", self.oft_block_size,
                              f"a divisor of the in_features of every target module of "
                              f"model={model.name} ({bad})")
