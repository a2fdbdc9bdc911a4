"""Prefix tuning across transformers 5.24's rename of `past_key_values` to `cache`, until peft
follows.

transformers 5.24 renamed the forward argument that carries the key/value cache from
`past_key_values` to `cache` (BERT, RoBERTa, Llama, ...; the old name is still accepted, deprecated,
until 5.40). peft 0.21.2 decides how to hand a prefix to the model by looking for the *old name* in
the forward signatures, so on 5.24 it refuses every encoder ("Model does not support past key values
which are required for prefix tuning.") and, on decoders, leans on the deprecated name that 5.40
removes. During generation, transformers passes the running cache as `cache`, where peft looks for
`past_key_values`, so peft would never see that a prefix is already in the cache.

`restore_past_key_values` gives the affected modules of one prefix-tuned model the signature peft
looks for: a forward that takes `past_key_values` and passes it on as `cache`. It changes these
instances only (no library class is patched) and does nothing where it is not needed: on
transformers < 5.24 (the forward still takes `past_key_values`), and on a peft newer than the
series checked here (`PEFT_READS_OLD_NAME_ONLY`; pyproject admits only that series).

To delete this module once a peft release reads `cache`: raise pyproject's peft range to it, check
that tests/test_adapters_compat.py passes with `restore_past_key_values` reduced to `return net`,
then remove this file and its two calls (`PeftMethod.apply` in adapters/method.py, `load_weights` in
adapters/storage.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import peft
import torch
from packaging.version import Version
from peft import PeftModel, PeftType

LEGACY, RENAMED = "past_key_values", "cache"
# The peft minor series known to look for `past_key_values` only (0.21.2 checked). A newer peft
# turns the shim off; if it still needs it, tests/test_adapters_compat.py fails and says so.
PEFT_READS_OLD_NAME_ONLY = (0, 21)


def _cache_only(function: Callable) -> bool:
    """Whether `function` takes the cache only under the new name (transformers >= 5.24)."""
    params = inspect.signature(function).parameters
    return RENAMED in params and LEGACY not in params


class _LegacyCacheForward:
    """A module's forward that also takes the prefix as `past_key_values` and passes it as `cache`.

    Its signature is the forward's own plus `past_key_values` (transformers' `generate` checks its
    arguments against it). It holds the module and calls its class's forward, so `copy.deepcopy`
    of the model copies it with its own module (tests and Lightning copy models)."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        own = inspect.signature(module.forward)
        params = list(own.parameters.values())
        legacy = inspect.Parameter(LEGACY, inspect.Parameter.KEYWORD_ONLY, default=None)
        at = len(params) - (bool(params) and params[-1].kind == inspect.Parameter.VAR_KEYWORD)
        self.__signature__ = own.replace(parameters=[*params[:at], legacy, *params[at:]])

    def __call__(self, *args: Any, past_key_values: Any = None, **kwargs: Any) -> Any:
        if past_key_values is not None and kwargs.get(RENAMED) is None:
            kwargs[RENAMED] = past_key_values
        return type(self.module).forward(self.module, *args, **kwargs)


class _LegacyCacheInputs:
    """The base model's `prepare_inputs_for_generation`, returning the running cache under the name
    peft's prefix-tuning generation reads (`past_key_values`), so peft injects the prefix once, at
    the first step, and afterwards feeds only the new token."""

    def __init__(self, prepare: Callable):
        self.prepare = prepare

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        inputs = self.prepare(*args, **kwargs)
        if RENAMED in inputs:
            inputs[LEGACY] = inputs.pop(RENAMED)
        return inputs


def restore_past_key_values(net: torch.nn.Module) -> torch.nn.Module:
    """Make a prefix-tuned peft model train and generate on transformers >= 5.24 (see the module
    docstring); every other model comes back untouched."""
    if not isinstance(net, PeftModel) or net.active_peft_config.peft_type != PeftType.PREFIX_TUNING:
        return net
    if Version(peft.__version__).release[:2] > PEFT_READS_OLD_NAME_ONLY:
        return net
    base = net.base_model
    backbone_name = getattr(net, "transformer_backbone_name", None)
    modules = [base] + ([base.get_submodule(backbone_name)] if backbone_name else [])
    for module in modules:
        if _cache_only(module.forward):
            module.forward = _LegacyCacheForward(module)
    prepare = getattr(net, "base_model_prepare_inputs_for_generation", None)
    if prepare is not None and _cache_only(prepare):
        net.base_model_prepare_inputs_for_generation = _LegacyCacheInputs(prepare)
    return net
