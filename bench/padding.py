"""Real (non-pad) training tokens/s of three batchings, same model, data, steps and seed:

    python bench/padding.py                       # banking77 and a wide-spread set, 2 repeats
    python bench/padding.py --steps 30 --repeats 3 --datasets banking77

- `pad to max_length`: data.padding=max_length, every row padded to data.max_length
- `dynamic, random`: data.padding=longest (the default), shuffled batches
- `dynamic, grouped`: data.padding=longest, data.group_by_length=true

Datasets: banking77 intents (short queries, 4-98 tokens, at data.max_length=128), and a wide-spread
set built from them (1-12 banking77 queries joined, up to ~250 tokens, at data.max_length=256).
Every repeat runs the three batchings one after the other (interleaved), each in its own
`tunelab-train` process (MiniLM-L6 + LoRA); the table gives medians over repeats and the ratios of
medians. tokens/s is `perf/train_tokens_per_sec` (attention-mask tokens, after warm-up). Appends
the table to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import random
import tempfile
from pathlib import Path

from _common import (BANKING, append_results, banking_rows, median, small_validation,
                     tunelab_metrics, write_banking_csv)

HERE = Path(__file__).resolve().parent
MODES = {"pad to max_length": ["data.padding=max_length"],
         "dynamic, random": [],
         "dynamic, grouped": ["data.group_by_length=true"]}


def datasets(work: Path, seed: int = 0) -> dict[str, tuple[str, str, int]]:
    """name -> (train file, validation file, max_length); validation is 2 rows per intent."""
    rng = random.Random(seed)
    train, val = banking_rows("train"), small_validation(work)
    wide = []
    for _ in range(3000):
        parts = rng.sample(train, rng.randint(1, 12))
        wide.append({"text": " ".join(p["text"] for p in parts), "category": parts[0]["category"]})
    return {"banking77": (str(BANKING / "train.csv"), val, 128),
            "wide-spread": (write_banking_csv(wide, work / "wide.csv"), val, 256)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--datasets", default="banking77,wide-spread")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tunelab-bench-padding-"))
    found = datasets(work)
    results: dict[tuple[str, str], list[float]] = {}
    for repeat in range(args.repeats):
        for name in args.datasets.split(","):
            train, val, max_length = found[name]
            for mode, extra in MODES.items():
                overrides = ["model=minilm", "adapter=lora", f"data.train_file={train}",
                             f"data.validation_file={val}", "data.label_column=category",
                             f"data.batch_size={args.batch}", f"data.max_length={max_length}",
                             f"trainer.max_steps={args.steps}", "trainer.max_epochs=null",
                             f"trainer.checkpoint_every_n_steps={10 * args.steps}", *extra]
                m = tunelab_metrics(overrides, work, "bench-padding")
                results.setdefault((name, mode), []).append(m["perf/train_tokens_per_sec"])
                print(repeat, name, mode, f"{m['perf/train_tokens_per_sec']:.0f} tokens/s",
                      flush=True)
    print(render(results, args))


def render(results: dict[tuple[str, str], list[float]], args) -> str:
    lines = [f"### Padding and length grouping ({datetime.date.today()})", "",
             f"`python bench/padding.py --steps {args.steps} --repeats {args.repeats} "
             f"--datasets {args.datasets}` (MiniLM-L6 + LoRA, batch {args.batch}, seed 0).", "",
             "| data | batching | real tokens/s (median) | runs | / pad to max_length | "
             "/ dynamic, random |", "| --- | --- | ---: | --- | ---: | ---: |"]
    for name in args.datasets.split(","):
        base = median(results[(name, "pad to max_length")])
        dynamic = median(results[(name, "dynamic, random")])
        for mode in MODES:
            runs = results[(name, mode)]
            lines.append(f"| {name} | {mode} | {median(runs):.0f} | "
                         f"{', '.join(f'{r:.0f}' for r in runs)} | {median(runs) / base:.2f} | "
                         f"{median(runs) / dynamic:.2f} |")
    return append_results("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
