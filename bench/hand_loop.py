"""The baseline a user would write by hand: a plain PyTorch loop over MiniLM (+ peft LoRA)."""

from __future__ import annotations

import _common  # noqa: F401  (records the process start first)
import argparse
import json
import time

import torch
from datasets import load_dataset
from peft import LoraConfig, TaskType, get_peft_model
from torch.utils.data import DataLoader
from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                          DataCollatorWithPadding, get_linear_schedule_with_warmup)

from _common import LORA, StepTimer, minilm_folder, report, seed_all


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--method", choices=["full", "lora"], required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", required=True)
    args = p.parse_args()
    files = json.loads(args.data)
    seed_all(args.seed)
    folder = minilm_folder()
    tok = AutoTokenizer.from_pretrained(folder)
    raw = load_dataset("csv" if files["train"].endswith(".csv") else "json",
                       data_files={"train": files["train"], "test": files["test"]})
    labels = sorted(raw["train"].unique(files["label"]))
    ids = {label: i for i, label in enumerate(labels)}

    def encode(batch):
        out = tok(batch[files["text"]], truncation=True, max_length=args.max_length)
        out["labels"] = [ids[x] for x in batch[files["label"]]]
        return out

    data = raw.map(encode, batched=True, remove_columns=raw["train"].column_names)
    collate = DataCollatorWithPadding(tok)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=len(labels))
    if args.method == "lora":
        model = get_peft_model(model, LoraConfig(
            task_type=TaskType.SEQ_CLS, r=LORA["r"], lora_alpha=LORA["alpha"],
            lora_dropout=LORA["dropout"], target_modules=LORA["targets"]))
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(optim, int(0.06 * args.steps), args.steps)
    generator = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(data["train"], batch_size=args.batch, shuffle=True, collate_fn=collate,
                        generator=generator)
    timer = StepTimer()
    model.train()
    while timer.steps < args.steps:
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optim.step()
            sched.step()
            optim.zero_grad()
            timer.step(batch["input_ids"].shape[0], int(batch["attention_mask"].sum()))
            if timer.steps == args.steps:
                break
    result = timer.result()
    model.eval()
    correct = total = 0
    start = time.perf_counter()
    with torch.no_grad():
        for batch in DataLoader(data["test"], batch_size=2 * args.batch, collate_fn=collate):
            logits = model(**batch).logits
            correct += int((logits.argmax(-1) == batch["labels"]).sum())
            total += len(batch["labels"])
    result["eval_samples_per_sec"] = total / (time.perf_counter() - start)
    result["test_acc"] = correct / total
    report(result)


if __name__ == "__main__":
    main()
