"""Build functions from a checked config: data, tokenizer, datamodule, model, LightningModule,
and the fit sequence. `tunelab-train`, `tunelab-eval` and the tests all build through them, so
nothing re-implements the wiring.

They sit above data/, models/, adapters/ and hardware/ because a datamodule needs a tokenizer,
which models/ loads with the padding side adapters/ decides, and data/ must not import models/.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig
from transformers import PreTrainedTokenizerBase

from tunelab import adapters, data, hardware, models


@dataclass
class TaskInputs:
    """The raw splits a run reads and the task's data (its checks, label set, encoding)."""

    raw: data.RawData
    task_data: Any

    @property
    def label_names(self) -> list[str]:
        return self.task_data.label_names


def build_data(cfg: DictConfig) -> TaskInputs:
    """Read the splits and check them against the task; no tokenizer or weights load."""
    raw = data.load_splits(cfg.data, cfg.task, Path(cfg.paths.cache_dir))
    return TaskInputs(raw, data.task_data_for(raw, cfg.data, cfg.task, cfg.model.family))


def build_tokenizer(cfg: DictConfig) -> PreTrainedTokenizerBase:
    """The model's tokenizer, padding on the side the adapter needs."""
    return models.load_tokenizer(
        cfg.model, padding_side=adapters.padding_side(cfg.adapter, cfg.model, cfg.task))


def build_datamodule(cfg: DictConfig, inputs: TaskInputs, tokenizer: PreTrainedTokenizerBase,
                     batch_size: int | None = None) -> data.TuneDataModule:
    """Batches as the run trains on them; `batch_size` defaults to the per-device share of the
    global `data.batch_size`."""
    if batch_size is None:
        batch_size = hardware.per_device_batch(cfg.data.batch_size, cfg.hardware,
                                               cfg.trainer.accumulate_grad_batches)
    return data.TuneDataModule(
        inputs.raw, inputs.task_data, tokenizer, max_length=cfg.data.max_length,
        batch_size=batch_size, num_workers=cfg.data.num_workers,
        cache_dir=Path(cfg.paths.cache_dir), padding=cfg.data.padding,
        group_by_length=cfg.data.group_by_length, seed=cfg.seed)


def build_model(cfg: DictConfig, labels: list[str], tokenizer: PreTrainedTokenizerBase,
                init: Path | None = None) -> torch.nn.Module:
    """The model with its adapter applied, as the run trains it: fresh weights from the seed,
    starting from `init` (an earlier run's weights) when given."""
    net = models.load_model(cfg.model, cfg.task, labels, tokenizer, cfg.seed,
                            weights=None if init is None else str(init))
    return adapters.apply_adapter(net, cfg.adapter, cfg.model, cfg.task)


def build_module(cfg: DictConfig, net: torch.nn.Module, inputs: TaskInputs,
                 tokenizer: PreTrainedTokenizerBase) -> models.TuneModule:
    return models.TuneModule(net, cfg.task, cfg.optim, cfg.objective,
                             num_labels=len(inputs.label_names), tokenizer=tokenizer,
                             family=cfg.model.family, label_names=inputs.label_names)


def fit(trainer: L.Trainer, module: models.TuneModule, datamodule: data.TuneDataModule,
        ckpt_path: Path | None) -> float | None:
    """Fit (from `ckpt_path` when resuming), validate the final weights when the last
    validation ran at an earlier step, then test when there is a test split. Returns the final
    `val/<task.monitor>`, what sweepers optimise."""
    trainer.fit(module, datamodule, ckpt_path=ckpt_path, weights_only=True)
    if module.last_val_step != trainer.global_step:
        trainer.validate(module, datamodule, verbose=False)
    result = trainer.callback_metrics.get(module.monitor)
    if datamodule.has_test:
        trainer.test(module, datamodule, verbose=False)
    return None if result is None else float(result)


def trained_model(trainer: L.Trainer, module: models.TuneModule,
                  rebuild: Callable[[], torch.nn.Module]) -> torch.nn.Module | None:
    """The trained network with whole tensors on rank 0 (None on the others); every rank must
    call it. Under FSDP a rank's parameters are views of its shard, so the gathered weights go
    into `rebuild()`, an unsharded twin of the network (`build_model` again)."""
    whole = hardware.full_state_dict(trainer, "model")      # every rank: FSDP gathers
    if not trainer.is_global_zero:
        return None
    if whole is None:
        return module.model
    twin = rebuild()
    twin.load_state_dict(whole)
    return twin
