"""The one owner of every MLflow write: the training run (TrackedRun) and every other kind
(sweep, study, eval, compare, reproduce) through RunWriter, masked on the way in.

Names load on first use: compare/ imports the light modules here (names, masking, store, writer)
and must not pull in torch or Lightning through this package's training-side modules.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {"CostMeter": "perf", "TrackedRun": "run", "is_rank_zero": "run",
          "client_for": "store", "experiment_id": "store", "tracking_uri": "store",
          "RunWriter": "writer", "run_weights": "weights"}
__all__ = tuple(sorted(_HOMES))


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
