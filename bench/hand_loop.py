"""The baseline a user would write by hand: a plain PyTorch loop over MiniLM (+ peft LoRA)."""

from __future__ import annotations

import _common  # noqa: F401  (records the process start first)
import time

import torch
from torch.utils.data import DataLoader
from transformers import get_linear_schedule_with_warmup

from _common import StepTimer, collator, prepare, report


def main() -> None:
    args, tok, data, model = prepare()
    collate = collator(tok, args)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, fused=True)  # as HF and tunelab
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
            timer.step(batch)
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
