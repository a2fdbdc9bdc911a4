"""Every adapter on MiniLM-L6 over banking77 intents (77 classes), at one fixed step budget.

    python bench/adapters.py                         # all eight methods, 80 steps, batch 32, 64 tokens
    python bench/adapters.py --methods lora,ia3 --steps 150

Each method runs `tunelab-train` in its own process (so peak memory is its own) with its preset's
learning rate (conf/adapter/<method>.yaml), and the numbers are read back from the run's MLflow
record: test accuracy, trainable %, adapter MB, training samples/s and peak memory. The default
80 steps of batch 32 (a quarter epoch) is what 2 shared CPU cores afford, not convergence: the
slow-starting methods (prompt, prefix) look worse than with a longer budget. To keep evaluation
cheap and unbiased (the csv files are sorted by intent), validation and test are seeded stratified
samples: 5 and 10 rows per intent. Samples/s are noisy when other work shares the cores. Appends the
table to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import platform
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
from mlflow import MlflowClient

from _common import BANKING, append_results

METHODS = ["full", "lora", "dora", "prefix", "prompt", "ia3", "bitfit", "head"]
COLUMNS = [("test acc", "test/acc", "{:.3f}"), ("trainable %", "params/trainable_pct", "{:.3f}"),
           ("adapter MB", "params/adapter_mb", "{:.2f}"),
           ("train samples/s", "perf/train_samples_per_sec", "{:.1f}"),
           ("peak mem MB", "perf/peak_mem_mb", "{:.0f}"), ("fit s", "time/fit_seconds", "{:.0f}")]


def _by_intent(path: Path) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            groups.setdefault(row["category"], []).append(row)
    return groups


def _write(rows: list[dict], path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "category"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def split_files(work: Path, val_per_intent: int = 5, test_per_intent: int = 10,
                seed: int = 0) -> dict[str, Path]:
    """train.csv minus a stratified validation sample, and a stratified sample of test.csv."""
    rng = random.Random(seed)
    train, val, test = [], [], []
    for rows in _by_intent(BANKING / "train.csv").values():
        rng.shuffle(rows)
        val += rows[:val_per_intent]
        train += rows[val_per_intent:]
    for rows in _by_intent(BANKING / "test.csv").values():
        test += rng.sample(rows, min(test_per_intent, len(rows)))
    rng.shuffle(train)
    return {"train": _write(train, work / "train.csv"), "validation": _write(val, work / "val.csv"),
            "test": _write(test, work / "test.csv")}


def overrides(method: str, args: argparse.Namespace, files: dict[str, Path]) -> list[str]:
    return ["model=minilm", f"adapter={method}", f"data.train_file={files['train']}",
            f"data.validation_file={files['validation']}", f"data.test_file={files['test']}",
            "data.label_column=category",
            f"data.batch_size={args.batch}", f"data.max_length={args.max_length}",
            f"trainer.max_steps={args.steps}", "trainer.max_epochs=null",
            "trainer.enable_progress_bar=false", f"trainer.checkpoint_every_n_steps={10 * args.steps}",
            "tracking.on_finished=rerun", "tracking.experiment=bench-adapters", f"seed={args.seed}"]


def run(method: str, args: argparse.Namespace, work: Path,
        files: dict[str, Path]) -> dict[str, float]:
    """One `tunelab-train` process; its metrics as MLflow recorded them."""
    exe = Path(sys.executable).parent / "tunelab-train"
    proc = subprocess.run([str(exe), *overrides(method, args, files)], cwd=work, capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"adapter={method} failed:\n{proc.stderr[-3000:]}")
    client = MlflowClient(f"sqlite:///{work / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("bench-adapters")
    [latest] = client.search_runs([exp.experiment_id], f"params.`adapter.name` = '{method}'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
    return latest.data.metrics


def table(results: dict[str, dict[str, float]]) -> str:
    head = "| adapter | " + " | ".join(name for name, _, _ in COLUMNS) + " |"
    rows = [head, "|" + " --- |" * (len(COLUMNS) + 1)]
    for method, metrics in results.items():
        cells = [fmt.format(metrics[key]) if key in metrics else "n/a" for _, key, fmt in COLUMNS]
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (BANKING / "train.csv").is_file():
        sys.exit(f"banking77 not found under {BANKING}")
    results = {}
    with tempfile.TemporaryDirectory() as work:
        files = split_files(Path(work), seed=args.seed)
        for method in args.methods.split(","):
            results[method] = run(method, args, Path(work), files)
            print(method, {k: round(v, 4) for k, v in results[method].items()
                           if k in {key for _, key, _ in COLUMNS}}, flush=True)
    command = "python bench/adapters.py " + " ".join(sys.argv[1:])
    section = (f"\n## Adapters on MiniLM-L6, banking77 intents ({datetime.date.today()})\n\n"
               f"`{command.strip()}`: {args.steps} steps, batch {args.batch}, max_length "
               f"{args.max_length}, seed {args.seed}, each method at its preset's learning rate; "
               "test = 10 rows per intent of test.csv, validation = 5 per intent held out of "
               "train.csv, both seeded. Machine: "
               f"{platform.machine()}, {psutil.cpu_count()} CPU cores shared with other work "
               "(samples/s are noisy), torch CPU. One fixed budget, not convergence.\n\n" + table(results) + "\n")
    print(append_results(section))


if __name__ == "__main__":
    main()
