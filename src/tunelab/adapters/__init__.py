"""Where a fine-tuning method is applied, saved, reloaded and merged."""

from tunelab.adapters.apply import (apply_adapter, check_targets, is_adapter_folder, load_weights,
                                    parameter_counts, save_weights)

__all__ = ["apply_adapter", "check_targets", "is_adapter_folder", "load_weights",
           "parameter_counts", "save_weights"]
