"""Sweep throughput (issue #19 item 5): jobs per hour of short tiny runs inside one multirun
against the same jobs as separate `tunelab-train` processes:

    python bench/sweep_throughput.py --jobs 6 --steps 20 --rounds 3 --threads 1

Each job is a 20-step tiny-bert run on tunelab's generated sentiment data (seed = job number, so
every job is its own config and none is skipped as finished). A round runs the jobs once as
`tunelab-train -m seed=0,...,N-1` (Hydra's basic launcher: one process, job after job) and once
as N processes one after the other, the order alternating between rounds; each way gets its own
MLflow store and cache folder per round, so both tokenize and create their store alike. The
figure is jobs/hour of each way and their ratio per round (median over rounds). Appends the table
to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import append_results, median

TINY = ["model=tiny-bert", "trainer.max_epochs=null", "trainer.enable_progress_bar=false",
        "data.synthetic.train_size=640", "data.synthetic.eval_size=64", "data.batch_size=32",
        "data.max_length=32", "tracking.on_finished=rerun"]


def run(args: list[str], cwd: Path, env: dict[str, str]) -> None:
    proc = subprocess.run([str(Path(sys.executable).parent / "tunelab-train"), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"tunelab-train {' '.join(args)} failed:\n{proc.stderr[-3000:]}")


def timed(way: str, jobs: int, steps: int, work: Path, env: dict[str, str]) -> float:
    """Seconds for `jobs` runs done `way` (multirun or processes), in a fresh folder."""
    work.mkdir(parents=True)
    common = [*TINY, f"trainer.max_steps={steps}", f"paths.cache_dir={work / 'cache'}"]
    start = time.perf_counter()
    if way == "one multirun":
        run(["-m", *common, "seed=" + ",".join(str(j) for j in range(jobs))], work, env)
    else:
        for job in range(jobs):
            run([*common, f"seed={job}"], work, env)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=6)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of every process")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tunelab-bench-sweep-"))
    env = {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
    ways = ["one multirun", "separate processes"]
    seconds: dict[str, list[float]] = {w: [] for w in ways}
    loads: list[float] = []
    for r in range(args.rounds):
        for way in ways if r % 2 == 0 else ways[::-1]:
            seconds[way].append(timed(way, args.jobs, args.steps, root / f"{r}-{way[:3]}", env))
            loads.append(os.getloadavg()[0])
            print(r, way, f"{seconds[way][-1]:.1f} s, load {loads[-1]:.1f}", flush=True)
    per_hour = {w: [3600 * args.jobs / s for s in secs] for w, secs in seconds.items()}
    ratios = [m / s for m, s in zip(per_hour["one multirun"], per_hour["separate processes"])]
    lines = [f"### Sweep throughput: one multirun vs separate processes ({datetime.date.today()})",
             "", f"`python bench/sweep_throughput.py --jobs {args.jobs} --steps {args.steps} "
             f"--rounds {args.rounds}" + (f" --threads {args.threads}" if args.threads else "") +
             f"` (tiny-bert, generated sentiment); 1-min load average {min(loads):.1f}-"
             f"{max(loads):.1f}.", "", "| way | jobs/hour per round | median | s per job (median) |",
             "| --- | --- | ---: | ---: |"]
    for way in ways:
        lines.append(f"| {way} | {', '.join(f'{x:.0f}' for x in per_hour[way])} | "
                     f"{median(per_hour[way]):.0f} | {median(seconds[way]) / args.jobs:.1f} |")
    lines += ["", (f"Multirun / separate processes, jobs/hour: {median(ratios):.2f} "
                  f"({', '.join(f'{x:.2f}' for x in ratios)}).")]
    print(append_results("\n".join(lines) + "\n"))


if __name__ == "__main__":
    main()
