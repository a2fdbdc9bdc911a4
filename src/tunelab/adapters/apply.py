"""Where a run meets its method: the pre-launch fit check, applying the method, the padding side
it needs, and trainable-parameter accounting. What each method does lives in its own module
(`adapters/methods/`); these functions look it up in the registry.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from tunelab.adapters.methods import method_of


def needs_module_tree(adapter: DictConfig) -> bool:
    """Whether `check_fit` must see the model's modules (full, head, prefix and prompt fit every
    model, so their runs skip building it)."""
    return method_of(adapter).inspects_modules()


def check_fit(skeleton: torch.nn.Module, adapter: DictConfig, model_cfg: DictConfig) -> None:
    """Reject, before any weights load, a method that cannot apply to this architecture. `skeleton`
    is the module tree without weights (`models.skeleton`), so this costs no download or memory."""
    method_of(adapter).check_fit(skeleton, model_cfg)


def apply_adapter(net: torch.nn.Module, adapter: DictConfig, model_cfg: DictConfig,
                  task: DictConfig) -> torch.nn.Module:
    """Return the model with exactly the method's parameters trainable."""
    return method_of(adapter).apply(net, model_cfg, task)


def padding_side(adapter: DictConfig, model_cfg: DictConfig, task: DictConfig) -> str | None:
    """"left" where the adapter hides the padding from the model, else None (the tokenizer's
    own); the method's module says why."""
    return method_of(adapter).padding_side(model_cfg, task)


def parameter_counts(net: torch.nn.Module) -> dict[str, float]:
    """params/trainable, params/total and params/trainable_pct, counted once per shared tensor."""
    seen, trainable, total = set(), 0, 0
    for param in net.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return {"params/trainable": trainable, "params/total": total,
            "params/trainable_pct": 100.0 * trainable / max(total, 1)}
