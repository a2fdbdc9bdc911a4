"""The registry: `adapter.method` -> the module that implements it. Adding a method is one module
here, one `conf/adapter/<name>.yaml` and one line below.

A method's module is imported when the method is first looked up, not with the registry: every
peft method's module imports peft (0.3 s and more), which a full, head or bitfit run never uses.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping

from omegaconf import DictConfig, OmegaConf

from tunelab.adapters.method import AdapterMethod
from tunelab.tasks.spec import load


class _Registry(MutableMapping[str, type[AdapterMethod]]):
    """Method name -> its class, given as the class or as `module:Class` under this package and
    imported on first lookup; membership and the list of names import nothing."""

    def __init__(self, homes: dict[str, type[AdapterMethod] | str]):
        self._homes = homes

    def __getitem__(self, name: str) -> type[AdapterMethod]:
        home = self._homes[name]
        if isinstance(home, str):
            home = self._homes[name] = load(f"{__name__}.{home}")
        return home

    def __setitem__(self, name: str, cls: type[AdapterMethod]) -> None:
        self._homes[name] = cls

    def __delitem__(self, name: str) -> None:
        del self._homes[name]

    def __contains__(self, name: object) -> bool:
        return name in self._homes

    def __iter__(self) -> Iterator[str]:
        return iter(self._homes)

    def __len__(self) -> int:
        return len(self._homes)


METHODS: MutableMapping[str, type[AdapterMethod]] = _Registry({
    "full": "full:Full",
    "head": "head:Head",
    "bitfit": "bitfit:BitFit",
    "lora": "lora:Lora",
    "dora": "dora:Dora",
    "rslora": "rslora:RsLora",
    "pissa": "pissa:Pissa",
    "ia3": "ia3:Ia3",
    "prefix": "prefix:Prefix",
    "prompt": "prompt:Prompt",
    "loha": "loha:Loha",
    "oft": "oft:Oft",
    "vera": "vera:Vera",
    "ln-tuning": "ln_tuning:LnTuning",
})


def method_of(adapter: DictConfig) -> AdapterMethod:
    """The method of a checked `adapter` config group, holding its settings."""
    return METHODS[adapter.method](**OmegaConf.to_container(adapter, resolve=True))
