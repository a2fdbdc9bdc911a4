"""Extractive span QA (task.head=span): SQuAD-format rows, windows over long contexts, start/end
labels, collation.

Every split is first normalised to SQuAD's flat form (`id`, `question`, `context`, `answers` with
`text` and `answer_start` lists, plus the row index the metric groups windows by), whether it came
as a nested SQuAD v1.1/v2 JSON file (flattened as it was read, `squad_rows`), a flat file with an
answer-text column, or generated rows.
Generative QA (task.head=generate, `data.generative.GenerateQaData`) starts from the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import datasets
import torch
from omegaconf import DictConfig
from transformers import BatchEncoding, PreTrainedTokenizerBase

from tunelab.config import ConfigError
from tunelab.data.sources import SPLIT_KEYS, RawData

NO_OFFSET = (-1, -1)  # offset of a token outside the context: never part of a predicted span


class QaData:
    """Checks every split's questions, contexts and answers, and windows contexts into features."""

    kind = "qa"

    def __init__(self, raw: RawData, data: DictConfig, task: DictConfig):
        self.data, self.task = data, task
        self.columns = {"question": data.question_column, "context": data.context_column,
                        "answers": data.answer_column}
        for split, ds in raw.splits.items():
            raw.splits[split] = datasets.Dataset.from_list(self._normalise(raw, split, ds))
        self.splits = raw.splits
        self.with_negatives = any(not a["text"] for a in raw.splits["train"]["answers"])

    def _normalise(self, raw: RawData, split: str, ds: datasets.Dataset) -> list[dict]:
        where = raw.files.get(split, raw.source)
        for key, column in (("data.question_column", self.columns["question"]),
                            ("data.context_column", self.columns["context"]),
                            ("data.answer_column", self.columns["answers"])):
            if column not in ds.column_names:
                raise ConfigError(key, column, f"a column of the {split} split ({where}); it "
                                  f"has {ds.column_names} (a SQuAD JSON file needs no columns)")
        rows = [{"id": str(row.get("id", i)), "question": row[self.columns["question"]],
                 "context": row[self.columns["context"]],
                 "answers": row[self.columns["answers"]]} for i, row in enumerate(ds)]
        key = SPLIT_KEYS[split if split in raw.files else "train"] if raw.files else \
            "data.answer_column"
        return [{**row, "row": i, "answers": _locate(row, i, key, where, split)}
                for i, row in enumerate(rows)]

    @property
    def label_names(self) -> list[str]:
        """QA has no label set: its targets are spans of each context."""
        return []

    def fingerprint(self) -> dict:
        return {"kind": self.kind, "columns": self.columns, "doc_stride": self.task.doc_stride}

    def references(self, split: str) -> dict[int, tuple[str, list[str]]] | None:
        """row -> (context, gold answer texts): what the metric needs to turn spans into text."""
        if split not in self.splits:
            return None
        ds = self.splits[split]
        return {row: (context, answers["text"])
                for row, context, answers in zip(ds["row"], ds["context"], ds["answers"])}

    def encode(self, batch: dict, tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict:
        """One feature per window of `max_length` tokens; windows overlap by `task.doc_stride`
        tokens, and a window that does not hold the whole answer points at CLS (index 0)."""
        encoded, samples = windows(tokenizer, batch["question"], batch["context"], max_length,
                                   self.task.doc_stride)
        starts, ends, rows = [], [], []
        for window, sample in zip(encoded["offset_mapping"], samples):
            start, end = _span_labels(window, batch["answers"][sample])
            starts.append(start)
            ends.append(end)
            rows.append(batch["row"][sample])
        encoded.update(start_positions=starts, end_positions=ends, example_id=rows)
        return encoded

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> QaCollator:
        return QaCollator(tokenizer)


def windows(tokenizer: PreTrainedTokenizerBase, questions: list[str], contexts: list[str],
            max_length: int, doc_stride: int) -> tuple[BatchEncoding, list[int]]:
    """Question/context pairs as windows of `max_length` tokens overlapping by `doc_stride`: the
    encoding (one row per window, `offset_mapping` holding character offsets in the context and
    NO_OFFSET elsewhere) and the index of the pair each window came from. Training and an exported
    model window contexts through this one function."""
    if not tokenizer.is_fast:
        raise ConfigError("model.tokenizer", tokenizer.name_or_path,
                          "a fast tokenizer (task=qa maps tokens back to characters)")
    questions = [q.strip() for q in questions]
    right = tokenizer.padding_side == "right"
    pair = (questions, contexts) if right else (contexts, questions)
    try:
        encoded = tokenizer(*pair, truncation="only_second" if right else "only_first",
                            max_length=max_length, stride=doc_stride,
                            return_overflowing_tokens=True, return_offsets_mapping=True)
    except Exception as err:  # noqa: BLE001 - tokenizers reports a too-long question this way
        raise ConfigError("task.doc_stride", doc_stride,
                          f"a stride that leaves room for context in data.max_length="
                          f"{max_length} tokens after the question ({err})") from None
    context_id = 1 if right else 0
    samples = encoded.pop("overflow_to_sample_mapping")
    encoded["offset_mapping"] = [
        [tuple(o) if sequence == context_id else NO_OFFSET
         for sequence, o in zip(encoded.sequence_ids(i), encoded["offset_mapping"][i])]
        for i in range(len(samples))]
    return encoded, samples


@dataclass
class QaCollator:
    """Pads token columns with the tokenizer and offsets with NO_OFFSET on the same side."""

    tokenizer: PreTrainedTokenizerBase
    pad_to_multiple_of: int | None = None    # data.padding=max_length sets data.max_length

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        offsets = [f["offset_mapping"] for f in features]
        batch = self.tokenizer.pad([{k: v for k, v in f.items() if k != "offset_mapping"}
                                    for f in features], return_tensors="pt",
                                   pad_to_multiple_of=self.pad_to_multiple_of)
        width = batch["input_ids"].shape[1]
        padded = torch.full((len(features), width, 2), NO_OFFSET[0], dtype=torch.long)
        for i, window in enumerate(offsets):
            if self.tokenizer.padding_side == "right":
                padded[i, :len(window)] = torch.tensor(window)
            else:
                padded[i, width - len(window):] = torch.tensor(window)
        batch["offset_mapping"] = padded
        return batch


def _span_labels(window: list[tuple[int, int]], answers: dict) -> tuple[int, int]:
    """Token start/end of the first gold answer in this window, or (0, 0) when it is not wholly
    inside (the no-answer convention of SQuAD v2 models)."""
    if not answers["text"]:
        return 0, 0
    first = answers["answer_start"][0]
    last = first + len(answers["text"][0])
    inside = [k for k, (a, b) in enumerate(window) if (a, b) != NO_OFFSET]
    if not inside or window[inside[0]][0] > first or window[inside[-1]][1] < last:
        return 0, 0
    start = next(k for k in inside if window[k][1] > first)
    end = next(k for k in reversed(inside) if window[k][0] < last)
    return start, end


def squad_rows(ds: datasets.Dataset) -> list[dict]:
    """Flatten SQuAD v1.1/v2 nesting (data -> paragraphs -> qas) into one row per question: the
    qa kind's `unnest` (tunelab.tasks.qa), applied as a file is read (data.sources.unnest)."""
    rows = []
    for record in ds:
        for article in record["data"] or []:
            for paragraph in article.get("paragraphs") or []:
                for qa in paragraph.get("qas") or []:
                    answers = [] if qa.get("is_impossible") else (qa.get("answers") or [])
                    rows.append({"id": str(qa["id"]), "question": qa["question"],
                                 "context": paragraph["context"],
                                 "answers": {"text": [a["text"] for a in answers],
                                             "answer_start": [a["answer_start"] for a in answers]}})
    return rows


def _locate(row: dict, index: int, key: str, where: str, split: str) -> dict[str, list[Any]]:
    """SQuAD `answers` for a row whose answer is a SQuAD dict, a text, or empty (no answer);
    a start that does not match is searched for, and a text absent from the context is an error."""
    context, answer = row["context"], row["answers"]
    if not isinstance(context, str) or not isinstance(row["question"], str):
        raise ConfigError(key, where, f"row {index} of the {split} split needs a question and a "
                                      "context as text")
    if answer is None or answer == "":
        return {"text": [], "answer_start": []}
    if isinstance(answer, str):
        texts, given = [answer], [None]
    elif isinstance(answer, dict) and "text" in answer:
        texts = list(answer["text"])
        given = list(answer.get("answer_start") or [None] * len(texts))
    else:
        raise ConfigError(key, where, f"row {index} of the {split} split: answer {answer!r} is "
                                      "neither a text nor SQuAD answers {text, answer_start}")
    starts = []
    for text, start in zip(texts, given):
        if start is None or context[start:start + len(text)] != text:
            start = context.find(text)
        if start < 0 or not text:
            raise ConfigError(key, where, f"row {index} (id {row['id']}) of the {split} split: "
                                          f"answer {text!r} is not in its context")
        starts.append(start)
    return {"text": texts, "answer_start": starts}
