"""Weight adapters: peft methods that attach trained weights to named modules of the body (LoRA and
its variants, IA3, LoHa, OFT, VeRA, LN tuning). What they share: which modules they target (the
user's list, else the model preset's, else peft's per-architecture default), the refusals when
those modules do not exist, and the span-QA placement.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from omegaconf import DictConfig
from peft import TaskType, get_peft_model

from tunelab.adapters.method import OWN, PeftMethod, setting
from tunelab.config.errors import ConfigError

# transformers' name for the start/end head of every *ForQuestionAnswering model.
QA_HEAD = "qa_outputs"


def matches(name: str, target: str) -> bool:
    """peft's rule for a list entry: the module name equals it or ends with `.<target>`."""
    return name == target or name.endswith(f".{target}")


def linear_leaves(net: torch.nn.Module) -> list[str]:
    """Linear layer names below the repeated block index (`attention.self.query`): what a user
    types."""
    return sorted({re.split(r"\.\d+\.", name)[-1] for name, mod in net.named_modules()
                   if isinstance(mod, torch.nn.Linear)})


@dataclass
class WeightAdapter(PeftMethod):
    """A peft method that adds weights to the modules named in `target_modules`."""
    target_modules: list[str] | None = setting(  # noqa: RUF009 - setting() is a field()
        None, peft=OWN, doc="module names (or name endings) to adapt; null: the model preset's "
                            "list for this method, else peft's default for the architecture")

    preset: ClassVar[str] = "lora_targets"
    """The model preset's key holding this method's default targets."""
    peft_defaults: ClassVar[Mapping[str, list[str]]]
    """peft's per-architecture default targets for this method (used when no list is given)."""
    candidates: ClassVar[str] = "linear modules"
    """What a refusal lists as the modules a user could target instead."""

    def default_targets(self, model: DictConfig, net: torch.nn.Module | None) -> list[str]:
        return list(model[self.preset])

    def targets(self, model: DictConfig, net: torch.nn.Module | None) -> list[str] | None:
        """The user's list, else the preset's; None lets peft pick its per-architecture default
        (so a preset for a new architecture needs no list)."""
        return list(self.target_modules or self.default_targets(model, net)) or None

    def candidate_names(self, net: torch.nn.Module) -> list[str]:
        return linear_leaves(net)

    def placement(self, net: torch.nn.Module | None, model: DictConfig,
                  task: DictConfig | None) -> dict[str, Any]:
        where = {**super().placement(net, model, task), "target_modules": self.targets(model, net)}
        if where["task_type"] == TaskType.QUESTION_ANS:
            # peft's PeftModelForQuestionAnswering drops token_type_ids (and position_ids) on the
            # way to the base model for weight adapters, so a BERT-family model would train blind
            # to which tokens are the question. The generic PeftModel passes every input through;
            # the head it would have added to modules_to_save is named here instead.
            where |= {"task_type": None, "modules_to_save": [QA_HEAD]}
        return where

    def check_fit(self, skeleton: torch.nn.Module, model: DictConfig) -> None:
        targets = self.targets(model, skeleton)
        model_type = skeleton.config.model_type
        if targets is None and model_type not in self.peft_defaults:
            raise ConfigError("adapter.target_modules", None,
                              f"a list of module names: peft has no default for {model_type}; "
                              f"{self.candidates} of model={model.name}: "
                              f"{self.candidate_names(skeleton)}")
        names = [name for name, _ in skeleton.named_modules()]
        missing = [t for t in targets or [] if not any(matches(n, t) for n in names)]
        if missing:
            raise ConfigError("adapter.target_modules", missing,
                              f"module names that exist in model={model.name}; its "
                              f"{self.candidates} are {self.candidate_names(skeleton)}")
        self._check_peft_accepts(skeleton, model, targets)

    def _check_peft_accepts(self, skeleton: torch.nn.Module, model: DictConfig,
                            targets: list[str] | None) -> None:
        """peft's own refusal of a module type it cannot adapt (LoHa on GPT-2's Conv1D), got by
        applying the adapter to a copy of the weightless tree: peft's list of supported types
        stays peft's, and nothing heavy is allocated (`low_cpu_mem_usage`)."""
        try:
            get_peft_model(copy.deepcopy(skeleton), self.peft_config(skeleton, model, None),
                           low_cpu_mem_usage=True)
        except (TypeError, ValueError) as err:
            raise ConfigError("adapter", self.name,
                              f"a method peft can apply to the targets {targets} of "
                              f"model={model.name}; peft: {err}") from None
