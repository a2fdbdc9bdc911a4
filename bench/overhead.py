"""Where a tunelab training step's time goes, by Lightning's SimpleProfiler (issue #19 item 1):

    python bench/overhead.py --steps 30 --methods full,lora

One tunelab-train run per method (MiniLM-L6, banking77, batch 32, max_length 64, dynamic padding),
through bench/_tunelab_timed.py with BENCH_PROFILE set, so every Lightning hook, each callback's
hooks and the loop's stages are timed. The table gives the mean milliseconds per training step
of each part, after the warm-up steps, against the wall time per step on the benchmarks' clock.
What the loop adds to the model's own work (forward, backward, optimizer) is everything else.
Appends the table to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from _common import WARMUP, append_results, data_files, small_validation, tunelab_metrics

HERE = Path(__file__).resolve().parent
LR = {"full": 5e-5, "lora": 5e-4}
# The model's own work, as Lightning names its stages.
MODEL_WORK = {"[Strategy]SingleDeviceStrategy.training_step": "forward + loss (training_step)",
              "[Strategy]SingleDeviceStrategy.backward": "backward",
              "[LightningModule]TuneModule.configure_gradient_clipping": "gradient clipping",
              "[LightningModule]TuneModule.lr_scheduler_step": "lr scheduler"}
FETCH = "[_TrainingEpochLoop].train_dataloader_next"
TRAIN_HOOKS = ("on_train_batch_start", "on_train_batch_end", "on_before_backward",
               "on_after_backward", "on_before_optimizer_step", "on_before_zero_grad")
INSIDE_STEP = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


def per_step(durations: list[float], steps: int) -> float:
    """Milliseconds per step of an action called once (or k times) per step: the mean over the
    steps after the warm-up, times the calls per step (means, as the wall time per step is one,
    so that the parts add up to it)."""
    calls = max(1, round(len(durations) / steps))
    kept = durations[WARMUP * calls:] or durations
    return 1000 * sum(kept) / len(kept) * calls


def profile(method: str, args, files: dict, work: Path) -> tuple[dict[str, float], float]:
    out: dict[str, str] = {}
    hooks = work / f"hooks-{method}.json"
    tunelab_metrics([
        "model=minilm", f"adapter={method}", f"optim.lr={LR[method]}",
        f"data.train_file={files['train']}", f"data.validation_file={files['test']}",
        f"data.text_column={files['text']}", f"data.label_column={files['label']}",
        f"data.batch_size={args.batch}", f"data.max_length={args.max_length}",
        f"trainer.max_steps={args.steps}", "trainer.max_epochs=null",
        f"trainer.checkpoint_every_n_steps={10 * args.steps}",
        f"paths.cache_dir={work / f'cache-{method}'}"], work, f"overhead-{method}",
        script=[sys.executable, str(HERE / "_tunelab_timed.py")],
        env={**os.environ, "BENCH_PROFILE": str(hooks)}, stdout=out)
    line = next(l for l in out["stdout"].splitlines() if l.startswith("BENCH_RESULT "))
    timed = json.loads(line.removeprefix("BENCH_RESULT "))
    wall_ms = 1000 * args.batch / timed["train_samples_per_sec"]
    recorded = json.loads(hooks.read_text())
    parts: dict[str, float] = {}
    for action, label in MODEL_WORK.items():
        if action in recorded:
            parts[label] = per_step(recorded[action], args.steps)
    callbacks: dict[str, float] = defaultdict(float)
    inside = 0.0        # callback hooks that run inside Lightning's optimizer_step closure
    for action, durations in recorded.items():
        hook = action.rsplit(".", 1)[-1]
        if action.startswith("[Callback]") and hook in TRAIN_HOOKS:
            name = action.removeprefix("[Callback]").split("{")[0].rsplit(".", 1)[0]
            callbacks[name] += per_step(durations, args.steps)
            inside += per_step(durations, args.steps) if hook in INSIDE_STEP else 0.0
    optimizer = recorded.get("[LightningModule]TuneModule.optimizer_step")
    if optimizer:       # it wraps the closure: forward, backward, clipping and their hooks
        closure = sum(v for k, v in parts.items() if k != "lr scheduler") + inside
        parts["optimizer step (AdamW)"] = per_step(optimizer, args.steps) - closure
    parts["data: next batch"] = per_step(recorded.get(FETCH, [0.0]), args.steps)
    for name, ms in sorted(callbacks.items(), key=lambda kv: -kv[1]):
        parts[f"callback {name}"] = ms
    return parts, wall_ms


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--methods", default="full,lora")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tunelab-bench-overhead-"))
    files = data_files(work / "data")
    files["test"] = small_validation(work) if files["source"] == "banking77" else files["test"]
    lines = [f"### Where a tunelab step's time goes ({datetime.date.today()})", "",
             (f"`python bench/overhead.py --steps {args.steps} --methods {args.methods}`: "
             f"MiniLM-L6, {files['source']}, batch {args.batch}, max_length {args.max_length}, "
             "dynamic padding, Lightning's SimpleProfiler; mean ms per step after the warm-up; "
             f"1-min load average at the start {os.getloadavg()[0]:.1f}."), ""]
    for method in args.methods.split(","):
        parts, wall = profile(method, args, files, work)
        counted = sum(parts.values())
        lines += [f"| {method}: part of a step | ms | share of wall |", "| --- | ---: | ---: |"]
        lines += [f"| {k} | {v:.2f} | {v / wall:.1%} |" for k, v in parts.items()]
        lines += [(f"| rest of the loop (Lightning's own bookkeeping, logging) | "
                  f"{wall - counted:.2f} | {(wall - counted) / wall:.1%} |"),
                  f"| **wall per step (StepTimer)** | {wall:.1f} | 100% |", ""]
        print("\n".join(lines[-len(parts) - 5:]), flush=True)
    print(append_results("\n".join(lines) + "\n"))


if __name__ == "__main__":
    main()
