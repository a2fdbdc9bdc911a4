"""The peft methods added for issue #14 item 5 (rslora, pissa, loha, oft, vera, ln-tuning), each
in one place: how its typed settings (config/schema.py) become its peft config, and what it checks
before any weights load. apply.py dispatches here; storage.py saves, reloads and merges them as it
does LoRA (peft's adapter folder and `merge_and_unload`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig
from peft import LNTuningConfig, LoHaConfig, OFTConfig, PeftConfig, VeraConfig

from tunelab.config import ConfigError

# peft LoraConfig arguments that make each LoRA-family method. PiSSA initialises the adapter
# from the principal singular vectors of each target and leaves the residual in the base weight;
# the exact SVD ("pissa", not the randomised "pissa_niter_N") is deterministic, so reloading the
# adapter on a freshly built base recomputes the same residual (tests/test_adapters.py checks it).
LORA_VARIANTS: dict[str, dict[str, Any]] = {
    "lora": {},
    "dora": {"use_dora": True},
    "rslora": {"use_rslora": True},     # scale alpha/sqrt(r) instead of alpha/r
    "pissa": {"init_lora_weights": "pissa"},
}


def _loha(adapter: DictConfig, targets: list[str] | None, **common: Any) -> PeftConfig:
    return LoHaConfig(r=adapter.r, alpha=adapter.alpha, rank_dropout=adapter.rank_dropout,
                      module_dropout=adapter.module_dropout, target_modules=targets, **common)


def _oft(adapter: DictConfig, targets: list[str] | None, **common: Any) -> PeftConfig:
    # r=0: the block count follows from oft_block_size (peft takes exactly one of the two).
    return OFTConfig(r=0, oft_block_size=adapter.oft_block_size,
                     module_dropout=adapter.module_dropout, target_modules=targets, **common)


def _vera(adapter: DictConfig, targets: list[str] | None, **common: Any) -> PeftConfig:
    # save_projection=False: the shared random projections are rebuilt from projection_prng_key on
    # reload, so the artifact holds only the trained vectors (and the head).
    return VeraConfig(r=adapter.r, d_initial=adapter.d_initial, vera_dropout=adapter.vera_dropout,
                      projection_prng_key=adapter.projection_prng_key, save_projection=False,
                      target_modules=targets, **common)


def _ln_tuning(adapter: DictConfig, targets: list[str] | None, **common: Any) -> PeftConfig:
    return LNTuningConfig(target_modules=targets, **common)


BUILDERS: dict[str, Callable[..., PeftConfig]] = {
    "loha": _loha, "oft": _oft, "vera": _vera, "ln-tuning": _ln_tuning}


def norm_modules(net: torch.nn.Module) -> list[str]:
    """Names (last component) of the body's normalization layers: BERT's `LayerNorm`, Llama's
    `input_layernorm`, `post_attention_layernorm` and `norm`. peft has a per-architecture list
    for ln-tuning only for some architectures (none for BERT); the layer classes say it for all."""
    return sorted({name.rsplit(".", 1)[-1] for name, mod in net.named_modules()
                   if name and type(mod).__name__.endswith("Norm")})


def check_oft_blocks(adapter: DictConfig, in_features: dict[str, int], model_name: str) -> None:
    """OFT rotates each target's input in blocks of oft_block_size; peft would silently change a
    size that does not divide a target's in_features, so a run would not train what it records."""
    bad = {name: size for name, size in in_features.items() if size % adapter.oft_block_size}
    if bad:
        raise ConfigError("adapter.oft_block_size", adapter.oft_block_size,
                          f"a divisor of the in_features of every target module of "
                          f"model={model_name} ({bad})")
