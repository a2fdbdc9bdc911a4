"""tunelab against a hand-written PyTorch loop and the Hugging Face Trainer, same work, one run.

    python bench/throughput.py --steps 100            # full and LoRA, three ways each
    python bench/throughput.py --steps 30 --methods lora

Same model (MiniLM-L6), data (banking77 intents when ../shared is present, else generated), sequence
length, batch, steps, learning rate and seed. Each way runs in its own process, one after the other,
so start-up and peak memory are its own. Ratios are taken within this one invocation, because the
machine is noisy. Appends the table to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from mlflow import MlflowClient

from _common import data_files

HERE = Path(__file__).resolve().parent
LR = {"full": 5e-5, "lora": 5e-4}


def run_baseline(script: str, method: str, args, files: dict) -> dict:
    cmd = [sys.executable, str(HERE / script), "--method", method, "--steps", str(args.steps),
           "--lr", str(LR[method]), "--batch", str(args.batch), "--max-length",
           str(args.max_length), "--data", json.dumps(files)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("BENCH_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{script} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line.removeprefix("BENCH_RESULT "))


def run_tunelab(method: str, args, files: dict, work: Path, tag: str) -> dict:
    exe = Path(sys.executable).parent / "tunelab-train"
    overrides = [
        "model=minilm", f"adapter={method}", f"optim.lr={LR[method]}",
        f"data.train_file={files['train']}", f"data.validation_file={files['test']}",
        f"data.test_file={files['test']}", f"data.text_column={files['text']}",
        f"data.label_column={files['label']}", f"data.batch_size={args.batch}",
        f"data.max_length={args.max_length}", f"trainer.max_steps={args.steps}",
        "trainer.max_epochs=null", "trainer.enable_progress_bar=false",
        f"trainer.checkpoint_every_n_steps={10 * args.steps}", "tracking.on_finished=rerun",
        f"tracking.experiment=bench-{tag}"]
    proc = subprocess.run([str(exe), *overrides], cwd=work, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"tunelab-train failed:\n{proc.stderr[-3000:]}")
    client = MlflowClient(f"sqlite:///{work / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(f"bench-{tag}")
    run = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"],
                             max_results=1)[0]
    m = run.data.metrics
    return {"train_samples_per_sec": m["perf/train_samples_per_sec"],
            "train_tokens_per_sec": m["perf/train_tokens_per_sec"],
            "startup_seconds": m["time/startup_seconds"], "peak_mem_mb": m["perf/peak_mem_mb"],
            "eval_samples_per_sec": m.get("perf/eval_samples_per_sec", float("nan")),
            "test_acc": m["test/acc"], "tokenize_seconds": m.get("time/tokenize_seconds")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--methods", default="full,lora")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tunelab-bench-"))
    files = data_files(work / "data")
    rows, started = [], time.time()
    for method in args.methods.split(","):
        results = {"hand loop": run_baseline("hand_loop.py", method, args, files),
                   "HF Trainer": run_baseline("hf_trainer.py", method, args, files),
                   "tunelab": run_tunelab(method, args, files, work, method)}
        for way, r in results.items():
            rows.append((method, way, r))
            print(method, way, json.dumps(r), flush=True)
    print(render(rows, args, files, time.time() - started))


def render(rows, args, files, seconds: float) -> str:
    by = {(m, w): r for m, w, r in rows}
    lines = [f"## Throughput: tunelab vs hand loop vs HF Trainer ({datetime.date.today()})", "",
             f"Machine: {platform.machine()}, {psutil.cpu_count()} cores, "
             f"{psutil.virtual_memory().total / 2**30:.0f} GiB, CPU only; data {files['source']}; "
             f"{args.steps} steps, batch {args.batch}, max_length {args.max_length}; "
             f"took {seconds / 60:.1f} min.",
             f"Command: `python bench/throughput.py --steps {args.steps} --methods "
             f"{','.join(sorted({m for m, _, _ in rows}))}`", "",
             "| method | way | samples/s | tokens/s | start-up s | peak MB | eval samples/s | test acc |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for m, w, r in rows:
        lines.append(f"| {m} | {w} | {r['train_samples_per_sec']:.1f} | "
                     f"{r['train_tokens_per_sec']:.0f} | {r['startup_seconds']:.1f} | "
                     f"{r['peak_mem_mb']:.0f} | {r['eval_samples_per_sec']:.1f} | "
                     f"{r['test_acc']:.3f} |")
    lines += ["", "| method | tunelab / hand samples/s (≥0.95) | tunelab / HF samples/s (≥1.0) | "
              "tunelab / hand start-up (≤1.5) |", "| --- | ---: | ---: | ---: |"]
    for m in sorted({m for m, _, _ in rows}):
        t, h, f = by[(m, "tunelab")], by[(m, "hand loop")], by[(m, "HF Trainer")]
        lines.append(f"| {m} | {t['train_samples_per_sec'] / h['train_samples_per_sec']:.2f} | "
                     f"{t['train_samples_per_sec'] / f['train_samples_per_sec']:.2f} | "
                     f"{t['startup_seconds'] / h['startup_seconds']:.2f} |")
    if ("full", "tunelab") in by and ("lora", "tunelab") in by:
        lines += ["", f"LoRA peak memory / full: "
                      f"{by[('lora', 'tunelab')]['peak_mem_mb'] / by[('full', 'tunelab')]['peak_mem_mb']:.2f}"]
    text = "\n".join(lines) + "\n"
    with (HERE / "RESULTS.md").open("a") as out:
        out.write("\n" + text)
    return text


if __name__ == "__main__":
    main()
