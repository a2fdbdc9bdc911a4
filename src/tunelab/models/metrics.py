"""The torchmetrics objects the task registry names (`MetricSpec.factory`), each built from the
number of labels, and the collection of the metrics a run reports; values are fractions in [0, 1]
except ppl."""

from __future__ import annotations

from collections.abc import Iterable

from omegaconf import DictConfig
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from torchmetrics.text import Perplexity

from tunelab.data.generative import IGNORE
from tunelab.models.generative import ExactMatch
from tunelab.models.qa_metrics import SquadAnswers, SquadSpans
from tunelab.tasks import TaskSpec, load


def accuracy(num_labels: int | None) -> Metric:
    return MulticlassAccuracy(num_classes=num_labels, average="micro")


def macro_f1(num_labels: int | None) -> Metric:
    return MulticlassF1Score(num_classes=num_labels, average="macro")


def perplexity(num_labels: int | None) -> Metric:
    """Over the target tokens of a split (prompt and padding tokens are IGNORE)."""
    return Perplexity(ignore_index=IGNORE)


def exact_match(num_labels: int | None) -> Metric:
    return ExactMatch()


def squad_spans(num_labels: int | None) -> Metric:
    return SquadSpans()


def squad_answers(num_labels: int | None) -> Metric:
    return SquadAnswers()


def task_metrics(spec: TaskSpec, num_labels: int | None,
                 names: Iterable[str] | None = None) -> MetricCollection:
    """The spec's metric objects that report one of `names` (None: all of them). Metrics are
    updated one by one (their inputs differ), so no compute groups."""
    wanted = set(spec.metrics if names is None else names)
    return MetricCollection({m.key: load(m.factory)(num_labels) for m in spec.metric_specs
                             if wanted & set(m.reports)}, compute_groups=False)


def reported(spec: TaskSpec, task: DictConfig) -> tuple[str, ...]:
    """The metric names a run logs: those `task.metrics` lists, else all the spec computes."""
    return tuple(task.metrics) or spec.metrics
