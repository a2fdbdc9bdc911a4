"""The learning-rate schedule TuneModule trains with: linear warm-up, then linear decay to zero,
step for step the schedule transformers' `get_linear_schedule_with_warmup` gives (tunelab builds
it on torch's LambdaLR so that a run without peft does not import peft; issue #19 item 3)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from transformers import get_linear_schedule_with_warmup

from tunelab import build
from tunelab.config import check_config

STEPS = 12


class _LearningRates(L.Callback):
    """The learning rate each optimizer step uses, read before the step."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append(trainer.optimizers[0].param_groups[0]["lr"])


def _transformers_rates(lr: float, warmup: int, total: int) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=lr)
    schedule = get_linear_schedule_with_warmup(optimizer, warmup, total)
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


def test_lr_per_step_is_transformers_linear_schedule_with_warmup(tiny_cfg, one_thread):
    """A real fit of tiny-bert for 12 steps with warmup_ratio 0.25 (3 warm-up steps): the lr of
    every step equals transformers' schedule for 3 warm-up / 12 total steps, from 0 at step 0 up
    to optim.lr at step 3 and down to lr/9 at the last step."""
    cfg = check_config(tiny_cfg(f"trainer.max_steps={STEPS}", "optim.warmup_ratio=0.25",
                                "optim.lr=1e-3"))
    inputs = build.build_data(cfg)
    tokenizer = build.build_tokenizer(cfg)
    net = build.build_model(cfg, inputs.label_names, tokenizer)
    rates = _LearningRates()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=STEPS, max_epochs=-1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        callbacks=[rates])
    trainer.fit(build.build_module(cfg, net, inputs, tokenizer),
                build.build_datamodule(cfg, inputs, tokenizer, batch_size=8))
    expected = _transformers_rates(1e-3, 3, STEPS)
    assert rates.seen == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert rates.seen[0] == 0.0 and rates.seen[3] == pytest.approx(1e-3)
    assert rates.seen[-1] == pytest.approx(1e-3 / 9)
