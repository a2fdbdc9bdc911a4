"""Every adapter on MiniLM-L6 over banking77 intents (77 classes), at one fixed step budget.

    python bench/adapters.py                         # all eight methods, 150 steps, batch 32, 64 tokens
    python bench/adapters.py --methods lora,ia3 --steps 50

Each method runs `tunelab-train` in its own process (so peak memory is its own) with its preset's
learning rate (conf/adapter/<method>.yaml), and the numbers are read back from the run's MLflow
record: test accuracy, trainable %, adapter MB, training samples/s and peak memory. 150 steps of
batch 32 is about half an epoch: a budget 2 shared CPU cores afford, not convergence, so the
slow-starting methods (prompt, prefix) look worse than they would with a longer budget. Samples/s
are noisy when other work shares the cores. Appends the table to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
from mlflow import MlflowClient

HERE = Path(__file__).resolve().parent
BANKING = HERE.parents[1] / "shared" / "data" / "banking77"
METHODS = ["full", "lora", "dora", "prefix", "prompt", "ia3", "bitfit", "head"]
COLUMNS = [("test acc", "test/acc", "{:.3f}"), ("trainable %", "params/trainable_pct", "{:.3f}"),
           ("adapter MB", "params/adapter_mb", "{:.2f}"),
           ("train samples/s", "perf/train_samples_per_sec", "{:.1f}"),
           ("peak mem MB", "perf/peak_mem_mb", "{:.0f}"), ("fit s", "time/fit_seconds", "{:.0f}")]


def overrides(method: str, args: argparse.Namespace) -> list[str]:
    return ["model=minilm", f"adapter={method}", f"data.train_file={BANKING / 'train.csv'}",
            f"data.test_file={BANKING / 'test.csv'}", "data.label_column=category",
            f"data.batch_size={args.batch}", f"data.max_length={args.max_length}",
            f"trainer.max_steps={args.steps}", "trainer.max_epochs=null",
            "trainer.enable_progress_bar=false", f"trainer.checkpoint_every_n_steps={10 * args.steps}",
            "tracking.on_finished=rerun", "tracking.experiment=bench-adapters", f"seed={args.seed}"]


def run(method: str, args: argparse.Namespace, work: Path) -> dict[str, float]:
    """One `tunelab-train` process; its metrics as MLflow recorded them."""
    exe = Path(sys.executable).parent / "tunelab-train"
    proc = subprocess.run([str(exe), *overrides(method, args)], cwd=work, capture_output=True,
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
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (BANKING / "train.csv").is_file():
        sys.exit(f"banking77 not found under {BANKING}")
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for method in args.methods.split(","):
            results[method] = run(method, args, Path(work))
            print(method, {k: round(v, 4) for k, v in results[method].items()
                           if k in {key for _, key, _ in COLUMNS}}, flush=True)
    command = "python bench/adapters.py " + " ".join(sys.argv[1:])
    section = (f"\n## Adapters on MiniLM-L6, banking77 intents ({datetime.date.today()})\n\n"
               f"`{command.strip()}`: {args.steps} steps, batch {args.batch}, max_length "
               f"{args.max_length}, seed {args.seed}, each method at its preset's learning rate; "
               f"test = banking77 test.csv (3080), validation = 10% of train held out. Machine: "
               f"{platform.machine()}, {psutil.cpu_count()} CPU cores shared with other work "
               "(samples/s are noisy), torch CPU. One fixed budget (~half an epoch), not "
               "convergence.\n\n" + table(results) + "\n")
    with (HERE / "RESULTS.md").open("a") as f:
        f.write(section)
    print(section)


if __name__ == "__main__":
    main()
