"""Does quality hold under the two faster defaults (issue #19 item 2)? bf16 autocast and
length-grouped batches against fp32 and shuffled batches, same runs otherwise, over seeds:

    python bench/precision_batching.py --steps 100 --seeds 0,1,2 --threads 1

Data: an SST-2-like binary sentiment set made here (tunelab's generated sentences, 1-4 joined so
lengths spread as in SST-2; the label is the last sentence's, which the generator's own rule
makes the sentence's), and banking77 intents (../shared). Each run is one `tunelab-train` process
(MiniLM-L6, the default adapter, batch 32, max_length 64), runs one at a time, arms interleaved
within each seed. Test accuracy on held-out rows (SST-2-like: 800 generated; banking77: 10 test
rows per intent), samples/s on the run's own wall clock. Appends a table per data set to
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import statistics
import tempfile
from pathlib import Path

from _common import (
    BANKING,
    append_results,
    banking_rows,
    small_validation,
    tunelab_metrics,
    write_banking_csv,
)

ARMS = {"fp32, random": ["trainer.precision=32-true", "data.group_by_length=false"],
        "bf16, random": ["trainer.precision=bf16-mixed", "data.group_by_length=false"],
        "fp32, grouped": ["trainer.precision=32-true", "data.group_by_length=true"]}


def sst2_like(work: Path) -> tuple[str, str, str]:
    """(train, validation, test) jsonl files: 4000 / 200 / 800 rows of 1-4 joined sentences."""
    from tunelab.data import synthetic

    def rows(size: int, seed: int) -> list[dict]:
        rng = random.Random(seed)
        pool = synthetic.generate("sentiment", 4 * size, seed)
        out = []
        for i in range(size):
            parts = pool[4 * i:4 * i + rng.randint(1, 4)]
            out.append({"text": " ".join(p["text"] for p in parts), "label": parts[-1]["label"]})
        return out

    paths = []
    for name, size, seed in (("train", 4000, 10), ("validation", 200, 11), ("test", 800, 12)):
        path = work / f"sst2-like-{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows(size, seed)))
        paths.append(str(path))
    return paths[0], paths[1], paths[2]


def banking(work: Path) -> tuple[str, str, str]:
    test = [r for i, r in enumerate(banking_rows("test")) if i % 40 < 10]
    return (str(BANKING / "train.csv"), small_validation(work),
            write_banking_csv(test, work / "banking-test.csv"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--datasets", default="sst2-like,banking77")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of every run")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tunelab-bench-quality-"))
    env = {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
    makers = {"sst2-like": (sst2_like, "label"), "banking77": (banking, "category")}
    for name in args.datasets.split(","):
        make, label = makers[name]
        train, val, test = make(work)
        results: dict[str, list[dict]] = {arm: [] for arm in ARMS}
        for seed in [int(s) for s in args.seeds.split(",")]:
            for arm, extra in ARMS.items():
                m = tunelab_metrics([
                    "model=minilm", f"data.train_file={train}", f"data.validation_file={val}",
                    f"data.test_file={test}", f"data.label_column={label}", "data.batch_size=32",
                    "data.max_length=64", f"trainer.max_steps={args.steps}",
                    "trainer.max_epochs=null", f"trainer.checkpoint_every_n_steps={args.steps}",
                    f"seed={seed}", f"paths.cache_dir={work / 'cache'}", *extra],
                    work, f"quality-{name}", env=env)
                row = {"seed": seed, "acc": m["test/acc"],
                       "samples_per_sec": m["perf/train_samples_per_sec"],
                       "load": os.getloadavg()[0]}
                results[arm].append(row)
                print(name, arm, json.dumps(row), flush=True)
        print(append_results(render(name, results, args)))


def render(name: str, results: dict[str, list[dict]], args) -> str:
    base = results["fp32, random"]
    loads = [r["load"] for rows in results.values() for r in rows]
    lines = [f"### Quality under bf16 and length grouping: {name} ({datetime.date.today()})", "",
             f"`python bench/precision_batching.py --steps {args.steps} --seeds {args.seeds} "
             f"--datasets {name}" + (f" --threads {args.threads}" if args.threads else "") +
             "` (MiniLM-L6, default adapter, batch 32, max_length 64); 1-min load average "
             f"{min(loads):.1f}-{max(loads):.1f}.", "",
             ("| arm | test acc per seed | mean | sd | paired diff vs fp32, random (mean) "
             "| samples/s per seed |"), "| --- | --- | ---: | ---: | ---: | --- |"]
    for arm, rows in results.items():
        accs = [r["acc"] for r in rows]
        diffs = [r["acc"] - b["acc"] for r, b in zip(rows, base)]
        speeds = ", ".join(f"{r['samples_per_sec']:.1f}" for r in rows)
        sd = statistics.stdev(accs) if len(accs) > 1 else float("nan")
        lines.append(f"| {arm} | {', '.join(f'{a:.3f}' for a in accs)} | "
                     f"{statistics.mean(accs):.3f} | {sd:.3f} | "
                     f"{statistics.mean(diffs):+.3f} | "
                     f"{speeds} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
