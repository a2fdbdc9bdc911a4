"""The LightningDataModule: cached tokenization of the raw splits and dynamically padded batches."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import datasets
import lightning as L
from torchdata.stateful_dataloader import StatefulDataLoader
from transformers import PreTrainedTokenizerBase

from tunelab.data.sources import RawData


class TuneDataModule(L.LightningDataModule):
    def __init__(self, raw: RawData, task_data, tokenizer: PreTrainedTokenizerBase, *,
                 max_length: int, batch_size: int, num_workers: int, cache_dir: Path):
        super().__init__()
        self.raw, self.task_data, self.tokenizer = raw, task_data, tokenizer
        self.max_length, self.batch_size, self.num_workers = max_length, batch_size, num_workers
        self.cache_dir = Path(cache_dir)
        self.encoded: dict[str, datasets.Dataset] = {}
        self.prepare_seconds = 0.0      # tokenizing, or reading the cached result

    def cache_key(self) -> str:
        """Same data, tokenizer, length and task columns -> same key -> tokenization is skipped."""
        tok = self.tokenizer
        spec = {"data": self.raw.digest, "task": self.task_data.fingerprint(),
                "tokenizer": [type(tok).__name__, tok.name_or_path, len(tok),
                              tok.padding_side, tok.truncation_side, tok.chat_template],
                "max_length": self.max_length}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]

    def prepare_data(self) -> None:
        if not self.encoded:
            self._encode()

    def setup(self, stage: str | None = None) -> None:
        if not self.encoded:
            self._encode()

    def _encode(self) -> None:
        start = time.perf_counter()
        folder = self.cache_dir / "tokenized" / self.cache_key()
        folder.mkdir(parents=True, exist_ok=True)
        for split, ds in self.raw.splits.items():
            self.encoded[split] = ds.map(
                self.task_data.encode, batched=True, remove_columns=ds.column_names,
                fn_kwargs={"tokenizer": self.tokenizer, "max_length": self.max_length},
                cache_file_name=str(folder / f"{split}.arrow"), load_from_cache_file=True,
                new_fingerprint=f"{self.cache_key()}-{split}", desc=f"tokenizing {split}")
        self.prepare_seconds = time.perf_counter() - start

    def _loader(self, split: str, shuffle: bool) -> StatefulDataLoader:
        """A DataLoader whose position and shuffle order travel in Lightning checkpoints, so a
        run resumed mid-epoch sees exactly the batches the killed run had still to see."""
        return StatefulDataLoader(self.encoded[split], batch_size=self.batch_size,
                                  shuffle=shuffle,
                                  collate_fn=self.task_data.collator(self.tokenizer),
                                  num_workers=self.num_workers,
                                  persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> StatefulDataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> StatefulDataLoader:
        return self._loader("validation", shuffle=False)

    def test_dataloader(self) -> StatefulDataLoader:
        return self._loader("test", shuffle=False)

    @property
    def has_test(self) -> bool:
        return "test" in self.raw.splits
