"""SQuAD exact match and F1 for QA, as fractions in [0, 1], scored by torchmetrics' SQuAD against
every gold answer of a question (the best one counts; an unanswerable question's gold is "").

- `SquadSpans` (task.head=span): a long context becomes several windows (features), so the answer
  to one question is chosen only once every window has been scored: `update` keeps each window's
  best span as tensors (so they gather across DDP ranks), `compute` picks the best window per
  question and scores its text.
- `SquadAnswers` (task.head=generate): answer texts a decoder wrote, scored as they come.

Both look up contexts and golds in `references`, bound from the data by `bind_references`.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.functional.text import squad
from torchmetrics.text import SQuAD

MAX_ANSWER_TOKENS = 30  # longer spans are never predicted (the usual SQuAD post-processing cap)


def best_spans(start_logits: torch.Tensor, end_logits: torch.Tensor, offsets: torch.Tensor,
               max_tokens: int = MAX_ANSWER_TOKENS) -> tuple[torch.Tensor, ...]:
    """Per window: the highest start+end score over spans inside the context that end after they
    start and are at most `max_tokens` long; returns (score, start char, end char, null score)."""
    inside = offsets[..., 0] >= 0
    scores = start_logits[:, :, None] + end_logits[:, None, :]
    length = torch.arange(scores.shape[1], device=scores.device)
    width = length[None, :] - length[:, None]
    valid = (width >= 0) & (width < max_tokens)
    valid = valid[None] & inside[:, :, None] & inside[:, None, :]
    scores = scores.masked_fill(~valid, float("-inf")).flatten(1)
    best, flat = scores.max(-1)
    start, end = flat // offsets.shape[1], flat % offsets.shape[1]
    rows = torch.arange(offsets.shape[0], device=offsets.device)
    null = start_logits[:, 0] + end_logits[:, 0]
    return best, offsets[rows, start, 0], offsets[rows, end, 1], null


class SquadSpans(Metric):
    """`em` and `f1` (fractions in [0, 1]) of the best span per question across its windows.

    `references` (row -> (context, gold texts)) is bound by the LightningModule from the data it
    evaluates; `allow_null` lets a question be answered with "" (SQuAD v2 data) when the no-answer
    score beats every span."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("rows", "scores", "starts", "ends", "nulls"):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self.references: dict[int, tuple[str, list[str]]] | None = None
        self.allow_null = False

    def update(self, start_logits: torch.Tensor, end_logits: torch.Tensor, offsets: torch.Tensor,
               rows: torch.Tensor) -> None:
        score, start, end, null = best_spans(start_logits.float(), end_logits.float(), offsets)
        for name, value in (("rows", rows), ("scores", score), ("starts", start), ("ends", end),
                            ("nulls", null)):
            getattr(self, name).append(value.detach())

    def predictions(self) -> dict[int, str]:
        """row -> predicted answer text, for every question at least one window was seen of."""
        if self.references is None:
            raise RuntimeError("SquadSpans.references must be bound before compute")
        cat = [_cat(getattr(self, name)).tolist()
               for name in ("rows", "scores", "starts", "ends", "nulls")]
        contexts = {row: context for row, (context, _) in self.references.items()}
        return {row: text for row, (text, _) in
                pick_answers(*cat, contexts, self.allow_null).items()}

    def compute(self) -> dict[str, torch.Tensor]:
        predicted = self.predictions()
        if not predicted:
            return {"em": torch.tensor(0.0), "f1": torch.tensor(0.0)}
        return squad_scores(predicted, {row: self.references[row][1] for row in predicted})


def pick_answers(rows: list[int], scores: list[float], starts: list[int], ends: list[int],
                 nulls: list[float], contexts: dict[int, str],
                 allow_null: bool) -> dict[int, tuple[str, int]]:
    """Per question (row), from its windows' `best_spans`: the answer text and the index of the
    window it came from. The best-scoring window wins (the first on ties); with `allow_null` the
    answer is "" when the lowest no-answer score of its windows beats that span. Training's metric
    and an exported model choose answers through this one function."""
    best: dict[int, tuple[float, int, int, int]] = {}
    null: dict[int, float] = {}
    for window, (row, score, start, end, none) in enumerate(zip(rows, scores, starts, ends,
                                                                nulls)):
        if row not in best or score > best[row][0]:
            best[row] = (score, start, end, window)
        null[row] = min(none, null.get(row, none))
    predicted = {}
    for row, (score, start, end, window) in best.items():
        answerable = score > float("-inf") and not (allow_null and null[row] > score)
        predicted[row] = (contexts[row][start:end] if answerable else "", window)
    return predicted


def squad_scores(predicted: dict[int, str], golds: dict[int, list[str]]) -> dict[str, torch.Tensor]:
    """SQuAD-normalised em and f1 as fractions; an unanswerable question's gold is ""."""
    scores = squad(*_squad_inputs(predicted, golds))
    return {"em": scores["exact_match"] / 100, "f1": scores["f1"] / 100}


def _squad_inputs(predicted: dict[int, str],
                  golds: dict[int, list[str]]) -> tuple[list[dict], list[dict]]:
    """torchmetrics' SQuAD preds and targets; an unanswerable question's gold is ""."""
    preds = [{"id": str(row), "prediction_text": text} for row, text in predicted.items()]
    target = [{"id": str(row), "answers": {"text": golds[row] or [""],
                                           "answer_start": [0] * max(1, len(golds[row]))}}
              for row in predicted]
    return preds, target


class SquadAnswers(SQuAD):
    """`em` and `f1` of generated answers, each against every gold answer of its row; the sums
    are states, so they add up across DDP ranks."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.references: dict[int, tuple[str, list[str]]] | None = None

    def update(self, answers: list[str], rows: list[int]) -> None:
        if self.references is None:
            raise RuntimeError("SquadAnswers.references must be bound before update")
        predicted = dict(zip(rows, answers))
        super().update(*_squad_inputs(predicted, {row: self.references[row][1] for row in rows}))

    def compute(self) -> dict[str, torch.Tensor]:
        if int(self.total) == 0:
            return {"em": torch.tensor(0.0), "f1": torch.tensor(0.0)}
        scores = super().compute()
        return {"em": scores["exact_match"] / 100, "f1": scores["f1"] / 100}


def _cat(values: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """States are a list before a DDP gather and one tensor after it."""
    if isinstance(values, torch.Tensor):
        return values
    return torch.cat(values) if values else torch.zeros(0)


def bind_references(metrics: MetricCollection, task_data, split: str) -> None:
    """Give the QA metrics of one split the contexts and gold answers they score against."""
    references = task_data.references(split)
    for metric in metrics.values():
        if isinstance(metric, SquadSpans | SquadAnswers) and references is not None:
            metric.references = references
        if isinstance(metric, SquadSpans):
            metric.allow_null = task_data.with_negatives


# Keys a QA batch carries for post-processing only: the model's forward never sees them.
FEATURE_KEYS = ("example_id", "offset_mapping")


def update_spans(out, batch: dict, metrics: MetricCollection, mean) -> None:
    """One evaluation batch of span QA: its loss into `mean`, each window's best span into
    `metrics`."""
    mean.update(out.loss, weight=batch["input_ids"].shape[0])
    metrics.update(out.start_logits, out.end_logits, batch["offset_mapping"], batch["example_id"])
