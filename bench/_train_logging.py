"""`tunelab-train` with RunLogger's per-step logging timed or turned off (bench/tracking.py).

    python bench/_train_logging.py on|off TIMES_FILE [OVERRIDES...]

on: every RunLogger.log_metrics call goes to MLflow as usual, and the seconds the training loop
spent inside those calls (and in the final flush) are written to TIMES_FILE as JSON.
off: the per-step metrics are dropped before MLflow (the logger a no-op), except the end-of-fit
perf/ and time/ figures the bench reads back.
"""

from __future__ import annotations

import json
import sys
import time

from tunelab.tracking.logger import RunLogger

MODE, TIMES_FILE = sys.argv[1], sys.argv[2]
sys.argv = ["tunelab-train", *sys.argv[3:]]
spent = {"log_metrics_seconds": 0.0, "log_metrics_calls": 0, "flush_seconds": 0.0}
log_metrics, flush = RunLogger.log_metrics, RunLogger.flush


def timed_log_metrics(self, metrics, step=None):
    start = time.perf_counter()
    log_metrics(self, metrics, step)
    spent["log_metrics_seconds"] += time.perf_counter() - start
    spent["log_metrics_calls"] += 1


def timed_flush(self):
    start = time.perf_counter()
    flush(self)
    spent["flush_seconds"] += time.perf_counter() - start


def measures_only(self, metrics, step=None):
    kept = {k: v for k, v in metrics.items() if k.startswith(("perf/", "time/"))}
    if kept:
        log_metrics(self, kept, step)


if MODE == "on":
    RunLogger.log_metrics, RunLogger.flush = timed_log_metrics, timed_flush
else:
    RunLogger.log_metrics = measures_only

from tunelab.train import main

try:
    main()
finally:
    with open(TIMES_FILE, "w") as out:
        json.dump(spent, out)
