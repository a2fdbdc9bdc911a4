"""Hardware profiles: Trainer arguments, the global <-> per-device batch, and rank launching."""

from tunelab.hardware.launch import distributed_job
from tunelab.hardware.profile import (accelerator, check_machine, devices, full_state_dict,
                                      per_device_batch, precision, profile_params, trainer_kwargs,
                                      world_size)

__all__ = ["accelerator", "check_machine", "devices", "distributed_job", "full_state_dict",
           "per_device_batch", "precision", "profile_params", "trainer_kwargs", "world_size"]
