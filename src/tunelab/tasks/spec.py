"""What one task kind x head x model family is made of, as names: the registry is importable
from config/ (before torch loads) and from every layer without import cycles, and each layer
resolves the names it needs (`load`) when it builds that part."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

# transformers Auto classes, by the name `getattr(transformers, name)` finds.
SEQUENCE_CLASSIFICATION = "AutoModelForSequenceClassification"
QUESTION_ANSWERING = "AutoModelForQuestionAnswering"
MASKED_LM = "AutoModelForMaskedLM"
CAUSAL_LM = "AutoModelForCausalLM"


@dataclass(frozen=True)
class MetricSpec:
    """One torchmetrics object of a task: its key in the MetricCollection, the `val/<name>` values
    it reports (SQuAD's computes em and f1 together), and the factory (`module:callable`, called
    with the number of labels) that builds it."""

    key: str
    reports: tuple[str, ...]
    factory: str
    generated: bool = False     # scored on greedy answers (task.generate_eval_samples of them)


@dataclass(frozen=True)
class TaskKind:
    """What every head of a task kind shares: the columns its rows have, and its generated data."""

    name: str
    # canonical row key (what data/synthetic yields) -> the data config key naming its column
    columns: dict[str, str]
    optional_columns: dict[str, str] = field(default_factory=dict)   # read when configured
    generators: tuple[str, ...] = ()    # data/synthetic generators (by task name) of its rows
    # a top-level key under which a file may nest rows in the kind's native format (SQuAD JSON's
    # `data`); such a file needs no configured columns, and `unnest` ("module:function", rows ->
    # one dict per example under the canonical keys) flattens it as it is read
    nested: str | None = None
    unnest: str | None = None

    def column_keys(self, data: Any) -> dict[str, str]:
        """Config key -> configured column name, for every column the kind reads from `data`."""
        keys = [*self.columns.values(), *(k for k in self.optional_columns.values() if data[k])]
        return {f"data.{key}": data[key] for key in keys}

    def is_nested(self, data: Any, present: list[str]) -> bool:
        """A file with columns `present` nests its rows (and has none of the configured columns)."""
        wanted = self.column_keys(data).values()
        return self.nested is not None and self.nested in present and not set(wanted) & set(present)

    def file_columns(self, data: Any, present: list[str]) -> dict[str, str]:
        """`column_keys` a file with columns `present` must have (none when it nests its rows)."""
        return {} if self.is_nested(data, present) else self.column_keys(data)

    def column_map(self, data: Any) -> dict[str, str]:
        """Canonical row key -> the configured column name (generated data is written so)."""
        return {name: data[key] for name, key in self.columns.items()}


@dataclass(frozen=True)
class TaskSpec:
    """One task kind answered with one head on one model family (`tunelab.tasks.spec_for`)."""

    kind: str
    head: str
    family: str
    auto_class: str                 # transformers Auto class carrying the head
    peft_task_type: str | None      # a peft TaskType value (peft accepts the string); None: none
    data: str                       # `module:Class` of the task's data (tokenization, collation)
    metric_specs: tuple[MetricSpec, ...]
    # inference (deploy/): the pipeline (`module:Class`, None: the run writes nothing servable),
    # its input columns (data config keys, or a literal column name), output column, model type
    pipeline: str | None = None
    inputs: tuple[str, ...] = ()
    output: str | None = None
    model_type: str | None = None
    generative: bool = False        # the model answers by writing (or scoring) tokens
    prompt: str | None = None       # generative: how a row becomes a prompt: chat, qa, label, text
    windows: bool = False           # long contexts become windows (task.doc_stride)
    null_answers: bool = False      # may predict "no answer" when training had unanswerable rows
    self_supervised: bool = False   # the task loss is the self-supervised objective itself
    # evaluation scores rows as read (a classifier reads its two columns; no task data is built,
    # so an eval file need not hold two classes); else rows go through the task's data class
    raw_rows: bool = False

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metric names the task computes: what `task.metrics` may list."""
        return tuple(name for metric in self.metric_specs for name in metric.reports)

    @property
    def masked_lm(self) -> bool:
        """An encoder's lm: labels are masked tokens drawn at the forward."""
        return self.auto_class == MASKED_LM

    @property
    def new_head(self) -> bool:
        """Whether the head is a layer added to the pretrained body and initialised fresh (a
        classifier or a span head), rather than the model's own LM head: what `optim.head_lr`
        rates."""
        return self.auto_class in (SEQUENCE_CLASSIFICATION, QUESTION_ANSWERING)

    @property
    def labelled_head(self) -> bool:
        """Whether the head is sized by the label set (num_labels, id2label)."""
        return self.auto_class == SEQUENCE_CLASSIFICATION

    def generated_metrics(self) -> tuple[str, ...]:
        """Metric names scored on greedy answers (slow; only the first rows of a split)."""
        return tuple(name for metric in self.metric_specs if metric.generated
                     for name in metric.reports)

    def input_columns(self, data: Any) -> list[str]:
        """The pipeline's input columns: the configured name of each data key that is set (an
        unset text_pair_column is no input), literal names as they are."""
        return [data.get(key, key) for key in self.inputs if data.get(key, key)]


def load(ref: str) -> Any:
    """`module:attribute` -> the object, imported on first use."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)
