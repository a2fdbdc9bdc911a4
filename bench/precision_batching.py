"""Does quality hold under the two faster defaults (issue #19 item 2)? bf16 autocast and
length-grouped batches against fp32 and shuffled batches, same runs otherwise, over seeds:

    OMP_NUM_THREADS=1 python bench/precision_batching.py --steps 60 --seeds 0,1,2

Data: an SST-2-like binary sentiment set made here (1-5 sentences of film-review filler and cue
words of real sentiment, each cue agreeing with the label with probability CUE_AGREES, 5 % of
labels flipped: learnable from words, with a ceiling below 1 and lengths spread like SST-2's),
and banking77 intents (../shared). The arms are the four crossings of precision (32-true,
bf16-mixed) and batching (shuffled, length-grouped). Per data set one `tunelab-train -m` process
(MiniLM-L6, the default adapter, batch 32, max_length 64) runs every seed x arm job in turn, the
arms interleaved within each seed, so every samples/s ratio is inside one invocation. Test
accuracy on held-out rows (SST-2-like: 500 made; banking77: 10 test rows per intent), samples/s
and real tokens/s on the run's own wall clock (perf/train_*_per_sec). Prints a table per data set;
`--append` appends them to bench/RESULTS.md.

Rule for "quality holds" (written before the runs): an arm holds on a data set when its mean
paired difference from the baseline (fp32/shuffled; with `--precisions bf16-mixed`,
bf16/shuffled) over the seeds is >= -sd, sd being the standard deviation of the baseline's test
accuracy over those seeds (the seed noise of the baseline itself).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from _common import BANKING, append_results, banking_rows, small_validation, write_banking_csv

ARMS = {("32-true", False): "fp32, shuffled", ("bf16-mixed", False): "bf16, shuffled",
        ("32-true", True): "fp32, grouped", ("bf16-mixed", True): "bf16, grouped"}
CUE_AGREES = 0.8
POSITIVE = ["wonderful", "moving", "funny", "brilliant", "beautiful", "charming", "gripping",
            "superb", "touching", "delightful", "clever", "fresh", "engaging", "masterful",
            "heartfelt", "witty", "stunning", "enjoyable", "smart", "powerful"]
NEGATIVE = ["dull", "boring", "awful", "tedious", "clumsy", "bland", "lifeless", "predictable",
            "mediocre", "pointless", "terrible", "weak", "messy", "forgettable", "shallow",
            "painful", "stale", "confusing", "annoying", "flat"]
CUES = ["the acting is {w}.", "a {w} film.", "the script feels {w}.", "what a {w} story!",
        "the ending is {w}.", "{w} from start to finish.", "the soundtrack is {w}.",
        "overall it is {w}."]
FILLER = ["the film runs a little under two hours.", "it stars a cast of mostly unknown actors.",
          "the story follows a family in a small coastal town.",
          "the director adapted it from a novel published in the nineties.",
          "most of it was shot on location during one winter.",
          "it opens in cinemas across the country this friday.",
          "the lead plays a retired teacher who returns home.",
          "there is a brief romantic subplot.",
          "it is the second feature from this studio.", "the dialogue is mostly in english."]


def review(rng: random.Random) -> dict:
    """1-5 sentences, at least one of them a sentiment cue."""
    label = rng.randrange(2)
    sentences = [rng.choice(FILLER) for _ in range(rng.randint(0, 4))]
    for _ in range(rng.randint(1, 3)):
        polar = label if rng.random() < CUE_AGREES else 1 - label
        word = rng.choice(POSITIVE if polar else NEGATIVE)
        sentences.insert(rng.randint(0, len(sentences)), rng.choice(CUES).format(w=word))
    if rng.random() < 0.05:
        label = 1 - label
    return {"text": " ".join(sentences), "label": ["negative", "positive"][label]}


def sst2_like(work: Path) -> tuple[str, str, str]:
    """(train, validation, test) jsonl files of 3000 / 100 / 500 reviews, fixed seeds."""
    paths = []
    for name, size, seed in (("train", 3000, 10), ("validation", 100, 11), ("test", 500, 12)):
        rng = random.Random(seed)
        path = work / f"sst2-like-{name}.jsonl"
        path.write_text("".join(json.dumps(review(rng)) + "\n" for _ in range(size)))
        paths.append(str(path))
    return paths[0], paths[1], paths[2]


def banking(work: Path) -> tuple[str, str, str]:
    test = [r for i, r in enumerate(banking_rows("test")) if i % 40 < 10]
    return (str(BANKING / "train.csv"), small_validation(work),
            write_banking_csv(test, work / "banking-test.csv"))


class LoadSampler(threading.Thread):
    """The 1-min load average every 20 s while the runs go (a multirun is one process)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.loads: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0 if not self.loads else 20):
            self.loads.append(os.getloadavg()[0])


def multirun(name: str, files: tuple[str, str, str], label: str, args, work: Path) -> None:
    """Every seed x arm job of one data set in one `tunelab-train -m` process."""
    train, val, test = files
    seeds = args.seeds
    command = [str(Path(sys.executable).parent / "tunelab-train"), "-m", f"seed={seeds}",
               f"trainer.precision={args.precisions}", "data.group_by_length=false,true",
               "model=minilm", f"data.train_file={train}", f"data.validation_file={val}",
               f"data.test_file={test}", f"data.label_column={label}", "data.batch_size=32",
               "data.max_length=64", "data.num_workers=0", f"trainer.max_steps={args.steps}",
               "trainer.max_epochs=null", f"trainer.checkpoint_every_n_steps={args.steps}",
               f"paths.cache_dir={work / 'cache'}", f"tracking.experiment=quality-{name}",
               "tracking.on_finished=rerun", "trainer.enable_progress_bar=false",
               f"hydra.sweep.dir={work / 'multirun' / name}"]
    print(" ".join(command), flush=True)
    with (work / f"{name}.log").open("w") as log:
        subprocess.run(command, cwd=work, stdout=log, stderr=subprocess.STDOUT, check=True)


def collect(name: str, work: Path, args) -> dict[str, list[dict]]:
    """Per arm, one row per seed (seed order) from the runs' params and metrics in MLflow."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(f"quality-{name}")
    results: dict[str, list[dict]] = {arm: [] for arm in arms(args)}
    for run in client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"]):
        p, m = run.data.params, run.data.metrics
        if "test/acc" not in m:
            continue        # the sweep's parent run
        arm = ARMS[(p["hardware.resolved.precision"], p["data.group_by_length"] == "True")]
        results[arm].append({"seed": int(p["seed"]), "acc": m["test/acc"],
                             "samples_per_sec": m["perf/train_samples_per_sec"],
                             "tokens_per_sec": m["perf/train_tokens_per_sec"]})
    for rows in results.values():
        rows.sort(key=lambda r: r["seed"])
    return results


def arms(args) -> list[str]:
    """The arms this invocation runs, in job order; the first one is the baseline."""
    return [ARMS[(precision, grouped)] for precision in args.precisions.split(",")
            for grouped in (False, True)]


def render(name: str, results: dict[str, list[dict]], args, loads: list[float],
           minutes: float) -> str:
    baseline = arms(args)[0]
    base = results[baseline]
    sd_base = statistics.stdev(r["acc"] for r in base)
    lines = [f"### {name} ({datetime.date.today()})", "",
             f"`OMP_NUM_THREADS=1 python bench/precision_batching.py --steps {args.steps} "
             f"--seeds {args.seeds} --datasets {name} --precisions {args.precisions}`: "
             f"{minutes:.0f} min; 1-min load average "
             f"{min(loads):.1f}-{max(loads):.1f} (median {statistics.median(loads):.1f}).", "",
             f"| arm | test acc per seed | mean | sd | paired diff vs {baseline} (mean) "
             "| holds (>= -sd) | samples/s per seed | samples/s ratio (median) "
             "| tokens/s ratio (median) |",
             "| --- | --- | ---: | ---: | ---: | --- | --- | ---: | ---: |"]
    for arm, rows in results.items():
        accs = [r["acc"] for r in rows]
        diff = statistics.mean(r["acc"] - b["acc"] for r, b in zip(rows, base))
        speed = statistics.median(r["samples_per_sec"] / b["samples_per_sec"]
                                  for r, b in zip(rows, base))
        tokens = statistics.median(r["tokens_per_sec"] / b["tokens_per_sec"]
                                   for r, b in zip(rows, base))
        speeds = ", ".join(f"{r['samples_per_sec']:.1f}" for r in rows)
        holds = "" if arm == baseline else ("yes" if diff >= -sd_base else "no")
        lines.append(f"| {arm} | {', '.join(f'{a:.3f}' for a in accs)} | "
                     f"{statistics.mean(accs):.3f} | {statistics.stdev(accs):.3f} | "
                     f"{diff:+.3f} | {holds} | "
                     f"{speeds} | "
                     f"{speed:.2f} | {tokens:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--datasets", default="sst2-like,banking77")
    p.add_argument("--precisions", default="32-true,bf16-mixed",
                   help="trainer.precision values; the first, shuffled, is the baseline")
    p.add_argument("--work", default=None, help="folder for data, runs and logs (default: new)")
    p.add_argument("--append", action="store_true", help="append the tables to bench/RESULTS.md")
    args = p.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="tunelab-bench-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    makers = {"sst2-like": (sst2_like, "label"), "banking77": (banking, "category")}
    for name in args.datasets.split(","):
        make, label = makers[name]
        sampler = LoadSampler()
        sampler.start()
        start = datetime.datetime.now()
        multirun(name, make(work), label, args, work)
        sampler.stop.set()
        minutes = (datetime.datetime.now() - start).total_seconds() / 60
        table = render(name, collect(name, work, args), args, sampler.loads, minutes)
        print(append_results(table) if args.append else table, flush=True)


if __name__ == "__main__":
    main()
