"""The protocol every adapter method implements, one module per method in `adapters/methods/`.

A method is a dataclass: its fields are the method's settings (what `conf/adapter/<name>.yaml`
holds and `config/schema.py` binds), each declared with `setting`, which carries the field's
documentation, its range check and what peft calls it. Its class-level facts and methods say the
rest: what it refuses before any work (`check_values` on the config alone, `check_fit` on the
model's module tree without weights), how it applies (`apply`), which padding side it needs and
whether it merges into the base for export (`merges`). What is saved follows from what `apply`
returns (see `adapters/storage.py`): peft's adapter folder for a peft model, the trained tensors
for a selection, the whole model when everything trains.

Names: the user-facing keys `r`, `alpha`, `dropout`, `target_modules` and `num_virtual_tokens`
are tunelab's wherever the concept appears; every other key is peft's own name for it. The one
mapping from a tunelab name to peft's is each field's `peft` (LoRA's `alpha` is peft's
`lora_alpha`, VeRA's `dropout` is `vera_dropout`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from omegaconf import DictConfig

from tunelab import tasks
from tunelab.config.errors import ConfigError

if TYPE_CHECKING:       # peft loads with a peft method's module, never for full, head or bitfit
    from peft import PeftConfig


@dataclass(frozen=True)
class Check:
    """A range a setting must be in, and how a message says it."""
    ok: Callable[[Any], bool]
    allowed: str


POSITIVE = Check(lambda v: v > 0, "> 0")
POSITIVE_INT = Check(lambda v: v > 0, "an integer > 0")
FRACTION = Check(lambda v: 0 <= v < 1, "in [0, 1)")
# Resolved by the method itself (defaults from the model preset), never handed to peft verbatim.
OWN = "tunelab"


def setting(default: Any = dataclasses.MISSING, *, doc: str, peft: str | None = None,
            check: Check | None = None) -> Any:
    """A method's setting: `doc` says what it changes (and is what a newcomer reads); `peft` is
    the peft config argument it becomes: None for the same name, `OWN` for one the method resolves
    itself (not handed to peft); `check` the range a run refuses to start outside of."""
    return dataclasses.field(default=default,
                             metadata={"doc": doc, "peft": peft, "check": check})


@dataclass
class AdapterMethod:
    """Settings every method has, and the protocol's defaults: no refusals, the tokenizer's own
    padding side. A method module subclasses this (or `PeftMethod`) and overrides what differs."""
    name: str = setting(doc="the option's file name under conf/adapter/ (recorded as adapter.name)",
                        peft=OWN)
    method: str = setting(doc="the registered method this option runs (adapters.methods.METHODS)",
                          peft=OWN)
    lr: float = setting(doc="the method's default learning rate (optim.lr defaults to it)",
                        peft=OWN, check=Check(lambda v: v > 0, "a learning rate > 0"))

    merges: ClassVar[bool] = True
    """Whether the trained weights fold into the base for export (a selection already is plain)."""

    def check_values(self, model: DictConfig) -> None:
        """Refuse, from the config alone, a setting outside its range or a model it cannot run
        with. Runs inside `check_config`, before anything loads."""
        for f in dataclasses.fields(self):
            check, value = f.metadata["check"], getattr(self, f.name)
            if check is not None and value is not None and not check.ok(value):
                raise ConfigError(f"adapter.{f.name}", value, check.allowed)

    def check_fit(self, skeleton: torch.nn.Module, model: DictConfig) -> None:
        """Refuse, from the module tree without weights (`models.skeleton`), an architecture the
        method cannot apply to. Methods that fit every model keep this default."""

    def apply(self, net: torch.nn.Module, model: DictConfig, task: DictConfig) -> torch.nn.Module:
        """The model with exactly the method's parameters trainable."""
        raise NotImplementedError(f"{type(self).__name__} must say how adapter={self.name} applies")

    def padding_side(self, model: DictConfig, task: DictConfig) -> str | None:
        """"left" where the method hides the pads from the model, else None (the tokenizer's)."""
        return None

    @classmethod
    def inspects_modules(cls) -> bool:
        """Whether `check_fit` needs the module tree (building it reads the model's config)."""
        return cls.check_fit is not AdapterMethod.check_fit


@dataclass
class PeftMethod(AdapterMethod):
    """A method peft implements: the fields marked for peft, under peft's names, plus `fixed`,
    make the `config_class` instance that `get_peft_model` applies."""
    # Plain `type` and `str` (a PeftType is a str enum): OmegaConf reads a method's annotations
    # when it binds the settings, and peft is not imported here (see the module's imports).
    config_class: ClassVar[type]
    """The peft config class (`peft.LoraConfig`)."""
    peft_type: ClassVar[str]
    """What peft records in adapter_config.json: how a saved adapter finds its merge rule."""
    fixed: ClassVar[dict[str, Any]] = {}
    """peft arguments this method always sets (what makes DoRA a LoRA variant)."""

    def peft_arguments(self) -> dict[str, Any]:
        """The settings under the names peft's config takes (each field's `peft`)."""
        return {f.metadata["peft"] or f.name: getattr(self, f.name)
                for f in dataclasses.fields(self) if f.metadata["peft"] != OWN}

    def placement(self, net: torch.nn.Module | None, model: DictConfig,
                  task: DictConfig | None) -> dict[str, Any]:
        """The peft arguments that depend on the model and task: the task type here (none
        without a task: the adapter alone, as `check_fit` tries it)."""
        return {"task_type": tasks.spec_for(task, model.family).peft_task_type if task else None}

    def peft_config(self, net: torch.nn.Module | None, model: DictConfig,
                    task: DictConfig | None) -> PeftConfig:
        return self.config_class(**self.peft_arguments(), **self.fixed,
                                 **self.placement(net, model, task))

    def apply(self, net: torch.nn.Module, model: DictConfig, task: DictConfig) -> torch.nn.Module:
        from peft import get_peft_model

        from tunelab.adapters.compat import restore_past_key_values

        return restore_past_key_values(get_peft_model(net, self.peft_config(net, model, task)))
