"""Budgets beside trainer.max_steps: a real tiny-bert fit stops where its budget says, validates
its final weights, and records what it used (budget/*)."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import train_runs
from tunelab.config import ConfigError, check_config
from tunelab.train import train

BATCH, LENGTH = 8, 6     # every generated sentence has more than 6 tokens: 48 real tokens per step
PER_STEP = BATCH * LENGTH
SHORT = ["data.synthetic.train_size=400", "data.synthetic.eval_size=16", f"data.batch_size={BATCH}",
         f"data.max_length={LENGTH}", "trainer.checkpoint_every_n_steps=1000"]


def used(client) -> tuple[dict[str, float], object]:
    [run] = train_runs(client)
    assert run.info.status == "FINISHED", run.data.tags.get("tunelab.error")
    return run.data.metrics, run


def test_token_and_flop_budgets_stop_at_the_first_step_that_reaches_them(tiny_cfg, client,
                                                                        one_thread):
    train(tiny_cfg(*SHORT, "trainer.max_steps=50", f"budget.tokens={3 * PER_STEP + 1}"))
    metrics, run = used(client)
    assert metrics["budget/steps_used"] == 4          # 3 steps fall one token short
    assert metrics["budget/tokens_used"] == 4 * PER_STEP
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")] == [4]
    per_token = metrics["budget/flops_used"] / metrics["budget/tokens_used"]
    assert per_token > 0 and metrics["budget/seconds_used"] > 0

    client.delete_run(run.info.run_id)
    train(tiny_cfg(*SHORT, "trainer.max_steps=50", f"budget.flops={per_token * PER_STEP * 1.5}"))
    metrics, _ = used(client)
    assert metrics["budget/steps_used"] == 2
    assert metrics["budget/flops_used"] == pytest.approx(per_token * 2 * PER_STEP)


def test_max_steps_and_seconds_budgets_are_recorded_the_same_way(tiny_cfg, client, one_thread):
    train(tiny_cfg(*SHORT, "trainer.max_steps=3"))
    metrics, run = used(client)
    assert (metrics["budget/steps_used"], metrics["budget/tokens_used"]) == (3, 3 * PER_STEP)

    client.delete_run(run.info.run_id)
    train(tiny_cfg(*SHORT, "trainer.max_steps=100000", "trainer.max_epochs=null",
                   "budget.seconds=0.5"))
    metrics, run = used(client)
    assert 0 < metrics["budget/steps_used"] < 100000
    # stops at the first step past 0.5 s of training steps; one tiny-bert step is far below 30 s
    assert 0.5 <= metrics["budget/seconds_used"] < 30
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")]
    assert steps[-1] == metrics["budget/steps_used"]


@pytest.mark.parametrize("key", ["tokens", "seconds", "flops"])
def test_a_negative_budget_is_refused_before_anything_loads(tiny_cfg, key):
    with pytest.raises(ConfigError, match=rf"budget\.{key}=-5(\.0)?: null \(no limit\) or > 0"):
        check_config(tiny_cfg(f"budget.{key}=-5"))


def test_a_resumed_run_spends_only_what_is_left_of_its_budget(tiny_cfg, client, monkeypatch,
                                                              one_thread):
    """Crashed at step 5 with a checkpoint at step 4, resumed: the token count comes back from
    the checkpoint, so the run still ends at step 7, not 7 steps after the resume point."""
    from tunelab.models import TuneModule

    overrides = [*SHORT, "trainer.max_steps=50", "trainer.checkpoint_every_n_steps=2",
                 f"budget.tokens={7 * PER_STEP}"]
    step = TuneModule.training_step

    def crashes_at_step_5(self, batch, batch_idx):
        if self.trainer.global_step == 5:
            raise RuntimeError("the machine went away")
        return step(self, batch, batch_idx)

    with monkeypatch.context() as patch:
        patch.setattr(TuneModule, "training_step", crashes_at_step_5)
        with pytest.raises(RuntimeError, match="went away"):
            train(tiny_cfg(*overrides))
    train(tiny_cfg(*overrides))
    metrics, run = used(client)
    assert run.data.tags.get("tunelab.resumed") == "true"
    assert (metrics["budget/steps_used"], metrics["budget/tokens_used"]) == (7, 7 * PER_STEP)


def test_a_run_without_a_budget_makes_no_collective_call_per_step(tiny_cfg, client, monkeypatch,
                                                                  one_thread):
    """No limit needs a shared stop decision during training, so the meter reduces nothing per
    step; the count it records is still every step's tokens. With a limit every step decides
    (and on one device the count is summed without a reduce: there is nothing to sum over)."""
    from lightning.pytorch.strategies import SingleDeviceStrategy

    calls: list[str] = []
    for name in ("reduce", "reduce_boolean_decision"):
        original = getattr(SingleDeviceStrategy, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            if sys._getframe(1).f_globals.get("__name__") == "tunelab.budget.meter":
                calls.append(_name)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(SingleDeviceStrategy, name, counted)

    train(tiny_cfg(*SHORT, "trainer.max_steps=5"))
    metrics, run = used(client)
    assert calls == [] and metrics["budget/tokens_used"] == 5 * PER_STEP

    client.delete_run(run.info.run_id)
    train(tiny_cfg(*SHORT, "trainer.max_steps=5", f"budget.tokens={100 * PER_STEP}"))
    metrics, _ = used(client)
    assert calls == ["reduce_boolean_decision"] * 5
    assert metrics["budget/tokens_used"] == 5 * PER_STEP
