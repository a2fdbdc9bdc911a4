"""The task registry: one `TaskSpec` per task kind x head x model family, naming its transformers
class, peft task type, data class, metrics, columns, inference pipeline and generated data.

One module per kind (conf/task/ holds the presets of each kind). The registry's order is the
order heads are offered in: a family's first head for a kind is its native one, which
`task.head: null` resolves to. Every part is named (`module:attribute`), never imported here, so
config/ reads the registry before torch loads and data/ reads it without importing models/.
"""

from __future__ import annotations

from typing import Any

from tunelab.tasks import classification, instruct, lm, qa
from tunelab.tasks.spec import MetricSpec, TaskSpec, load

SPECS: dict[tuple[str, str, str], TaskSpec] = {
    (spec.kind, spec.head, spec.family): spec
    for module in (classification, qa, instruct, lm) for spec in module.SPECS}


def kinds() -> tuple[str, ...]:
    """Every task kind, in registry order."""
    return tuple(dict.fromkeys(kind for kind, _, _ in SPECS))


def heads(kind: str) -> dict[str, tuple[str, ...]]:
    """family -> the heads it answers `kind` with, its native one first; a family absent from the
    mapping cannot serve the kind."""
    offered: dict[str, tuple[str, ...]] = {}
    for k, head, family in SPECS:
        if k == kind:
            offered[family] = (*offered.get(family, ()), head)
    return offered


def spec_for(task: Any, family: str) -> TaskSpec:
    """The spec of a checked task config (`task.kind`, resolved `task.head`) on `family`. A
    combination check_config rejects has none: KeyError names it."""
    key = (task.kind, task.head, family)
    if key not in SPECS:
        raise KeyError(f"no task spec for kind={key[0]} head={key[1]} family={key[2]}")
    return SPECS[key]


__all__ = ["SPECS", "MetricSpec", "TaskSpec", "heads", "kinds", "load", "spec_for"]
