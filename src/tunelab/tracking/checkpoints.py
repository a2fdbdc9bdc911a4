"""Resume points: small Lightning checkpoints every `trainer.checkpoint_every_n_steps`, and a
resumed run that continues exactly where the killed one stopped.

A checkpoint holds what resume needs and nothing it can rebuild: for PEFT methods the frozen
base is recreated bit for bit from the recorded config and seed (`models.load_model` draws fresh
weights from the seed alone), so only the trainable parameters, buffers, optimizer, scheduler,
loop and dataloader state are written. Mid-epoch resume is exact because the train dataloader is
stateful (its sampler position travels in the checkpoint) and every training batch draws its
dropout masks from a seed of (seed, epoch, batch) instead of a global stream that validation and
dataloader creation also consume.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from tunelab.hardware.launch import RESUME_ENV


class TrainableStateOnly(Callback):
    """Drops frozen parameters from the checkpoint's state_dict and lets the module load the
    remainder non-strictly, so a LoRA checkpoint is kilobytes, not the whole base."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.strict_loading = False

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        frozen = frozen_parameter_names(pl_module)
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                    if k not in frozen}


class StreamedCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint straight into a hidden file beside its target, then renames it into
    place: as atomic as Lightning's own save (a kill mid-write leaves the previous checkpoint
    whole), without Lightning's in-memory copy. Lightning's `_atomic_save` serialises the whole
    checkpoint into a BytesIO first, so a full fine-tune's peak memory carried one more copy of
    the weights and both Adam moments (bench/RESULTS.md). Remote URLs keep Lightning's way.

    With `hold=True` the written file waits beside its target until `commit()`: see
    CommitWhenRecorded for why."""

    def __init__(self, hold: bool = False):
        super().__init__()
        self.hold = hold
        self.held: tuple[Path, Path] | None = None

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        try:
            torch.save(checkpoint, partial)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        self.held = (partial, target)
        if not self.hold:
            self.commit()

    def commit(self) -> None:
        """Make the last written checkpoint the one on disk (nothing held: nothing to do)."""
        if self.held is not None:
            os.replace(*self.held)
            self.held = None


class CommitWhenRecorded(Callback):
    """Makes a checkpoint the resume point only once every metric up to its step is recorded.

    Lightning saves a step's checkpoint in `on_train_batch_end`, before it hands that step's
    metrics to the logger, and MLflow writes them from a pool of threads. A process killed just
    after the save resumed past a step whose metrics never landed, and the resumed run could not
    record them again. So the checkpoint is held back (StreamedCheckpointIO(hold=True)) and
    committed at the next batch, once the loggers have written everything logged so far. A
    process that dies before that resumes from the previous checkpoint and replays the step.
    After an exception nothing is committed: the step's metrics may not have been logged."""

    def __init__(self, io: StreamedCheckpointIO):
        self.io = io

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._commit(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._commit(trainer)

    def _commit(self, trainer: L.Trainer) -> None:
        if self.io.held is None:
            return
        for logger in trainer.loggers:
            logger.save()
        self.io.commit()


class StepSeed(Callback):
    """Seeds torch before each training batch from (seed, epoch, batch index).

    Dropout then depends on the position in training alone: a resumed run draws the same masks
    as an uninterrupted one, although it created its dataloaders at a different moment. The rank
    is part of the seed, so the ranks of a DDP run draw different masks, as one process does
    across the examples of its batch; data order comes from the samplers, one seed for all."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        seed = batch_seed(self.seed, trainer.current_epoch, batch_idx, trainer.global_rank)
        # Only the generators this rank draws from: torch.manual_seed also queues a lazy seed for
        # every accelerator torch knows (CUDA, XPU, MTIA) with a formatted stack trace, 1-2 ms
        # a step under Lightning's call stack on a machine that has none of them.
        torch.default_generator.manual_seed(seed)
        if pl_module.device.type != "cpu":
            torch.get_device_module(pl_module.device).manual_seed(seed)


def batch_seed(seed: int, epoch: int, batch_idx: int, rank: int = 0) -> int:
    """A 63-bit seed stable across processes (Python's own str hash is salted per process).
    Rank 0 keeps the single-process seed, so one device draws what it always drew."""
    key = f"{seed}/{epoch}/{batch_idx}" + (f"/{rank}" if rank else "")
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def frozen_parameter_names(module: torch.nn.Module) -> set[str]:
    """State-dict keys of parameters that do not train (tied names included)."""
    return {name for name, param in module.named_parameters(remove_duplicate=False)
            if not param.requires_grad}


def resume_points(folder: Path, every_n_steps: int,
                  seed: int) -> tuple[list[Callback], StreamedCheckpointIO]:
    """The callbacks and checkpoint IO plugin for `last.ckpt` in `folder` every `every_n_steps`
    optimizer steps, small and exactly resumable (save_top_k=0: one file, rewritten atomically by
    StreamedCheckpointIO and committed once its step is recorded, is all resume reads)."""
    latest = ModelCheckpoint(dirpath=folder, every_n_train_steps=every_n_steps, save_last=True,
                             save_top_k=0)
    io = StreamedCheckpointIO(hold=True)
    return [latest, TrainableStateOnly(), StepSeed(seed), CommitWhenRecorded(io)], io


@dataclass
class ResumePlan:
    """One run's checkpoint folder across its life: the callbacks and IO plugin that write its
    resume points, the checkpoint the fit starts from (`start`: a resumed run's last one, else
    none, with a new run's stale folder cleared), and its removal once the run has finished
    (`finish`: the trained weights are an MLflow artifact by then; nothing resumes a finished
    run)."""

    folder: Path
    resumed: bool
    every_n_steps: int
    seed: int
    callbacks: list[Callback] = field(init=False)
    io: StreamedCheckpointIO = field(init=False)

    def __post_init__(self) -> None:
        self.callbacks, self.io = resume_points(self.folder, self.every_n_steps, self.seed)

    def start(self, trainer: L.Trainer) -> Path | None:
        return resume_point(trainer, self.folder, self.resumed)

    def finish(self, trainer: L.Trainer) -> None:
        if trainer.is_global_zero:
            shutil.rmtree(self.folder, ignore_errors=True)


def last_checkpoint(folder: Path) -> Path | None:
    path = Path(folder) / "last.ckpt"
    return path if path.is_file() else None


def resume_point(trainer: L.Trainer, folder: Path, resumed: bool) -> Path | None:
    """The checkpoint every rank resumes from: rank 0's decision, never a rank's own look at the
    folder. Rank 0 clears a new run's stale checkpoint and keeps a resumed run's; ranks it starts
    itself are told by environment; ranks started by torchrun or Slurm, which reach here while
    rank 0 may be deleting the file, join the process group early and take rank 0's broadcast."""
    world = trainer.num_devices * trainer.num_nodes
    if world == 1 or not trainer.strategy.cluster_environment.creates_processes_externally:
        path = _decide(folder, resumed)
        os.environ[RESUME_ENV] = "" if path is None else str(path)
        return path
    if RESUME_ENV in os.environ:
        told = os.environ[RESUME_ENV]
        return _visible(Path(told), trainer) if told else None
    trainer.strategy.setup_environment()          # Lightning skips its own init when done here
    decided = _decide(folder, resumed) if trainer.is_global_zero else None
    told = trainer.strategy.broadcast(None if decided is None else str(decided), src=0)
    return None if told is None else _visible(Path(told), trainer)


def _decide(folder: Path, resumed: bool) -> Path | None:
    if not resumed:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return last_checkpoint(folder)


def _visible(path: Path, trainer: L.Trainer) -> Path:
    """Every rank reads the checkpoint rank 0 wrote: on several nodes, a shared folder."""
    if not path.is_file():
        raise FileNotFoundError(
            f"rank {trainer.global_rank} cannot see {path}, which rank 0 resumes from: with "
            f"{trainer.num_nodes} node(s), paths.checkpoint_dir must be a folder every node shares")
    return path
