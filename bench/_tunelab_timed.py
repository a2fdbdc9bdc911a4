"""`tunelab-train` timed by the benchmarks' own clock: the same StepTimer the hand loop and the HF
Trainer use, ended by a callback after every optimizer step, so all three ways are timed alike
(tunelab's own perf/* figures are read from MLflow beside it). Prints BENCH_RESULT as they do.

    python bench/_tunelab_timed.py <tunelab-train overrides>
    BENCH_PROFILE=hooks.json python bench/_tunelab_timed.py ...   # + Lightning's SimpleProfiler

With BENCH_PROFILE, every hook, callback and loop stage the fit runs is timed by Lightning's
SimpleProfiler and its durations are written to that file (bench/overhead.py reads them).
"""

from __future__ import annotations

import _common  # noqa: F401  (records the process start first)

import json
import os
from pathlib import Path

import lightning as L
from lightning.pytorch.profilers import SimpleProfiler

from _common import StepTimer, report

TIMER = StepTimer()
PROFILE = os.environ.get("BENCH_PROFILE")
PROFILERS: list[SimpleProfiler] = []


class Timing(L.Callback):
    """Last of the user callbacks (Lightning keeps checkpointing after it): the step ends here."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        TIMER.step(batch)


def _timed_trainer() -> None:
    """Every Trainer tunelab builds gets the Timing callback after its own."""
    build = L.Trainer.__init__

    def init(self, *args, callbacks=None, **kwargs):
        if PROFILE and not PROFILERS:           # the fit's Trainer (tunelab builds one)
            PROFILERS.append(SimpleProfiler())
            kwargs["profiler"] = PROFILERS[0]
        build(self, *args, callbacks=[*(callbacks or []), Timing()], **kwargs)

    L.Trainer.__init__ = init


if __name__ == "__main__":
    _timed_trainer()
    from tunelab.train import main

    main()
    report(TIMER.result())
    if PROFILERS:
        Path(PROFILE).write_text(json.dumps(dict(PROFILERS[0].recorded_durations)))
