"""The baseline a user would write by hand: a plain PyTorch loop over MiniLM or SmolLM2 (+ peft
LoRA)."""

from __future__ import annotations

import _common  # noqa: F401  (records the process start first)

import torch
from torch.utils.data import DataLoader
from transformers import get_linear_schedule_with_warmup

from _common import StepTimer, collator, prepare, report, test_metrics


def main(setup=prepare) -> None:
    """`setup` gives (args, tokenizer, tokenized data, model): MiniLM's by default, SmolLM2 with a
    classification head from bench/hand_loop_decoder.py."""
    args, tok, data, model = setup()
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
    report(timer.result() | test_metrics(model, data, collate, 2 * args.batch))


if __name__ == "__main__":
    main()
