"""Hardware profile -> Lightning Trainer arguments, and the global batch -> per-device batch."""

from __future__ import annotations

from omegaconf import DictConfig


def world_size(hw: DictConfig) -> int:
    devices = hw.devices
    if devices == "auto":
        import torch

        devices = torch.cuda.device_count() if hw.accelerator in ("gpu", "cuda", "auto") and \
            torch.cuda.is_available() else 1
    return max(1, int(devices)) * hw.num_nodes


def per_device_batch(global_batch: int, hw: DictConfig, accumulate: int) -> int:
    """`data.batch_size` is the global batch: split over every process and accumulation step."""
    return max(1, global_batch // (world_size(hw) * accumulate))


def trainer_kwargs(hw: DictConfig, trainer: DictConfig) -> dict:
    """Lightning Trainer arguments for the profile and the loop settings."""
    kwargs = {
        "accelerator": hw.accelerator,
        "devices": hw.devices,
        "num_nodes": hw.num_nodes,
        "strategy": hw.strategy,
        "precision": trainer.precision,
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
        # An int counts optimizer steps across epochs; Lightning counts batches, so scale by accumulation.
        kwargs["val_check_interval"] = trainer.val_check_interval * trainer.accumulate_grad_batches
        kwargs["check_val_every_n_epoch"] = None
    return kwargs


def profile_params(hw: DictConfig, trainer: DictConfig, global_batch: int) -> dict:
    """The facts of the profile as run, recorded as params so runs on different hardware compare."""
    return {"hardware.world_size": world_size(hw),
            "hardware.per_device_batch": per_device_batch(global_batch, hw,
                                                          trainer.accumulate_grad_batches)}
