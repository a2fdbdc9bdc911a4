"""Where a fine-tuning method is applied, saved, reloaded and merged; one module per method in
`adapters/methods/`, behind the protocol in `adapters/method.py`."""

from tunelab.adapters.apply import (
                                    apply_adapter,
                                    check_fit,
                                    needs_module_tree,
                                    padding_side,
                                    parameter_counts,
)
from tunelab.adapters.methods import METHODS, method_of
from tunelab.adapters.storage import is_adapter_folder, load_weights, merge, save_weights

__all__ = ["METHODS", "apply_adapter", "check_fit", "is_adapter_folder", "load_weights", "merge",
           "method_of", "needs_module_tree", "padding_side", "parameter_counts", "save_weights"]
