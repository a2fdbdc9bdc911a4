"""The task registry: one `TaskSpec` per task kind x head x model family, naming its transformers
class, peft task type, data class, metrics, columns, inference pipeline and generated data.

One module per kind (conf/task/ holds the presets of each kind). The registry's order is the
order heads are offered in: a family's first head for a kind is its native one, which
`task.head: null` resolves to. Heads: classifier, a linear head on the pooled output (encoders,
rnn) or the last token (decoders); span, start/end logits over the context (extractive qa);
generate, the decoder writes the answer (the label's words, a qa answer, a response); lm, the
family's LM head, which is also the head a decoder generates with, so `generate` names it too
(the decoder arm of encoder-vs-decoder).

`task.metrics` may list the metrics of its spec (`TaskSpec.metrics`); runs report those. Every part is named (`module:attribute`), never imported here, so
config/ reads the registry before torch loads and data/ reads it without importing models/.
"""

from __future__ import annotations

from typing import Any

from tunelab.tasks import classification, instruct, lm, qa
from tunelab.tasks.spec import MetricSpec, TaskKind, TaskSpec, load

_MODULES = (classification, qa, instruct, lm)
KINDS: dict[str, TaskKind] = {module.KIND.name: module.KIND for module in _MODULES}
SPECS: dict[tuple[str, str, str], TaskSpec] = {
    (spec.kind, spec.head, spec.family): spec
    for module in _MODULES for spec in module.SPECS}


def kinds() -> tuple[str, ...]:
    """Every task kind, in registry order."""
    return tuple(KINDS)


def kind(name: str) -> TaskKind:
    """What every head of task kind `name` shares (columns, generated data)."""
    return KINDS[name]


def heads(kind: str) -> dict[str, tuple[str, ...]]:
    """family -> the heads it answers `kind` with, its native one first; a family absent from the
    mapping cannot serve the kind."""
    offered: dict[str, tuple[str, ...]] = {}
    for k, head, family in SPECS:
        if k == kind:
            offered[family] = (*offered.get(family, ()), head)
    return offered


def native_head(kind: str, family: str) -> str | None:
    """The head `task.head: null` means: the family's first for the kind (None: it serves none)."""
    return next(iter(heads(kind).get(family, ())), None)


def spec_for(task: Any, family: str) -> TaskSpec:
    """The spec of a task config (`task.kind`, `task.head`; a null head is the family's native
    one) on `family`. A combination check_config rejects has none: KeyError names it."""
    key = (task.kind, task.head or native_head(task.kind, family), family)
    if key not in SPECS:
        raise KeyError(f"no task spec for kind={key[0]} head={key[1]} family={key[2]}")
    return SPECS[key]


__all__ = ["KINDS", "SPECS", "MetricSpec", "TaskKind", "TaskSpec", "heads", "kind", "kinds", "load", "native_head", "spec_for"]
