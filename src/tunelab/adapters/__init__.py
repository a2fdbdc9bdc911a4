"""Where a fine-tuning method is applied, saved, reloaded and merged."""

from tunelab.adapters.apply import (apply_adapter, check_fit, needs_module_tree,
                                    padding_side, parameter_counts)
from tunelab.adapters.storage import is_adapter_folder, load_weights, merge, save_weights

__all__ = ["apply_adapter", "check_fit", "is_adapter_folder", "load_weights", "merge",
           "needs_module_tree", "padding_side", "parameter_counts", "save_weights"]
