"""Turning a resolved config into MLflow params and the config hash (secrets masked first)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tunelab.hardware import profile
from tunelab.tracking.masking import masked
from tunelab.tracking.peaks import device_model

PARAM_LIMIT = 6000          # MLflow's param value limit; longer values are cut, the artifact has all
HASH_EXCLUDES = ("tracking", "paths")
# Not what ran: the profile's file name (`auto` and `cpu` can be the same hardware) and its price.
HARDWARE_HASH_EXCLUDES = ("name", "usd_per_hour")


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
