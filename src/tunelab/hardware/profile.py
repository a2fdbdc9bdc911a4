"""Hardware profile -> Lightning Trainer arguments, and the global batch -> per-device batch.

`auto` values (accelerator, devices, precision) are decided here, when the Trainer is built, so
every profile imports and composes on a machine without a GPU.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from tunelab.hardware.launch import JobDDPStrategy, JobFSDPStrategy, RankCommand

log = logging.getLogger(__name__)
GPU_NAMES = ("gpu", "cuda")


def accelerator(hw: DictConfig) -> str:
    """`auto`: gpu when CUDA is visible, else cpu (Lightning's `auto` would also pick MPS/TPU)."""
    if hw.accelerator != "auto":
        return hw.accelerator
    return "gpu" if torch.cuda.is_available() else "cpu"


def devices(hw: DictConfig) -> int:
    """Processes per node: `auto` is every visible GPU on a GPU profile, else one."""
    if hw.devices != "auto":
        return int(hw.devices)
    return max(1, torch.cuda.device_count()) if accelerator(hw) in GPU_NAMES else 1


def precision(hw: DictConfig, requested: str) -> str:
    """`auto`: bf16-mixed on a GPU that supports it, else 16-mixed; full fp32 on CPU, where
    bf16 is slower than fp32 on most machines."""
    if requested != "auto":
        return requested
    if accelerator(hw) not in GPU_NAMES:
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() \
        else "16-mixed"


def world_size(hw: DictConfig) -> int:
    return devices(hw) * hw.num_nodes


def per_device_batch(global_batch: int, hw: DictConfig, accumulate: int) -> int:
    """`data.batch_size` is the global batch: split over every process and accumulation step."""
    return max(1, global_batch // (world_size(hw) * accumulate))


def strategy(hw: DictConfig, job: DictConfig | None = None, run_dir: Path | None = None):
    """The profile's strategy. With the job's config, DDP and FSDP start ranks > 0 on that config
    (see hardware.launch); without it, Lightning's own launcher re-runs the command line."""
    if hw.strategy not in ("ddp", "fsdp") or job is None:
        return hw.strategy
    command = RankCommand(job, run_dir or Path.cwd())
    if hw.strategy == "ddp":
        return JobDDPStrategy(command, process_group_backend=hw.process_group_backend)
    # use_orig_params lets PEFT mix frozen and trainable weights in one flat shard.
    return JobFSDPStrategy(command, process_group_backend=hw.process_group_backend,
                           use_orig_params=True)


def trainer_kwargs(hw: DictConfig, trainer: DictConfig, job: DictConfig | None = None,
                   run_dir: Path | None = None) -> dict:
    """Lightning Trainer arguments for the profile and the loop settings. `job` (the checked
    config) and `run_dir` (the job's output folder) let a DDP/FSDP job start its own ranks."""
    kwargs = {
        "accelerator": accelerator(hw),
        "devices": hw.devices,
        "num_nodes": hw.num_nodes,
        "strategy": strategy(hw, job, run_dir),
        "precision": precision(hw, trainer.precision),
        "max_epochs": trainer.max_epochs if trainer.max_epochs is not None else -1,
        "max_steps": trainer.max_steps,
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
        "gradient_clip_val": trainer.gradient_clip_val,
        "log_every_n_steps": trainer.log_every_n_steps,
        "enable_progress_bar": trainer.enable_progress_bar,
        "deterministic": trainer.deterministic,
        "num_sanity_val_steps": 0,
        "enable_model_summary": False,
    }
    if trainer.val_check_interval is not None:
        # An int counts optimizer steps across epochs; Lightning counts batches (x accumulation).
        kwargs["val_check_interval"] = trainer.val_check_interval * trainer.accumulate_grad_batches
        kwargs["check_val_every_n_epoch"] = None
    return kwargs


def profile_params(hw: DictConfig, trainer: DictConfig, global_batch: int) -> dict:
    """The facts of the profile as run (its `auto` values decided), recorded as params so runs on
    different hardware compare. `hardware.global_batch` differs from `data.batch_size` only when
    `devices=auto` found a device count that does not divide it."""
    world, accumulate = world_size(hw), trainer.accumulate_grad_batches
    per_device = per_device_batch(global_batch, hw, accumulate)
    if per_device * world * accumulate != global_batch:
        log.warning("data.batch_size=%d does not split over %d processes x %d accumulation steps; "
                    "the global batch is %d", global_batch, world, accumulate,
                    per_device * world * accumulate)
    return {"hardware.world_size": world, "hardware.per_device_batch": per_device,
            "hardware.global_batch": per_device * world * accumulate,
            "hardware.resolved.accelerator": accelerator(hw),
            "hardware.resolved.devices": devices(hw),
            "hardware.resolved.num_nodes": hw.num_nodes,
            "hardware.resolved.precision": precision(hw, trainer.precision),
            "hardware.resolved.strategy": hw.strategy if hw.strategy != "auto" else
            ("ddp" if world > 1 else "single_device")}
