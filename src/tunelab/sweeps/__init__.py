"""Hydra callbacks: sweep id, parent run, resumable multiruns."""

from tunelab.sweeps.callbacks import SWEEP_ENV, SweepCallback, sweep_id_for

__all__ = ["SWEEP_ENV", "SweepCallback", "sweep_id_for"]
