"""The other baseline users reach for: Hugging Face's Trainer (+ peft LoRA), same work."""

from __future__ import annotations

import _common  # noqa: F401  (records the process start first)
import argparse
import json
import tempfile
import time

from datasets import load_dataset
from peft import LoraConfig, TaskType, get_peft_model
from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                          DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments)

from _common import LORA, StepTimer, minilm_folder, report, seed_all


class Timing(TrainerCallback):
    def __init__(self, timer: StepTimer, batch: int, tokens_per_step: list[int]):
        self.timer, self.batch, self.tokens = timer, batch, tokens_per_step

    def on_step_end(self, args, state, control, **kwargs):
        self.timer.step(self.batch, self.tokens.pop(0) if self.tokens else 0)


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
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=len(labels))
    if args.method == "lora":
        model = get_peft_model(model, LoraConfig(
            task_type=TaskType.SEQ_CLS, r=LORA["r"], lora_alpha=LORA["alpha"],
            lora_dropout=LORA["dropout"], target_modules=LORA["targets"]))
    timer = StepTimer()
    # Tokens per step are counted from the padded batches the collator builds.
    collate = DataCollatorWithPadding(tok)
    tokens: list[int] = []

    def counting_collate(features):
        batch = collate(features)
        tokens.append(int(batch["attention_mask"].sum()))
        return batch

    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(
            output_dir=out, max_steps=args.steps, per_device_train_batch_size=args.batch,
            per_device_eval_batch_size=2 * args.batch, learning_rate=args.lr, weight_decay=0.01,
            warmup_ratio=0.06, lr_scheduler_type="linear", max_grad_norm=1.0, seed=args.seed,
            logging_steps=10, save_strategy="no", report_to=[], use_cpu=True,
            dataloader_num_workers=0, disable_tqdm=True)
        trainer = Trainer(model=model, args=targs, train_dataset=data["train"],
                          data_collator=counting_collate, callbacks=[Timing(timer, args.batch, tokens)])
        trainer.train()
        result = timer.result()
        start = time.perf_counter()
        pred = trainer.predict(data["test"])
        result["eval_samples_per_sec"] = len(data["test"]) / (time.perf_counter() - start)
    result["test_acc"] = float((pred.predictions.argmax(-1) == pred.label_ids).mean())
    report(result)


if __name__ == "__main__":
    main()
