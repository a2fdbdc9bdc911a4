"""Training budgets beside `trainer.max_steps`: tokens, seconds and FLOPs, the first reached ends
the run, and every run records what it used.

A comparison of methods is only fair on an equal budget, and "equal" has two readings: equal data
(steps, tokens) or equal compute (seconds, FLOPs; a LoRA step is cheaper than a full one, so at
equal compute LoRA trains more steps). The meter counts all four whichever limits are set, so any
run can be read on either scale afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch

from tunelab.tracking.perf import train_flops_per_token

DATA_KEYS = ("steps", "tokens")          # equal data: each arm sees as much text
COMPUTE_KEYS = ("seconds", "flops")      # equal compute: each arm spends as much


def batch_tokens(batch: Mapping[str, Any]) -> int:
    """Non-padding tokens of a batch: what a token budget counts, on this device."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else batch["input_ids"].numel()


def budget_limits(budget: Mapping[str, Any], max_steps: int) -> dict[str, float]:
    """The limits a run is held to, by kind (steps, tokens, seconds, flops); unset ones left out."""
    limits = {"steps": max_steps if max_steps > 0 else None,
              **{key: budget.get(key) for key in ("tokens", "seconds", "flops")}}
    return {key: value for key, value in limits.items() if value is not None}


def budget_kind(limits: Mapping[str, float]) -> str:
    """`data`, `compute`, `data+compute`, or `epochs` when only trainer.max_epochs bounds it."""
    kinds = [name for name, keys in (("data", DATA_KEYS), ("compute", COMPUTE_KEYS))
             if any(key in limits for key in keys)]
    return "+".join(kinds) or "epochs"


class BudgetMeter(L.Callback):
    """Counts training steps, tokens, step seconds and FLOPs; sets `trainer.should_stop` at the
    first optimizer step that reaches a limit. Its counts travel in checkpoints, so a resumed run
    spends what is left of its budget, not a new one.

    Seconds are the time inside training steps (forward, backward, optimizer), so start-up, data
    loading, validation and checkpoint writes never eat into the budget.

    Collectives only where a limit needs them: the token count is summed over ranks each step
    when a token or FLOP limit is set, the stop decision is shared when any limit is; otherwise
    the count is summed once, when it is read (at fit end and into a checkpoint, which every rank
    writes together), so a run without a budget pays nothing per step."""

    def __init__(self, adapter_method: str, tokens: int | None = None,
                 seconds: float | None = None, flops: float | None = None) -> None:
        self.adapter_method = adapter_method      # FLOPs per token depend on the method
        self.limits = {"tokens": tokens, "seconds": seconds, "flops": flops}
        self.tokens_used = 0
        self.seconds_used = 0.0
        self.per_token = 0.0
        self._pending_tokens = 0
        self._t_batch = 0.0
        self._last_step = -1
        self._strategy = None

    @property
    def flops_used(self) -> float:
        return self.tokens_used * self.per_token

    def used(self, steps: int) -> dict[str, float]:
        return {"budget/steps_used": steps, "budget/tokens_used": self.tokens_used,
                "budget/seconds_used": self.seconds_used, "budget/flops_used": self.flops_used}

    def reached(self) -> list[str]:
        """The limits met so far, e.g. ['tokens']."""
        now = {"tokens": self.tokens_used, "seconds": self.seconds_used, "flops": self.flops_used}
        return [key for key, limit in self.limits.items()
                if limit is not None and now[key] >= limit]

    @property
    def counts_each_step(self) -> bool:
        """A token or FLOP limit is checked against the global count at every optimizer step."""
        return self.limits["tokens"] is not None or self.limits["flops"] is not None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.per_token = train_flops_per_token(pl_module, self.adapter_method)
        self._last_step = trainer.global_step
        self._strategy = trainer.strategy

    def _sum_pending(self) -> None:
        """Add the tokens counted since the last sum, over every rank (one all-reduce; none on a
        single device, whose strategy reduces nothing)."""
        if self._strategy is None or self._strategy.world_size == 1:
            self.tokens_used += self._pending_tokens
        else:
            pending = torch.tensor(float(self._pending_tokens),
                                   device=self._strategy.root_device)
            self.tokens_used += int(self._strategy.reduce(pending, reduce_op="sum").item())
        self._pending_tokens = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t_batch = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seconds_used += time.perf_counter() - self._t_batch
        self._pending_tokens += batch_tokens(batch)
        if trainer.global_step == self._last_step:      # mid gradient accumulation
            return
        self._last_step = trainer.global_step
        if self.counts_each_step:
            self._sum_pending()
        # every rank stops at the same step: one rank's clock may pass the limit first
        if any(limit is not None for limit in self.limits.values()) and \
                trainer.strategy.reduce_boolean_decision(bool(self.reached()), all=False):
            trainer.should_stop = True

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sum_pending()
        if trainer.logger is not None:
            trainer.logger.log_metrics(self.used(trainer.global_step), step=trainer.global_step)

    def state_dict(self) -> dict[str, float]:
        self._sum_pending()
        return {"tokens_used": self.tokens_used, "seconds_used": self.seconds_used}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.tokens_used = int(state_dict["tokens_used"])
        self.seconds_used = float(state_dict["seconds_used"])
