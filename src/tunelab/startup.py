"""This process: when it started, precisely, and its environment, read safely. Imports nothing
heavy, so a baseline script can time its own start-up the same way as tunelab does
(bench/_common.py), and every layer can use it."""

from __future__ import annotations

import os
import time


def process_start_time() -> float:
    """Unix time at which this process started, to the kernel's clock tick (10 ms) on Linux.

    psutil's `create_time` adds the start tick to the boot time from /proc/stat, which is whole
    seconds, so the ages it gives run up to a second long (0.97 s on the machine this was written
    on). Here the age comes from the boot clock itself: CLOCK_BOOTTIME now, minus the tick the
    process started at (field 22 of /proc/self/stat, counted on the same clock)."""
    try:
        with open("/proc/self/stat") as stat:
            start_tick = int(stat.read().rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - start_tick / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, AttributeError, ValueError, IndexError):   # not Linux
        import psutil

        return psutil.Process().create_time()


def environment() -> dict[str, str]:
    """A copy of the process environment, taken while other threads may change it: reading
    `os.environ` walks its keys in Python, so a variable deleted meanwhile (MLflow's telemetry
    thread drops its session id at start-up) raises KeyError or RuntimeError; the copy is retaken."""
    while True:
        try:
            return dict(os.environ)
        except (KeyError, RuntimeError):
            continue
