"""Clip-by-norm in TuneModule's hook vs Lightning's own clip path, fp32 on CPU, interleaved A/B:

    python bench/clipping.py --repeats 2 --steps 15

The hook exists so that fused AdamW clips under bf16-mixed, 16-mixed and FSDP (Lightning refuses
all three); under 32-true both paths call torch's clip_grad_norm_ on the optimizer's parameters,
so the ratio should be 1 and the final train/loss equal. Same run as bench/optimizer.py (MiniLM-L6,
adapter=full, banking77 or generated intents, batch 32, max_length 64).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _common import append_results, data_files, median, tunelab_metrics

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tunelab-bench-clipping-"))
    files = data_files(work / "data")
    overrides = ["model=minilm", "adapter=full", "optim.lr=5e-5", f"data.train_file={files['train']}",
                 f"data.validation_file={files['test']}", "data.max_eval_samples=64",
                 f"data.label_column={files['label']}", "data.batch_size=32",
                 "data.max_length=64", f"trainer.max_steps={args.steps}", "trainer.max_epochs=null",
                 f"trainer.checkpoint_every_n_steps={10 * args.steps}"]
    found: dict[str, list[float]] = {"hook": [], "lightning": []}
    for repeat in range(args.repeats):
        for way in ("hook", "lightning") if repeat % 2 == 0 else ("lightning", "hook"):
            script = None if way == "hook" else [sys.executable,
                                                 str(HERE / "_train_lightning_clip.py")]
            m = tunelab_metrics(overrides, work, f"bench-clipping-{way}", script)
            found[way].append(m["perf/train_samples_per_sec"])
            print(f"repeat {repeat} {way}: {m['perf/train_samples_per_sec']:.2f} samples/s, "
                  f"final train/loss {m['train/loss']:.6f}", flush=True)
    ratios = [a / b for a, b in zip(found["hook"], found["lightning"])]
    print(append_results(
        f"## Clipping in TuneModule's hook vs Lightning's path (fp32 CPU, {files['source']})\n\n"
        f"`python bench/clipping.py --repeats {args.repeats} --steps {args.steps}`: hook / "
        f"Lightning samples/s, median of per-repeat ratios {median(ratios):.2f} "
        f"({', '.join(f'{r:.2f}' for r in ratios)}).\n"))


if __name__ == "__main__":
    main()
