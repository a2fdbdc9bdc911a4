"""The other baseline users reach for: Hugging Face's Trainer (+ peft LoRA) over MiniLM or SmolLM2,
same work."""

from __future__ import annotations

import _common  # noqa: F401  (records the process start first)
import tempfile
import time

from transformers import Trainer, TrainerCallback, TrainingArguments

from _common import StepTimer, collator, prepare, report


class Timing(TrainerCallback):
    """Ends a step on the timer with the batch the collator built for it: first built, first
    stepped on, however far ahead accelerate's loader collates (dataloader_num_workers=0)."""

    def __init__(self, timer: StepTimer, batches: list[dict]):
        self.timer, self.batches = timer, batches

    def on_step_end(self, args, state, control, **kwargs):
        self.timer.step(self.batches.pop(0))


def main() -> None:
    args, tok, data, model = prepare()
    timer = StepTimer()
    # The batches the collator builds, for the timer to count (as the other ways count theirs).
    collate = collator(tok, args)
    batches: list[dict] = []

    def counting_collate(features):
        batch = collate(features)
        batches.append({k: batch[k] for k in ("input_ids", "attention_mask")})
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
                          data_collator=counting_collate, callbacks=[Timing(timer, batches)])
        trainer.train()
        result = timer.result()
        start = time.perf_counter()
        if args.model == "minilm":
            pred = trainer.predict(data["test"])
            result["test_acc"] = float((pred.predictions.argmax(-1) == pred.label_ids).mean())
        else:       # the decoder's logits over its vocabulary are too big to gather: the loss
            result["test_loss"] = trainer.evaluate(data["test"])["eval_loss"]
        result["eval_samples_per_sec"] = len(data["test"]) / (time.perf_counter() - start)
    report(result)


if __name__ == "__main__":
    main()
