"""The registry: `adapter.method` -> the module that implements it. Adding a method is one module
here, one `conf/adapter/<name>.yaml` and one line below."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from tunelab.adapters.method import AdapterMethod
from tunelab.adapters.methods import (
    bitfit,
    dora,
    full,
    head,
    ia3,
    ln_tuning,
    loha,
    lora,
    oft,
    pissa,
    prefix,
    prompt,
    rslora,
    vera,
)

METHODS: dict[str, type[AdapterMethod]] = {
    "full": full.Full,
    "head": head.Head,
    "bitfit": bitfit.BitFit,
    "lora": lora.Lora,
    "dora": dora.Dora,
    "rslora": rslora.RsLora,
    "pissa": pissa.Pissa,
    "ia3": ia3.Ia3,
    "prefix": prefix.Prefix,
    "prompt": prompt.Prompt,
    "loha": loha.Loha,
    "oft": oft.Oft,
    "vera": vera.Vera,
    "ln-tuning": ln_tuning.LnTuning,
}


def method_of(adapter: DictConfig) -> AdapterMethod:
    """The method of a checked `adapter` config group, holding its settings."""
    return METHODS[adapter.method](**OmegaConf.to_container(adapter, resolve=True))
