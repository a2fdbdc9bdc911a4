"""tunelab against a hand-written PyTorch loop and the Hugging Face Trainer, same work, one run.

    python bench/throughput.py --steps 100            # full and LoRA, three ways each
    python bench/throughput.py --steps 30 --methods lora --padding longest
    python bench/throughput.py --model smollm2-135m --steps 10 --batch 8 --max-length 128 --threads 1

Same model (MiniLM-L6 on intents, or SmolLM2-135M fine-tuned on tunelab's generated instructions,
the loss on response tokens only), data (banking77 intents when ../shared is present, else
generated), sequence length, batch, steps, learning rate and seed. Every way is timed by one clock, _common.StepTimer:
the wall time between the ends of optimizer steps, as a user waits for it (tunelab through
bench/_tunelab_timed.py; tunelab's own perf/train_samples_per_sec is shown beside it). By default
each batch is padded to its longest row, as tunelab and a user's loop do; since each way draws its
batches in its own order, the work per step then differs between ways, so padded tokens/s is
the ratio at equal work and samples/s the one a user sees. --padding max_length pads every row,
so every step does the same work. Each way runs in its own process, one after the other, so
start-up (to the end of the first optimizer step, on the wall clock and in the process's CPU
time, which a loaded machine moves far less) and peak memory are its own; rounds are interleaved
with the order rotated, and the ratios are medians of per-round ratios, because the machine is
noisy. Test accuracy (loss for the
decoder) and eval speed are on 2 test rows per intent (154; 16 instructions), not the point here. Appends the table to
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from _common import (
    AS_PLAIN_LOOP,
    append_results,
    data_files,
    instruct_files,
    median,
    small_validation,
    smollm2_float_copy,
    tunelab_metrics,
)

HERE = Path(__file__).resolve().parent
LR = {"full": 5e-5, "lora": 5e-4}
# What tunelab-train is told for each bench model: its preset, task and data columns.
TUNELAB_MODEL = {
    "minilm": lambda files: ["model=minilm", f"data.text_column={files['text']}",
                             f"data.label_column={files['label']}"],
    "smollm2-135m": lambda files: [
        "model=smollm2-135m", "task=instruct", "task.metrics=[ppl]",
        f"data.prompt_column={files['prompt']}", f"data.response_column={files['response']}",
        *([f"model.pretrained={files['model_dir']}", "model.gguf_file=null"]
          if files.get("model_dir") else [])]}


def fresh_caches(work: Path, tag: str, threads: int | None) -> dict[str, str]:
    """The environment for one process whose `datasets` cache is its own. Without it the
    baselines read their tokenized splits from ~/.cache/huggingface once any earlier process
    (this round, an earlier one, an earlier invocation) had tokenized the same files, while
    tunelab, given its own paths.cache_dir, tokenized every time. `threads` sets every way's
    torch threads alike (OMP_NUM_THREADS): on cores other jobs share, two OpenMP threads that
    spin-wait for each other run several times slower than one."""
    env = {**os.environ, "HF_DATASETS_CACHE": str(work / "hf-datasets" / tag)}
    return env if threads is None else {**env, "OMP_NUM_THREADS": str(threads)}


def run_baseline(script: str, method: str, args, files: dict, env: dict[str, str]) -> dict:
    cmd = [sys.executable, str(HERE / script), "--model", args.model, "--method", method,
           "--steps", str(args.steps),
           *(["--model-dir", files["model_dir"]] if files.get("model_dir") else []),
           "--lr", str(LR[method]), "--batch", str(args.batch), "--max-length",
           str(args.max_length), "--padding", args.padding, "--data", json.dumps(files)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    return bench_result(proc.stdout, script, proc.stderr)


def bench_result(stdout: str, script: str, stderr: str) -> dict:
    line = next((l for l in stdout.splitlines() if l.startswith("BENCH_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{script} failed:\n{stderr[-3000:]}")
    return json.loads(line.removeprefix("BENCH_RESULT "))


def run_tunelab(method: str, args, files: dict, work: Path, tag: str, rep: int,
                env: dict[str, str]) -> dict:
    """One tunelab-train run, timed by the baselines' clock; each round has its own tokenization
    cache, so every round reads and tokenizes the data as the baselines do (a user's later runs
    on the same data skip it). It trains as the baselines do (AS_PLAIN_LOOP: float32, one rate),
    whatever `hardware=cpu` and the model preset pick by default."""
    out: dict[str, str] = {}
    m = tunelab_metrics([
        *TUNELAB_MODEL[args.model](files), f"adapter={method}", f"optim.lr={LR[method]}",
        f"data.train_file={files['train']}", f"data.validation_file={files['test']}",
        f"data.test_file={files['test']}", f"data.batch_size={args.batch}",
        f"data.max_length={args.max_length}", f"data.padding={args.padding}",
        f"trainer.max_steps={args.steps}", *AS_PLAIN_LOOP,
        "trainer.max_epochs=null", f"trainer.checkpoint_every_n_steps={10 * args.steps}",
        f"paths.cache_dir={work / f'cache-{rep}-{tag}'}"], work, f"bench-{tag}", env=env,
        script=[sys.executable, str(HERE / "_tunelab_timed.py")], stdout=out)
    return {**bench_result(out["stdout"], "_tunelab_timed.py", ""),
            "own_samples_per_sec": m["perf/train_samples_per_sec"],
            "eval_samples_per_sec": m.get("perf/eval_samples_per_sec", float("nan")),
            **({"test_acc": m["test/acc"]} if "test/acc" in m else {"test_loss": m["test/loss"]}),
            "tokenize_seconds": m.get("time/tokenize_seconds")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=list(TUNELAB_MODEL), default="minilm")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--padding", choices=["max_length", "longest"], default="longest")
    p.add_argument("--methods", default="full,lora")
    p.add_argument("--repeats", type=int, default=1,
                   help="rounds of every way, interleaved with the order rotated each round; "
                        "the table shows medians, the ratios are medians of per-round ratios")
    p.add_argument("--float-copy", type=Path, default=None,
                   help="SmolLM2: every way loads a float32 copy of the GGUF made once in this "
                        "folder (seconds) instead of the GGUF itself (25-90 s a process)")
    p.add_argument("--print-only", action="store_true",
                   help="print the tables without appending them to bench/RESULTS.md")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of every way (OMP_NUM_THREADS); default: torch's own")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tunelab-bench-"))
    files = instruct_files(work / "data") if args.model != "minilm" else data_files(work / "data")
    if args.float_copy and args.model == "smollm2-135m":
        files["model_dir"] = smollm2_float_copy(args.float_copy)
    if files["source"] == "banking77":
        files["test"] = small_validation(work)
    ways = {"hand loop": lambda m, env, rep: run_baseline("hand_loop.py", m, args, files, env),
            "HF Trainer": lambda m, env, rep: run_baseline("hf_trainer.py", m, args, files, env),
            "tunelab": lambda m, env, rep: run_tunelab(m, args, files, work, m, rep, env)}
    runs: dict[tuple[str, str], list[dict]] = {}
    loads: list[float] = []
    started = time.time()
    for rep in range(args.repeats):
        order = list(ways)[rep % len(ways):] + list(ways)[:rep % len(ways)]
        for method in args.methods.split(","):
            for way in order:
                env = fresh_caches(work, f"{rep}-{method}-{way}", args.threads)
                r = ways[way](method, env, rep)
                loads.append(os.getloadavg()[0])
                runs.setdefault((method, way), []).append(r)
                print(rep, method, way, f"load {loads[-1]:.1f}", json.dumps(r), flush=True)
    print(render(runs, args, files, time.time() - started, loads))


def render(runs, args, files, seconds: float, loads: list[float]) -> str:
    numeric = lambda rs, k: all(isinstance(r.get(k), (int, float)) for r in rs)
    medians = {key: {k: median([r[k] for r in rs]) for k in rs[0] if numeric(rs, k)}
               for key, rs in runs.items()}
    methods = list(dict.fromkeys(m for m, _ in runs))
    test = "test_acc" if "test_acc" in next(iter(medians.values())) else "test_loss"
    lines = [f"## Throughput: tunelab vs hand loop vs HF Trainer ({datetime.date.today()})", "",
             (f"Machine: {platform.machine()}, {psutil.cpu_count()} cores, "
             f"{psutil.virtual_memory().total / 2**30:.0f} GiB, CPU only; model {args.model}; "
             f"data {files['source']}; "
             f"{args.steps} steps, batch {args.batch}, max_length {args.max_length}, "
             f"padding {args.padding}; torch threads {args.threads or 'default'}; "
             f"{args.repeats} interleaved round(s), medians; 1-min load "
             f"average after each process {min(loads):.1f}-{max(loads):.1f} (median "
             f"{median(loads):.1f}); took {seconds / 60:.1f} min. Every way on one clock "
             "(wall time between step ends, bench/_common.StepTimer); start-up is process start "
             "to the end of the first optimizer step, wall and CPU (user + system)."),
             f"Command: `python bench/throughput.py --model {args.model} --steps {args.steps} "
             f"--batch {args.batch} --max-length {args.max_length} --methods "
             f"{','.join(methods)} --repeats {args.repeats} --padding {args.padding}"
             + (f" --threads {args.threads}" if args.threads else "")
             + (f" --float-copy {args.float_copy}" if args.float_copy else "") + "`", "",
             ("| method | way | samples/s | tokens/s | padded tokens/s | tunelab's own samples/s "
              "| start-up s | start-up CPU s | peak RSS MB, training | peak RSS MB, process "
              f"| eval samples/s | {test} |"),
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for (m, w), r in medians.items():
        own = f"{r['own_samples_per_sec']:.1f}" if "own_samples_per_sec" in r else ""
        lines.append(f"| {m} | {w} | {r['train_samples_per_sec']:.2f} | "
                     f"{r['train_tokens_per_sec']:.0f} | "
                     f"{r['train_padded_tokens_per_sec']:.0f} | {own} | "
                     f"{r['startup_seconds']:.1f} | {r['startup_cpu_seconds']:.1f} | "
                     f"{r['train_peak_mem_mb']:.0f} | {r['peak_mem_mb']:.0f} | "
                     f"{r['eval_samples_per_sec']:.1f} | "
                     f"{r[test]:.3f} |")
    lines += ["", "Ratios tunelab / baseline, median (per round):", "",
              ("| method | vs | samples/s | padded tokens/s | start-up wall | start-up CPU |"),
              "| --- | --- | ---: | ---: | ---: | ---: |"]

    def ratio(m: str, way: str, key: str) -> str:
        per_round = [t[key] / b[key] for t, b in zip(runs[(m, "tunelab")], runs[(m, way)])]
        return f"{median(per_round):.2f}" + \
            (f" ({', '.join(f'{x:.2f}' for x in per_round)})" if len(per_round) > 1 else "")

    for m in methods:
        for way in ("hand loop", "HF Trainer"):
            lines.append(" | ".join([f"| {m}", way] + [ratio(m, way, key) for key in (
                "train_samples_per_sec", "train_padded_tokens_per_sec", "startup_seconds",
                "startup_cpu_seconds")]) + " |")
    text = "\n".join(lines) + "\n"
    return text if args.print_only else append_results(text)


if __name__ == "__main__":
    main()
