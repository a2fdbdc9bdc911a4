"""Where a fine-tuning method is applied, saved, reloaded and merged; one module per method in
`adapters/methods/`, behind the protocol in `adapters/method.py`.

Saving, reloading and merging (`adapters/storage.py`, which imports peft) load on first use: a run
needs them only after training, and a full, head or bitfit run never needs peft before it.
"""

from __future__ import annotations

import importlib
from typing import Any

from tunelab.adapters.apply import (
                                    apply_adapter,
                                    check_fit,
                                    needs_module_tree,
                                    padding_side,
                                    parameter_counts,
)
from tunelab.adapters.methods import METHODS, method_of

_STORAGE = ("is_adapter_folder", "load_weights", "merge", "save_weights")

__all__ = ["METHODS", "apply_adapter", "check_fit", "is_adapter_folder", "load_weights", "merge",
           "method_of", "needs_module_tree", "padding_side", "parameter_counts", "save_weights"]


def __getattr__(name: str) -> Any:
    if name not in _STORAGE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.storage"), name)
