"""The LightningDataModule: cached tokenization of the raw splits, and batches padded to their
longest row (or to data.max_length), optionally grouped by length."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import datasets
import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.strategies import FSDPStrategy
from torchdata.stateful_dataloader import StatefulDataLoader
from transformers import PreTrainedTokenizerBase
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

from tunelab.config import ConfigError
from tunelab.data.sources import RawData

PADDING = ("longest", "max_length")
log = logging.getLogger(__name__)


class EpochLengthGroupedSampler(LengthGroupedSampler):
    """transformers' LengthGroupedSampler (shuffled megabatches, each sorted by length) whose order
    is a pure function of (seed, epoch), with a state StatefulDataLoader saves: the epoch here,
    the position in the epoch's order in the iterator. A run resumed mid-epoch therefore sees the
    batches the killed run had still to see (Lightning creates the resumed iterator before it
    calls set_epoch, so the epoch has to travel in the checkpoint)."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> _Position:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return _Position(get_length_grouped_indices(self.lengths, self.batch_size,
                                                    generator=generator))

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state["epoch"]


class _Position(Iterator[int]):
    """An epoch's indices and how many of them were handed out (its resumable state)."""

    def __init__(self, order: list[int]):
        self.order, self.yielded = order, 0

    def __next__(self) -> int:
        if self.yielded == len(self.order):
            raise StopIteration
        self.yielded += 1
        return self.order[self.yielded - 1]

    def state_dict(self) -> dict:
        return {"yielded": self.yielded}

    def load_state_dict(self, state: dict) -> None:
        self.yielded = state["yielded"]


class TuneDataModule(L.LightningDataModule):
    def __init__(self, raw: RawData, task_data, tokenizer: PreTrainedTokenizerBase, *,
                 max_length: int, batch_size: int, num_workers: int, cache_dir: Path,
                 padding: str = "longest", group_by_length: bool = False, seed: int = 0):
        super().__init__()
        if padding not in PADDING:
            raise ValueError(f"padding={padding!r}: one of {list(PADDING)}")
        self.raw, self.task_data, self.tokenizer = raw, task_data, tokenizer
        self.max_length, self.batch_size, self.num_workers = max_length, batch_size, num_workers
        self.padding, self.group_by_length, self.seed = padding, group_by_length, seed
        self.cache_dir = Path(cache_dir)
        self.encoded: dict[str, datasets.Dataset] = {}
        self.prepare_seconds = 0.0      # tokenizing, or reading the cached result

    def cache_key(self) -> str:
        """Same data (and rows of it), tokenizer, length and task columns -> same key ->
        tokenization is skipped."""
        tok = self.tokenizer
        spec = {"data": self.raw.digest, "task": self.task_data.fingerprint(),
                "tokenizer": [type(tok).__name__, tok.name_or_path, len(tok),
                              tok.padding_side, tok.truncation_side, tok.chat_template],
                "max_length": self.max_length}
        if self.raw.selection:     # absent when every split is its whole file: keys stay as before
            spec["rows"] = self.raw.selection
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]

    def prepare_data(self) -> None:
        if not self.encoded:
            self._encode()

    def setup(self, stage: str | None = None) -> None:
        if not self.encoded:
            self._encode()

    def _encode(self) -> None:
        """Tokenize every split once (datasets' map shows a progress bar), or read the cached
        result; a log line says which, so a big file's wait does not look frozen."""
        start = time.perf_counter()
        key = self.cache_key()
        folder = self.cache_dir / "tokenized" / key
        folder.mkdir(parents=True, exist_ok=True)
        for split, ds in self.raw.splits.items():
            cached = (folder / f"{split}.arrow").exists()
            log.info("%s %s: %d rows (%s)", "reading tokenized" if cached else "tokenizing",
                     split, len(ds), folder)
            self.encoded[split] = ds.map(
                self.task_data.encode, batched=True, remove_columns=ds.column_names,
                fn_kwargs={"tokenizer": self.tokenizer, "max_length": self.max_length},
                cache_file_name=str(folder / f"{split}.arrow"), load_from_cache_file=True,
                new_fingerprint=f"{key}-{split}", desc=f"tokenizing {split}")
        self.prepare_seconds = time.perf_counter() - start
        log.info("tokenized splits ready in %.1f s", self.prepare_seconds)

    def collator(self):
        """The task's collator; with padding=max_length every task's collator pads to a multiple
        of data.max_length, which rows truncated to data.max_length make exactly data.max_length."""
        collate = self.task_data.collator(self.tokenizer)
        if self.padding == "max_length":
            collate.pad_to_multiple_of = self.max_length
        return collate

    def _loader(self, split: str, shuffle: bool) -> StatefulDataLoader:
        """A DataLoader whose position and shuffle order travel in Lightning checkpoints, so a
        run resumed mid-epoch sees exactly the batches the killed run had still to see."""
        sampler = None
        if not shuffle and self._unpadded_eval():
            # Lightning's DistributedSampler pads an eval split to equal shares by repeating
            # rows, which the metrics then count twice; each rank scores its own rows instead.
            sampler = UnrepeatedDistributedSampler(self.encoded[split], shuffle=False,
                                                   num_replicas=self.trainer.world_size,
                                                   rank=self.trainer.global_rank)
        if shuffle and self.group_by_length:
            lengths = [len(ids) for ids in self.encoded[split]["input_ids"]]
            sampler, shuffle = EpochLengthGroupedSampler(lengths, self.batch_size, self.seed), False
        return StatefulDataLoader(self.encoded[split], batch_size=self.batch_size,
                                  shuffle=shuffle, sampler=sampler, collate_fn=self.collator(),
                                  num_workers=self.num_workers,
                                  persistent_workers=self.num_workers > 0)

    def _unpadded_eval(self) -> bool:
        """Several DDP ranks (DDP runs no collective in an eval forward, so shares may differ by
        a batch); FSDP all-gathers weights in every forward, so its ranks keep equal shares."""
        return self.trainer is not None and self.trainer.world_size > 1 and \
            not isinstance(self.trainer.strategy, FSDPStrategy)

    def train_dataloader(self) -> StatefulDataLoader:
        if self.group_by_length and self.trainer is not None and self.trainer.world_size > 1:
            # Lightning would wrap the sampler in a DistributedSampler that reshuffles its order
            raise ConfigError("data.group_by_length", True,
                              f"false with {self.trainer.world_size} processes: length grouping "
                              "runs on one device (hardware=cpu or gpu)")
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> StatefulDataLoader:
        return self._loader("validation", shuffle=False)

    def test_dataloader(self) -> StatefulDataLoader:
        return self._loader("test", shuffle=False)

    @property
    def has_test(self) -> bool:
        return "test" in self.raw.splits
