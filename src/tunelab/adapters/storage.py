"""Save, reload and merge trained weights, in the smallest form that reloads on the base. The form
follows from what the method's `apply` returned, so a method module declares none:

- a peft model: peft's adapter folder (`adapter_config.json` + `adapter_model.safetensors`), which
  `PeftModel.from_pretrained(base, folder)` loads; never a copy of the frozen base.
- a selection (bitfit, head): only the trained tensors (`trained_tensors.safetensors`) plus
  `trained_tensors.json` naming them; `load_weights` puts them onto the base rebuilt from the run's config.
- everything trainable (full): the whole model via `save_pretrained`, which `from_pretrained` loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import PeftModel, PeftType
from safetensors.torch import load_file, save_file

from tunelab.adapters.compat import restore_past_key_values
from tunelab.adapters.method import PeftMethod
from tunelab.adapters.methods import METHODS

PEFT_FILE = "adapter_config.json"
TENSORS_FILE = "trained_tensors.safetensors"
TENSORS_INDEX = "trained_tensors.json"


def _trained_tensors(net: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The trainable tensors when they are a strict subset of the model, else None (full)."""
    params = dict(net.named_parameters())
    trained = {name: p.detach().contiguous() for name, p in params.items() if p.requires_grad}
    return trained if len(trained) < len(params) else None


def save_weights(net: torch.nn.Module, folder: Path, tokenizer=None) -> float:
    """Save the trained weights into `folder` (see the module docstring for the three forms) and
    return their size in MB, the run's params/adapter_mb."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    trained = None if isinstance(net, PeftModel) else _trained_tensors(net)
    if trained is None:
        net.save_pretrained(folder, safe_serialization=True)
    else:
        save_file(trained, str(folder / TENSORS_FILE))
        index = {"format": "tunelab trained tensors: load onto the base built from the run's "
                           "config with tunelab.adapters.load_weights",
                 "base_class": type(net).__name__, "tensors": sorted(trained)}
        (folder / TENSORS_INDEX).write_text(json.dumps(index, indent=1))
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 2**20


def is_adapter_folder(folder: Path) -> bool:
    """True when `folder` holds only trained weights that need the base (peft or tensor subset)."""
    return (Path(folder) / PEFT_FILE).is_file() or (Path(folder) / TENSORS_INDEX).is_file()


def load_weights(base: torch.nn.Module, folder: Path) -> torch.nn.Module:
    """The inverse of `save_weights` for adapter folders: the trained weights on a freshly built base
    (the base must come from the run's own config and seed, as `models.load_model` builds it)."""
    folder = Path(folder)
    if (folder / PEFT_FILE).is_file():
        return restore_past_key_values(PeftModel.from_pretrained(base, str(folder)))
    tensors = load_file(str(folder / TENSORS_FILE))
    unexpected = base.load_state_dict(tensors, strict=False).unexpected_keys
    if unexpected:
        raise ValueError(f"{folder} holds tensors {unexpected} that {type(base).__name__} lacks: "
                         "was it saved from another model or task?")
    return base


def mergeable(kind: PeftType) -> bool:
    """The merge rule of the methods that save adapters of this peft type (each method's
    `merges`): a saved folder records peft's type, not tunelab's method."""
    rules = {m.merges for m in METHODS.values()
             if issubclass(m, PeftMethod) and m.peft_type == kind}
    return rules == {True}


def merge(net: torch.nn.Module) -> torch.nn.Module:
    """Fold a weight adapter into the base weights (`merge_and_unload`): a plain transformers
    model with the same outputs and no adapter overhead, for export. Models without an adapter
    (full, bitfit, head) are already plain and come back unchanged."""
    if not isinstance(net, PeftModel):
        return net
    kind = net.peft_config[net.active_adapter].peft_type
    if not mergeable(kind):
        raise ValueError(f"a {kind.value} adapter cannot be merged into the base weights (its "
                         "method adds no weight deltas); export it unmerged (PeftModel over the "
                         "base)")
    return net.merge_and_unload()
