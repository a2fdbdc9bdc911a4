"""Text (or text-pair) classification: column checks, the label map, tokenization, collation."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from tunelab.config import ConfigError
from tunelab.data.sources import SPLIT_KEYS, RawData, check_columns


class ClassificationData:
    """Checks the columns of every split and fixes the label set from the train split."""

    kind = "classification"

    def __init__(self, raw: RawData, data: DictConfig, task: DictConfig):
        self.data, self.task = data, task
        self.text_column, self.pair_column = data.text_column, data.text_pair_column
        self.label_column = data.label_column
        wanted = {"data.text_column": self.text_column, "data.label_column": self.label_column}
        if self.pair_column:
            wanted["data.text_pair_column"] = self.pair_column
        check_columns(raw, wanted)
        train_labels = raw.splits["train"].unique(self.label_column)
        if None in train_labels:
            raise ConfigError("data.label_column", self.label_column,
                              f"a label on every train row ({raw.files.get('train', raw.source)})")
        self.labels: list[Any] = sorted(train_labels, key=lambda v: (str(type(v)), v))
        if len(self.labels) < 2:
            raise ConfigError("data.label_column", self.label_column,
                              f"at least 2 classes in the train split; found {self.labels}")
        self.label_ids = {label: i for i, label in enumerate(self.labels)}
        for split in ("validation", "test"):
            if split not in raw.splits:
                continue
            for row, label in enumerate(raw.splits[split][self.label_column]):
                if label not in self.label_ids:
                    where = raw.files.get(split, raw.source)
                    raise ConfigError(SPLIT_KEYS[split] if raw.files else "data.label_column",
                                      where, f"row {row} of the {split} split has label {label!r}, "
                                             f"unseen in train; train labels: {self.labels}")

    @property
    def label_names(self) -> list[str]:
        return [str(label) for label in self.labels]

    def fingerprint(self) -> dict:
        return {"kind": self.kind, "text": self.text_column, "pair": self.pair_column,
                "label": self.label_column, "labels": self.label_names}

    def encode(self, batch: dict, tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict:
        pair = batch[self.pair_column] if self.pair_column else None
        encoded = tokenizer(batch[self.text_column], pair, truncation=True, max_length=max_length)
        encoded["labels"] = [self.label_ids[label] for label in batch[self.label_column]]
        return encoded

    def collator(self, tokenizer: PreTrainedTokenizerBase):
        return DataCollatorWithPadding(tokenizer)
