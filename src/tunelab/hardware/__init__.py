"""Hardware profiles: Trainer arguments and the global <-> per-device batch."""

from tunelab.hardware.profile import per_device_batch, profile_params, trainer_kwargs, world_size

__all__ = ["per_device_batch", "profile_params", "trainer_kwargs", "world_size"]
