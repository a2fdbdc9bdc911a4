"""Turning a resolved config into MLflow params, the config hash, and masking secrets."""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tunelab.hardware import profile
from tunelab.tracking.peaks import device_model

MASK = "***"
PARAM_LIMIT = 6000          # MLflow's param value limit; longer values are cut, the artifact has all
# A name is a secret's when its last word is one (HF_TOKEN, WANDB_API_KEY, hub.token), not when a
# secret word sits inside it (model.config.num_key_value_heads, token_type_ids).
_SECRET_NAME = re.compile(r"(^|[._-])(token|secret|password|passwd|api[_-]?key|access[_-]?key|"
                          r"private[_-]?key|key|auth|credentials?)$", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"\b(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}|ghp_[A-Za-z0-9]{20,}|"
                           r"AKIA[0-9A-Z]{16})\b")
HASH_EXCLUDES = ("tracking", "paths")
# Not what ran: the profile's file name (`auto` and `cpu` can be the same hardware) and its price.
HARDWARE_HASH_EXCLUDES = ("name", "usd_per_hour")


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def secret_env_values() -> list[str]:
    """Values of environment variables named like secrets (HF_TOKEN, WANDB_API_KEY, ...), longest
    first: masked wherever they appear, since paths and exception messages can carry them."""
    values = {v for k, v in os.environ.items() if is_secret_name(k) and len(v) >= 8}
    return sorted(values, key=len, reverse=True)


def _mask_values(text: str) -> str:
    for value in secret_env_values():
        text = text.replace(value, MASK)
    return _SECRET_VALUE.sub(MASK, text)


def mask_text(text: str) -> str:
    """Mask secret-looking values and `name=value` pairs whose name looks like a secret."""
    text = _mask_values(text)
    return re.sub(r"([\w.\-]+)(\s*[=:]\s*)(\S+)",
                  lambda m: f"{m[1]}{m[2]}{MASK}" if is_secret_name(m[1]) else m[0], text)


def masked(value: Any, name: str = "") -> Any:
    """A copy of a plain config tree with secret-named keys and secret-looking values masked."""
    if name and is_secret_name(name.rsplit(".", 1)[-1]) and value is not None:
        return MASK
    if isinstance(value, dict):
        return {k: masked(v, f"{name}.{k}" if name else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, name) for v in value]
    if isinstance(value, str):
        return _mask_values(value)
    return value


def plain_config(cfg: DictConfig) -> dict:
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    return masked(plain)


def flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    """Dotted keys -> string values; lists stay one value (`[query, value]`)."""
    flat = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
            flat[dotted] = text if len(text) <= PARAM_LIMIT else text[:PARAM_LIMIT - 40] + \
                " …[cut; full value in config/config.yaml]"
    return flat


def resolved_hardware(hw: dict, trainer_precision: str) -> dict[str, Any]:
    """The hardware a profile runs on here, its `auto` values decided the way the Trainer decides
    them (tunelab.hardware.profile), plus the device model: `hardware.resolved.*`."""
    node = OmegaConf.create({k: v for k, v in hw.items() if k not in HARDWARE_HASH_EXCLUDES})
    accelerator = profile.accelerator(node)
    accelerator = "gpu" if accelerator in profile.GPU_NAMES else accelerator
    return {**OmegaConf.to_container(node), "accelerator": accelerator,
            "devices": profile.devices(node),
            "precision": profile.precision(node, trainer_precision),
            "device_model": device_model(accelerator)}


def config_hash(plain: dict, data_digest: str) -> str:
    """Identifies a logical run: the resolved config minus where it is tracked/stored, with the
    hardware as it resolved here (so `hardware=auto` on a CPU is `hardware=cpu`, and a GPU re-run
    of a CPU run is a run of its own), plus the data."""
    core = {k: v for k, v in plain.items() if k not in HASH_EXCLUDES}
    trainer = core.get("trainer", {})
    core["hardware"] = resolved_hardware(core.get("hardware", {}),
                                         trainer.get("precision", "32-true"))
    core["trainer"] = {k: v for k, v in trainer.items()
                       if k not in ("enable_progress_bar", "precision")}
    blob = json.dumps({"config": core, "data": data_digest}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
