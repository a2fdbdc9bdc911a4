"""Fused vs torch's default (unfused) AdamW in tunelab full fine-tuning, interleaved A/B:

    python bench/optimizer.py --repeats 3 --steps 25

Same run (MiniLM-L6, adapter=full, banking77, batch 32, max_length 64) as `tunelab-train` (fused
AdamW) and as bench/_train_unfused.py (the optimizer without `fused`), alternating which goes
first; prints samples/s of each, the median ratio, and the final train/loss of both (equal up to
float rounding: fusing changes speed, not the update).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _common import BANKING, median, tunelab_metrics

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tunelab-bench-optimizer-"))
    overrides = ["model=minilm", "adapter=full", "optim.lr=5e-5",
                 f"data.train_file={BANKING / 'train.csv'}",
                 f"data.validation_file={BANKING / 'test.csv'}", "data.max_eval_samples=64",
                 "data.label_column=category", "data.batch_size=32", "data.max_length=64",
                 f"trainer.max_steps={args.steps}", "trainer.max_epochs=null",
                 f"trainer.checkpoint_every_n_steps={10 * args.steps}"]
    found: dict[str, list[float]] = {"fused": [], "unfused": []}
    for repeat in range(args.repeats):
        for way in ("fused", "unfused") if repeat % 2 == 0 else ("unfused", "fused"):
            script = None if way == "fused" else [sys.executable, str(HERE / "_train_unfused.py")]
            m = tunelab_metrics(overrides, work, f"bench-optimizer-{way}", script)
            found[way].append(m["perf/train_samples_per_sec"])
            print(f"repeat {repeat} {way}: {m['perf/train_samples_per_sec']:.2f} samples/s, "
                  f"final train/loss {m['train/loss']:.6f}", flush=True)
    ratios = [a / b for a, b in zip(found["fused"], found["unfused"])]
    print(f"fused / unfused samples/s: median of per-repeat ratios {median(ratios):.2f} "
          f"({', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
