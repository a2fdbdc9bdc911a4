"""Extractive QA quality at equal hyperparameters: tunelab (`task=qa adapter=full`, MiniLM) vs a
plain PyTorch + transformers loop, on the SQuAD articles in ../shared/data/squad_v1.1_part.

The split is the folder README's: the first `--train-questions` questions of articles 0-29 train,
articles 30-39 (their first `--eval-questions`) score, so no context is seen in training. Both
sides get the same model, steps, batch, rate (the span head's too), warm-up and clipping; the plain
loop truncates each question + context to `--plain-max-length` tokens (no windows) and answers
with the best span of at most 30 tokens. Both are scored by torchmetrics' SQuAD EM/F1 (in %).
Figures are appended to bench/RESULTS.md.

    OMP_NUM_THREADS=1 taskset -c 1 python bench/qa_quality.py --steps 200 --seed 0 1 2 \
        --tunelab "" --tunelab "data.max_length=256"

Each `--tunelab` value is one tunelab run: extra overrides (space-separated) on top of the shared
ones; "" is tunelab's defaults. Every run is repeated per `--seed` (one seed moves F1 by several
points at 200 steps); the table gives each seed, then the mean and range per run. The tunelab runs
stay in the printed work folder's MLflow store, for re-scoring.
"""

from __future__ import annotations

import argparse
import json
import shlex
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (records the process start first)
import torch
from _common import AS_PLAIN_LOOP, append_results, minilm_folder, seed_all, tunelab_metrics
from squad_split import write_splits

MAX_ANSWER_TOKENS = 30


def split_files(work: Path, train_questions: int, eval_questions: int) -> dict[str, Path]:
    """The README's split: train on articles 0-29, score on 30-39 (0 questions: all)."""
    return write_splits(work, {"train": (0, 30, train_questions),
                               "validation": (30, 40, eval_questions)})


def squad_rows(path: Path) -> list[dict]:
    rows = []
    for article in json.loads(path.read_text())["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                rows.append({"id": qa["id"], "question": qa["question"].strip(),
                             "context": paragraph["context"],
                             "texts": [a["text"] for a in qa["answers"]],
                             "start": qa["answers"][0]["answer_start"]})
    return rows


def encode(tok, rows: list[dict], max_length: int) -> dict:
    """Question + context truncated to max_length; labels are the first answer's tokens, or CLS
    when truncation cut it off."""
    enc = tok([r["question"] for r in rows], [r["context"] for r in rows],
              truncation="only_second", max_length=max_length, return_offsets_mapping=True)
    starts, ends = [], []
    for i, row in enumerate(rows):
        first, last = row["start"], row["start"] + len(row["texts"][0])
        ctx = [k for k, s in enumerate(enc.sequence_ids(i)) if s == 1]
        offs = enc["offset_mapping"][i]
        if offs[ctx[-1]][1] < last:
            starts.append(0)
            ends.append(0)
            continue
        starts.append(next(k for k in ctx if offs[k][1] > first))
        ends.append(next(k for k in reversed(ctx) if offs[k][0] < last))
    enc["start_positions"], enc["end_positions"] = starts, ends
    return enc


def plain_loop(files: dict[str, Path], args, seed: int) -> dict[str, float]:
    """What a user writes by hand: AdamW + linear warm-up/decay, clip 1.0, shuffled batches."""
    from torch.utils.data import DataLoader
    from torchmetrics.functional.text import squad
    from transformers import (
        AutoModelForQuestionAnswering,
        AutoTokenizer,
        DataCollatorWithPadding,
        get_linear_schedule_with_warmup,
    )

    seed_all(seed)
    folder = minilm_folder()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForQuestionAnswering.from_pretrained(folder)
    train_rows, eval_rows = squad_rows(files["train"]), squad_rows(files["validation"])
    train = encode(tok, train_rows, args.plain_max_length)
    features = [{k: train[k][i] for k in ("input_ids", "token_type_ids", "attention_mask",
                                           "start_positions", "end_positions")}
                for i in range(len(train_rows))]
    pad = DataCollatorWithPadding(tok)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "norm" not in n.lower()]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2 or "norm" in n.lower()]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                               {"params": rest, "weight_decay": 0.0}], lr=args.lr)
    sched = get_linear_schedule_with_warmup(optim, int(0.06 * args.steps), args.steps)
    loader = DataLoader(features, batch_size=args.batch, shuffle=True, collate_fn=pad,
                        generator=torch.Generator().manual_seed(seed))
    model.train()
    step, t0 = 0, time.perf_counter()
    while step < args.steps:
        for batch in loader:
            model(**batch).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            optim.zero_grad()
            step += 1
            if step == args.steps:
                break
    seconds = time.perf_counter() - t0
    model.eval()
    enc = encode(tok, eval_rows, args.plain_max_length)
    preds = []
    with torch.no_grad():
        for lo in range(0, len(eval_rows), 64):
            idx = range(lo, min(lo + 64, len(eval_rows)))
            batch = pad([{k: enc[k][i] for k in ("input_ids", "token_type_ids",
                                                  "attention_mask")} for i in idx])
            out = model(**batch)
            for j, i in enumerate(idx):
                preds.append(best_text(out.start_logits[j], out.end_logits[j],
                                       enc.sequence_ids(i), enc["offset_mapping"][i],
                                       eval_rows[i]["context"]))
    scores = squad([{"id": r["id"], "prediction_text": p} for r, p in zip(eval_rows, preds)],
                   [{"id": r["id"], "answers": {"text": r["texts"],
                                                "answer_start": [0] * len(r["texts"])}}
                    for r in eval_rows])
    return {"f1": float(scores["f1"]), "em": float(scores["exact_match"]),
            "train_seconds": seconds}


def best_text(start: torch.Tensor, end: torch.Tensor, sequence_ids: list, offsets: list,
              context: str) -> str:
    """The highest start+end span inside the context, at most MAX_ANSWER_TOKENS long."""
    ctx = torch.tensor([s == 1 for s in sequence_ids])
    n = len(sequence_ids)
    scores = start[:n, None] + end[None, :n]
    i = torch.arange(n)
    ok = (i[None] >= i[:, None]) & (i[None] - i[:, None] < MAX_ANSWER_TOKENS)
    ok &= ctx[:, None] & ctx[None, :]
    flat = int(scores.masked_fill(~ok, float("-inf")).argmax())
    return context[offsets[flat // n][0]:offsets[flat % n][1]]


def tunelab_run(files: dict[str, Path], args, extra: str, work: Path,
                seed: int) -> dict[str, float]:
    overrides = ["model=minilm", "task=qa", "adapter=full", *AS_PLAIN_LOOP, f"optim.lr={args.lr}",
                 f"data.batch_size={args.batch}", f"trainer.max_steps={args.steps}",
                 f"trainer.val_check_interval={args.steps}", "trainer.max_epochs=100",
                 f"data.train_file={files['train']}", f"data.validation_file={files['validation']}",
                 f"seed={seed}", *shlex.split(extra)]
    metrics = tunelab_metrics(overrides, work, "qa-quality")
    # the loop's own wall time, as the plain loop's figure (no start-up, no validation)
    return {"f1": 100 * metrics["val/f1"], "em": 100 * metrics["val/em"],
            "train_seconds": metrics["time/train_wall_seconds"]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, nargs="+", default=[0],
                   help="one round of every run per seed (at 200 steps the seed alone moves F1 "
                        "by several points, so compare means over seeds)")
    p.add_argument("--train-questions", type=int, default=2000)
    p.add_argument("--eval-questions", type=int, default=0, help="0: every question")
    p.add_argument("--plain-max-length", type=int, default=256)
    p.add_argument("--tunelab", action="append", default=None,
                   help='extra tunelab overrides, one run each ("" = defaults)')
    p.add_argument("--skip-tunelab", action="store_true", help="the plain loop only")
    p.add_argument("--skip-plain", action="store_true")
    p.add_argument("--no-record", action="store_true", help="print, do not append to RESULTS.md")
    args = p.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="qa-quality-"))
    files = split_files(work, args.train_questions, args.eval_questions)
    print(f"split files and tunelab's MLflow store: {work}", flush=True)
    runs: dict[str, list[tuple[int, dict[str, float]]]] = {}
    for seed in args.seed:
        for extra in [] if args.skip_tunelab else args.tunelab or [""]:
            name = f"tunelab {extra or '(defaults)'}"
            runs.setdefault(name, []).append((seed, tunelab_run(files, args, extra, work, seed)))
            print(name, runs[name][-1], flush=True)
        if not args.skip_plain:
            name = f"plain loop (truncate {args.plain_max_length}, no windows)"
            runs.setdefault(name, []).append((seed, plain_loop(files, args, seed)))
            print(name, runs[name][-1], flush=True)
    n_eval = len(squad_rows(files["validation"]))
    text = (
        f"## Extractive QA quality, tunelab vs plain loop ({time.strftime('%Y-%m-%d')})\n\n"
        f"MiniLM-L6 full fine-tune, SQuAD v1.1 part: {args.train_questions} train questions "
        f"(articles 0-29), {n_eval} scored (articles 30-39); {args.steps} steps x {args.batch}, "
        f"lr {args.lr}, warm-up 6%, clip 1.0, seeds {' '.join(map(str, args.seed))}, "
        "1 CPU thread.\n\n" + results_table(runs) + "\n")
    print(text if args.no_record else append_results(text))


def results_table(runs: dict[str, list[tuple[int, dict[str, float]]]]) -> str:
    """One row per run and seed, then per run the mean and the range (max - min) over seeds."""
    lines = ["| run | seed | F1 | EM | seconds |", "| --- | --- | --- | --- | --- |"]
    for name, results in runs.items():
        lines += [f"| {name} | {seed} | {r['f1']:.1f} | {r['em']:.1f} | {r['train_seconds']:.0f} |"
                  for seed, r in results]
    if any(len(results) > 1 for results in runs.values()):
        lines += ["", "| run | seeds | mean F1 | F1 range | mean EM | EM range |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for name, results in runs.items():
            f1, em = ([r[k] for _, r in results] for k in ("f1", "em"))
            lines.append(f"| {name} | {len(results)} | {sum(f1) / len(f1):.1f} | "
                         f"{max(f1) - min(f1):.1f} | {sum(em) / len(em):.1f} | "
                         f"{max(em) - min(em):.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
