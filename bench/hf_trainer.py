"""The other baseline users reach for: Hugging Face's Trainer (+ peft LoRA), same work."""

from __future__ import annotations

import _common  # noqa: F401  (records the process start first)
import tempfile
import time

from transformers import Trainer, TrainerCallback, TrainingArguments

from _common import StepTimer, collator, prepare, report


class Timing(TrainerCallback):
    def __init__(self, timer: StepTimer, batch: int, tokens_per_step: list[int]):
        self.timer, self.batch, self.tokens = timer, batch, tokens_per_step

    def on_step_end(self, args, state, control, **kwargs):
        self.timer.step(self.batch, self.tokens.pop(0) if self.tokens else 0)


def main() -> None:
    args, tok, data, model = prepare()
    timer = StepTimer()
    # Tokens per step (real ones, as the other ways count) from the batches the collator builds.
    collate = collator(tok, args)
    tokens: list[int] = []

    def counting_collate(features):
        batch = collate(features)
        tokens.append(int(batch["attention_mask"].sum()))
        return batch

    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(
            output_dir=out, max_steps=args.steps, per_device_train_batch_size=args.batch,
            per_device_eval_batch_size=2 * args.batch, learning_rate=args.lr, weight_decay=0.01,
            # transformers 5.x dropped warmup_ratio: a float below 1 here is the fraction of steps
            warmup_steps=0.06, lr_scheduler_type="linear", max_grad_norm=1.0, seed=args.seed,
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
