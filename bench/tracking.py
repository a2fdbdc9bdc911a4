"""What tracking costs a run: MLflow logging per step, and tokenization on a second run.

    python bench/tracking.py                        # 4 repeats of each, 60 steps
    python bench/tracking.py --repeats 6 --steps 40 --skip-tokenize

1. Tokenization cache: `time/tokenize_seconds` (TuneDataModule.prepare_seconds) of a first run
   on a fresh cache and of a second run on the same data and tokenizer, per pair of runs.
2. Logging overhead: the same run (MiniLM-L6 + LoRA on banking77, default
   trainer.log_every_n_steps=10) with RunLogger on (timed) and with its per-step logging a no-op
   (bench/_train_logging.py), interleaved on/off, median step time (batch / samples/s after
   warm-up) of each; plus the seconds the loop spent inside RunLogger.log_metrics, as a share of
   the measured training time.

Appends the table to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

from _common import BANKING, append_results, median, small_validation, tunelab_metrics

HERE = Path(__file__).resolve().parent


def data_overrides(work: Path, batch: int) -> list[str]:
    return ["model=minilm", "adapter=lora", f"data.train_file={BANKING / 'train.csv'}",
            f"data.validation_file={small_validation(work)}", "data.label_column=category",
            f"data.batch_size={batch}", "data.max_length=64", "trainer.max_epochs=null"]


def tokenize_pairs(work: Path, base: list[str], pairs: int) -> list[tuple[float, float]]:
    found = []
    for pair in range(pairs):
        overrides = [*base, "trainer.max_steps=2", f"paths.cache_dir={work / f'cache-{pair}'}"]
        first = tunelab_metrics(overrides, work, "bench-tokenize")["time/tokenize_seconds"]
        second = tunelab_metrics(overrides, work, "bench-tokenize")["time/tokenize_seconds"]
        found.append((first, second))
        print(f"tokenize pair {pair}: first {first:.3f}s second {second:.3f}s", flush=True)
    return found


def logging_runs(work: Path, base: list[str], steps: int, batch: int, repeats: int) -> dict:
    results = {"on": [], "off": []}
    overrides = [*base, f"trainer.max_steps={steps}",
                 f"trainer.checkpoint_every_n_steps={10 * steps}",
                 f"paths.cache_dir={work / 'cache-0'}"]
    for repeat in range(repeats):
        for mode in ("on", "off") if repeat % 2 == 0 else ("off", "on"):
            times = work / f"times-{mode}-{repeat}.json"
            script = [sys.executable, str(HERE / "_train_logging.py"), mode, str(times)]
            m = tunelab_metrics(overrides, work, f"bench-logging-{mode}", script)
            spent = json.loads(times.read_text())
            step = batch / m["perf/train_samples_per_sec"]
            measured = (steps - 3) * step       # CostMeter measures after 3 warm-up batches
            results[mode].append({"step": step, "spent": spent, "share": (
                spent["log_metrics_seconds"] / measured)})
            print(f"logging {mode} repeat {repeat}: step {step * 1000:.0f} ms, in log_metrics "
                  f"{spent['log_metrics_seconds'] * 1000:.1f} ms over "
                  f"{spent['log_metrics_calls']} calls, flush {spent['flush_seconds'] * 1000:.1f} ms",
                  flush=True)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--skip-tokenize", action="store_true")
    p.add_argument("--skip-logging", action="store_true")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tunelab-bench-tracking-"))
    base = data_overrides(work, args.batch)
    pairs = [] if args.skip_tokenize else tokenize_pairs(work, base, args.pairs)
    logging = None if args.skip_logging else logging_runs(work, base, args.steps, args.batch,
                                                          args.repeats)
    print(render(pairs, logging, args))


def render(pairs, logging, args) -> str:
    lines = [f"### Tracking costs ({datetime.date.today()})", "",
             f"`python bench/tracking.py --steps {args.steps} --repeats {args.repeats} "
             f"--pairs {args.pairs}` (MiniLM-L6 + LoRA, banking77, batch {args.batch}, "
             "max_length 64).", ""]
    if pairs:
        ratios = [second / first for first, second in pairs]
        lines += ["| tokenization | first run s | second run s | second / first |",
                  "| --- | ---: | ---: | ---: |"]
        lines += [f"| pair {i} | {a:.3f} | {b:.3f} | {b / a:.3f} |" for i, (a, b) in enumerate(pairs)]
        lines += [f"| median | {median([a for a, _ in pairs]):.3f} | "
                  f"{median([b for _, b in pairs]):.3f} | {median(ratios):.3f} |", ""]
    if logging:
        on = [r["step"] for r in logging["on"]]
        off = [r["step"] for r in logging["off"]]
        pair_ratios = [a / b for a, b in zip(on, off)]
        share = [r["share"] for r in logging["on"]]
        lines += ["| logging | step ms per run | median step ms |", "| --- | --- | ---: |",
                  f"| RunLogger on | {', '.join(f'{s * 1000:.0f}' for s in on)} | "
                  f"{median(on) * 1000:.0f} |",
                  f"| RunLogger no-op | {', '.join(f'{s * 1000:.0f}' for s in off)} | "
                  f"{median(off) * 1000:.0f} |", "",
                  f"Step time on / off: median of per-repeat ratios "
                  f"{median(pair_ratios):.3f} ({', '.join(f'{r:.3f}' for r in pair_ratios)}); "
                  f"ratio of medians {median(on) / median(off):.3f}. Time inside "
                  f"RunLogger.log_metrics as a share of training time: median "
                  f"{100 * median(share):.3f}% ({', '.join(f'{100 * s:.3f}%' for s in share)})."]
    return append_results("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
