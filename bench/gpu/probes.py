"""Measurements bench/gpu/check.py adds to tunelab runs from outside: GPU memory around each job
of a sweep (a Hydra callback), and each training step timed with CUDA events (a Lightning
callback that bench/gpu/timed_train.py adds to tunelab's Trainer)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.experimental.callback import Callback as HydraCallback

MB = 2**20


class JobMemory(HydraCallback):
    """Appends the CUDA allocator's state at each job's start and end to $GPU_CHECK_MEMORY: a job
    of a sweep must start from what the process held before the first one (nothing)."""

    def _record(self, moment: str, config: Any) -> None:
        cuda = torch.cuda.is_available()
        row = {"moment": moment, "job": config.hydra.job.get("num", 0),
               "allocated_mb": torch.cuda.memory_allocated() / MB if cuda else None,
               "reserved_mb": torch.cuda.memory_reserved() / MB if cuda else None}
        with Path(os.environ["GPU_CHECK_MEMORY"]).open("a") as out:
            out.write(json.dumps(row) + "\n")

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        self._record("start", config)

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        self._record("end", config)


class StepTimer(L.Callback):
    """Each training step's time from CUDA events (wall time on CPU), after `warmup` steps, and
    the allocator's peaks, written to $GPU_CHECK_TIMING at the end of fit."""

    def __init__(self, warmup: int = 5):
        self.warmup = warmup
        self.cuda = torch.cuda.is_available()
        self.steps: list[tuple[Any, Any, int]] = []
        self.start: Any = None

    def _now(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.start = self._now()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append((self.start, self._now(), int(batch["input_ids"].shape[0])))

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        timed = self.steps[self.warmup:]
        seconds = [(a.elapsed_time(b) / 1000 if self.cuda else b - a) for a, b, _ in timed]
        rows = sum(n for _, _, n in timed) * trainer.world_size
        Path(os.environ["GPU_CHECK_TIMING"]).write_text(json.dumps({
            "steps": len(timed), "step_seconds": sum(seconds) / max(1, len(seconds)),
            "samples_per_sec": rows / sum(seconds) if seconds else None,
            "max_memory_reserved_mb": torch.cuda.max_memory_reserved() / MB if self.cuda else None,
            "max_memory_allocated_mb":
                torch.cuda.max_memory_allocated() / MB if self.cuda else None}))
