"""An extractive QA run (encoder, task=qa, head span) rebuilt for inference: question/context
pairs -> the answer span and its probability.

Contexts are windowed by training's own `tunelab.data.qa.windows` (same `data.max_length` and
`task.doc_stride`), each window's best span is `best_spans`, and the answer per question is
`pick_answers`: the code training's em/f1 ran, so an export answers what validation measured.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from peft import PeftModelForQuestionAnswering
from transformers import PreTrainedTokenizerBase

from tunelab import data
from tunelab.config import ConfigError
from tunelab.data.qa import QaCollator, windows
from tunelab.models.qa_metrics import FEATURE_KEYS, best_spans, pick_answers

log = logging.getLogger("tunelab")


@dataclass
class SpanReader:
    """Inputs: the run's `data.question_column` and `data.context_column` (`question` and
    `context` unless the run named its flat-file columns otherwise); outputs `answer` and `score`.

    `score` is the answer's probability in the window it was read from: start x end softmax over
    that window's CLS and context tokens (for "", the no-answer span at CLS). `allow_null` (runs
    whose training data had unanswerable questions) lets the answer be "" as in validation;
    `token_types` False feeds no segment ids, as a PEFT-wrapped QA model trained (see
    `reads_token_types`)."""

    net: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    max_length: int
    doc_stride: int
    question_column: str = "question"
    context_column: str = "context"
    allow_null: bool = False
    token_types: bool = True
    batch_size: int = 32
    model_type: str = "question-answering"
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.inputs = [self.question_column, self.context_column]

    @torch.no_grad()
    def answers(self, questions: list[str], contexts: list[str]) -> tuple[list[str], list[float]]:
        encoded, samples = windows(self.tokenizer, questions, contexts, self.max_length,
                                   self.doc_stride)
        features = [{key: encoded[key][i] for key in encoded} for i in range(len(samples))]
        collate = QaCollator(self.tokenizer)
        spans: list[list] = [[], [], [], []]   # per window: score, start char, end char, null
        probs = []
        for start in range(0, len(features), self.batch_size):
            batch = collate(features[start:start + self.batch_size])
            skipped = FEATURE_KEYS if self.token_types else (*FEATURE_KEYS, "token_type_ids")
            out = self.net(**{k: v for k, v in batch.items() if k not in skipped})
            starts, ends = out.start_logits.float(), out.end_logits.float()
            offsets = batch["offset_mapping"]
            score, first, last, null = best_spans(starts, ends, offsets)
            for column, values in zip(spans, (score, first, last, null)):
                column += values.tolist()
            readable = offsets[..., 0] >= 0
            readable[:, 0] = True                       # CLS: the no-answer position
            norm = starts.masked_fill(~readable, float("-inf")).logsumexp(-1) + \
                ends.masked_fill(~readable, float("-inf")).logsumexp(-1)
            probs += list(zip((score - norm).exp().tolist(), (null - norm).exp().tolist()))
        picked = pick_answers(list(samples), *spans, dict(enumerate(contexts)), self.allow_null)
        texts, scores = [], []
        for row in range(len(questions)):
            text, window = picked[row]
            texts.append(text)
            scores.append(probs[window][0 if text or not self.allow_null else 1])
        return texts, scores

    def predict(self, frame: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        texts, scores = self.answers([str(q) for q in frame[self.question_column]],
                                     [str(c) for c in frame[self.context_column]])
        return pd.DataFrame({"answer": texts, "score": pd.Series(scores, dtype="float64")})


def reads_token_types(net: torch.nn.Module) -> bool:
    """Whether the trained network reads token_type_ids. peft's PeftModelForQuestionAnswering
    drops them for weight adapters (LoRA, DoRA, IA3). tunelab now trains those on span QA through
    the generic PeftModel (adapters.apply), which passes them; an adapter saved before that loads
    as PeftModelForQuestionAnswering, trained and validated with every segment id 0, and its
    merged export must be fed the same to answer as it was measured."""
    return not (isinstance(net, PeftModelForQuestionAnswering)
                and not net.active_peft_config.is_prompt_learning)


def allows_null(cfg, cache_dir: Path | None = None) -> bool:
    """Whether the run's training data had unanswerable questions (SQuAD v2), which is what lets
    its validation answer "": read again from the recorded data config. Data that cannot be read
    now (a moved file, an offline Hub dataset) means spans only, with a warning."""
    try:
        raw = data.load_splits(cfg.data, cfg.task, Path(cache_dir or cfg.paths.cache_dir))
        return bool(data.task_data_for(raw, cfg.data, cfg.task, cfg.model.family).with_negatives)
    except (ConfigError, OSError, ValueError) as err:
        log.warning("could not read the run's training data again (%s): the model answers with "
                    "a span always, as for data without unanswerable questions", err)
        return False
