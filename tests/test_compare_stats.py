"""tunelab-compare on runs with controlled metrics, logged to a tmp_path MLflow store with the
params and tags a tunelab training run records: pooling, pairing, the few-seeds rules, the
decision and its prices, quality against budget, and a study's section."""

from __future__ import annotations

import itertools
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from scipy import stats as sps

from tests.test_compare import keep_global_uri, store_uri  # noqa: F401 (fixture)

BASE = {"model.name": "tiny-bert", "model.family": "encoder", "task.name": "sentiment",
        "task.monitor": "acc", "task.mode": "max", "task.head": "classifier",
        "adapter.name": "lora", "adapter.method": "lora", "adapter.r": "8",
        "optim.lr": "0.001", "objective.aux_weight": "0.0", "trainer.max_steps": "20",
        "budget.tokens": "None", "budget.seconds": "None", "hardware.name": "cpu",
        "hardware.resolved.accelerator": "cpu", "hardware.resolved.precision": "32-true",
        "paths.cache_dir": ".cache/tunelab", "tracking.uri": "None"}


def log_run(client: MlflowClient, exp_id: str, params: dict, metrics: dict,
            tags: dict | None = None, curve: dict[str, list[tuple[int, float]]] | None = None,
            start: int = 0) -> str:
    """A FINISHED training run as tunelab records it; run-specific paths differ per run, as
    they do when each run gets its own checkpoint folder."""
    params = {**BASE, **params}
    if params["adapter.name"] == "full":
        params.pop("adapter.r")
    name = f"{params['model.name']}-{params['adapter.name']}-s{params['seed']}-{start}"
    params["paths.checkpoint_dir"] = f"/tmp/ckpt/{name}"
    params["tracking.run_name"] = name
    run = client.create_run(exp_id, run_name=name, start_time=1_000_000 + start,
                            tags={"tunelab.run_kind": "train", **(tags or {})})
    stamp = 1_000_000 + start
    rows = [Metric(k, v, stamp, 0) for k, v in metrics.items() if k not in (curve or {})]
    rows += [Metric(k, v, stamp + 1000 * step, step) for k, points in (curve or {}).items()
             for step, v in points]
    client.log_batch(run.info.run_id, metrics=rows,
                     params=[Param(k, str(v)) for k, v in params.items()],
                     tags=[RunTag("tunelab.config_hash", name)])
    client.set_terminated(run.info.run_id)
    return run.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[MlflowClient, str]:
    """One store for the module (creating MLflow's tables takes seconds); one experiment per
    scenario."""
    folder = tmp_path_factory.mktemp("compare-stats")
    (folder / "mlruns").mkdir()
    return MlflowClient(store_uri(folder)), store_uri(folder)


def experiment(client: MlflowClient, name: str) -> str:
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found else client.create_experiment(name)


# val/acc per (adapter, lr, seed): full vs lora at two lrs; lr 1e-4 has only two seeds.
GRID = {("full", "0.001"): [0.70, 0.74, 0.72], ("lora", "0.001"): [0.75, 0.80, 0.76],
        ("full", "0.0001"): [0.60, 0.62], ("lora", "0.0001"): [0.66, 0.61]}
COST = {"full": {"time/fit_seconds": 10.0, "perf/peak_mem_mb": 900.0, "perf/energy_j": 500.0,
                 "cost/usd": 0.02, "params/trainable_pct": 100.0},
        "lora": {"time/fit_seconds": 6.0, "perf/peak_mem_mb": 700.0, "perf/energy_j": 300.0,
                 "cost/usd": 0.01, "params/trainable_pct": 0.3}}


@pytest.fixture(scope="module")
def grid_store(store) -> str:
    client, uri = store
    exp_id = experiment(client, "grid")
    for i, ((adapter, lr), accs) in enumerate(GRID.items()):
        for seed, acc in enumerate(accs):
            tokens = [(s, 320.0 * s) for s in (0, 10, 20)]
            log_run(client, exp_id, {"adapter.name": adapter, "adapter.method": adapter,
                                     "optim.lr": lr, "seed": seed},
                    {"val/acc": acc, **COST[adapter]}, start=10 * i + seed,
                    curve={"val/acc": [(10, acc - 0.1), (20, acc)],
                           "budget/tokens_used": tokens})
    return uri


@pytest.fixture
def grid(grid_store, keep_global_uri) -> str:  # noqa: F811
    mlflow.set_tracking_uri(grid_store)
    return grid_store


def report(uri: str, out: Path, *args: str, name: str = "grid") -> str:
    from tunelab.compare.cli import main

    where = ["--experiment", name] if "--study" not in args else []
    assert main(["--tracking-uri", uri, *where, "--out", str(out), *args]) == 0
    return (out / "report.md").read_text()


def sign_flip_p(diffs: np.ndarray) -> float:
    """Two-sided exact sign-flip p, enumerated: the share of sign patterns whose mean is at
    least as far from zero as the observed one."""
    means = [abs(np.mean(diffs * s)) for s in itertools.product([1, -1], repeat=len(diffs))]
    return float(np.mean(np.array(means) >= abs(diffs.mean()) - 1e-12))


def test_two_lrs_are_two_configurations_and_pairs_match_on_lr_and_seed(grid, tmp_path):
    markdown = report(grid, tmp_path / "out")
    summary = pd.read_csv(tmp_path / "out" / "summary.csv", dtype={"optim.lr": str})
    assert len(summary) == 4, "adapter × lr: nothing pooled"
    for (adapter, lr), accs in GRID.items():
        row = summary[(summary["adapter.name"] == adapter) & (summary["optim.lr"] == lr)]
        assert row.n.item() == len(accs)
        assert row["val/acc"].item() == pytest.approx(np.mean(accs))
        assert row["val/acc_std"].item() == pytest.approx(np.std(accs, ddof=1))
    assert "`adapter.name` (with `adapter.method`, `adapter.r` varying alike)" in markdown
    assert "`optim.lr`" in markdown
    assert "Of those, `paths.checkpoint_dir`, `tracking.run_name` differed." in markdown

    deltas = pd.read_csv(tmp_path / "out" / "paired_deltas.csv")
    acc = deltas[deltas.quantity == "val/acc"].set_index("matched")
    for lr in ["0.001", "0.0001"]:
        diffs = np.array(GRID[("lora", lr)]) - np.array(GRID[("full", lr)])
        row = acc.loc[f"optim.lr={lr}"]
        assert (row.arm, row.baseline, row.pairs) == ("adapter=lora", "adapter=full", len(diffs))
        assert row.delta == pytest.approx(diffs.mean())
        assert row.sd == pytest.approx(diffs.std(ddof=1))
        assert row.p_t == pytest.approx(sps.ttest_1samp(diffs, 0).pvalue)
        assert row.p_flip == pytest.approx(sign_flip_p(diffs))
    three, two = acc.loc["optim.lr=0.001"], acc.loc["optim.lr=0.0001"]
    assert three.ci_low <= three.delta <= three.ci_high
    assert np.isnan(two.ci_low) and np.isnan(two.ci_high), "no interval from 2 pairs"
    assert "too few seeds (2 pairs; needs 3)" in markdown
    assert "Too few seeds for an interval" in markdown


def test_decision_names_the_best_its_significance_and_its_price(grid, tmp_path):
    markdown = report(grid, tmp_path / "out")
    assert markdown.index("## Decision") < markdown.index("## Configurations")
    decision = pd.read_csv(tmp_path / "out" / "decision.csv")
    [row] = decision.to_dict("records")
    best = np.array(GRID[("lora", "0.001")])
    runner = np.array(GRID[("full", "0.001")])
    assert (row["best"], row["runner_up"]) == ("adapter=lora, optim.lr=0.001",
                                               "adapter=full, optim.lr=0.001")
    assert row["budget"] == "trainer.max_steps=20"
    assert row["p_t"] == pytest.approx(sps.ttest_rel(best, runner).pvalue)
    assert ("significant" if row["p_t"] < 0.05 else "not significant") in row["verdict"]
    assert "Scope all runs, budget trainer.max_steps=20: the best is " \
           "`adapter=lora, optim.lr=0.001`" in markdown

    prices = pd.read_csv(tmp_path / "out" / "prices.csv")
    vs_full = prices[prices.other == "adapter=full, optim.lr=0.001"].set_index("quantity")
    points = (best.mean() - runner.mean()) * 100
    for cost in ["time/fit_seconds", "perf/energy_j", "cost/usd", "perf/peak_mem_mb"]:
        extra = COST["lora"][cost] - COST["full"][cost]
        assert vs_full.loc[cost, "points"] == pytest.approx(points)
        assert vs_full.loc[cost, "per_point"] == pytest.approx(extra / points)
    assert "energy J" in markdown and "USD" in markdown

    pareto = pd.read_csv(tmp_path / "out" / "pareto.csv")
    on = pareto[pareto["frontier energy J"]].config.tolist()
    assert on == ["adapter=lora, optim.lr=0.001"], "cheapest and best dominates the rest"


def test_quality_against_tokens_and_log_axis_and_error_bars(grid):
    from matplotlib.container import ErrorbarContainer

    from tunelab.compare import compare, load_runs, resolve_experiment, with_metric
    from tunelab.compare import plots
    from tunelab.compare.stats import WALL_AXIS

    c = compare(with_metric(load_runs(resolve_experiment("grid")), "val/acc"), "val/acc")
    tokens = c.curves[(c.curves.axis == "tokens") & (c.curves.key == "val/acc")]
    assert sorted(set(tokens.step)) == [10, 20]
    assert (tokens.x == tokens.step * 320.0).all(), "tokens at each validation step"
    assert set(c.curves.axis) == {"optimizer step", "tokens", WALL_AXIS}, "no seconds recorded"
    fig = plots.pareto_figure(c.pareto, c.metric, c.look)
    trainable = next(ax for ax in fig.axes if ax.get_title().endswith("trainable %"))
    assert trainable.get_xscale() == "log"
    bars = [b for b in trainable.containers if isinstance(b, ErrorbarContainer)]
    assert len(bars) == 4 and all(b.has_yerr and b.has_xerr for b in bars)
    colours = {b.lines[0].get_color() for b in bars}
    markers = {b.lines[0].get_marker() for b in bars}
    assert len(colours) == 4 and len(markers) == 4, "each configuration its own look"


def test_a_budget_total_recorded_once_is_spread_over_the_steps_and_says_so():
    from tunelab.compare.stats import budget_curves

    history = pd.DataFrame({"run_id": "r", "key": ["val/acc", "val/acc", "budget/flops_used"],
                            "step": [5, 10, 10], "value": [0.5, 0.6, 1e9],
                            "timestamp": [1000, 3000, 3000]})
    runs = pd.DataFrame({"run_id": ["r"], "config": ["adapter=lora"], "seed": ["0"]})
    curves = budget_curves(history, runs, ["val/acc"]).set_index("axis")
    assert curves.loc["FLOPs (≈ total × step share)", "x"].tolist() == [5e8, 1e9]
    assert curves.loc["wall s since the run's first metric", "x"].tolist() == [0.0, 2.0]


def test_by_any_param_key_and_bad_by(grid, tmp_path, capsys):
    from tunelab.compare.cli import main

    report(grid, tmp_path / "lr", "--by", "optim.lr", "--baseline", "0.0001")
    deltas = pd.read_csv(tmp_path / "lr" / "paired_deltas.csv")
    acc = deltas[deltas.quantity == "val/acc"].set_index("matched")
    assert sorted(acc.index) == ["adapter=full", "adapter=lora"]
    assert (acc.arm == "optim.lr=0.001").all() and (acc.pairs == 2).all(), "seeds 0 and 1"
    for adapter in ["full", "lora"]:
        diffs = np.array(GRID[(adapter, "0.001")][:2]) - np.array(GRID[(adapter, "0.0001")])
        assert acc.loc[f"adapter={adapter}", "delta"] == pytest.approx(diffs.mean())
    for by, message in [("nope.key", "the runs record no param 'nope.key'"),
                        ("objective.aux_weight", "all runs share objective.aux_weight"),
                        ("seed", "'seed' is not a configuration key")]:
        with pytest.raises(SystemExit) as exit_:
            main(["--tracking-uri", grid, "--experiment", "grid", "--by", by,
                  "--out", str(tmp_path / by)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err, err
        assert "optim.lr" in err or by == "seed"


def test_keys_the_by_key_determines_are_part_of_the_arm(store, keep_global_uri,  # noqa: F811
                                                        tmp_path):
    """dora and lora both have adapter.r=8, full none: r is determined by the adapter (not a
    mismatch) though it does not name it; aux_weight varies on its own and must match."""
    client, uri = store
    exp_id = experiment(client, "arms")
    for i, (adapter, aux, seed) in enumerate(itertools.product(
            ["full", "lora", "dora"], ["0.0", "0.5"], [0, 1, 2])):
        log_run(client, exp_id, {"adapter.name": adapter, "adapter.method": adapter,
                                 "objective.aux_weight": aux, "seed": seed},
                {"val/acc": 0.5 + 0.1 * i / 18}, start=i)
    markdown = report(uri, tmp_path / "out", name="arms")
    assert "the arm is `adapter.name` (with `adapter.method` varying alike), `adapter.r`" \
        in markdown
    deltas = pd.read_csv(tmp_path / "out" / "paired_deltas.csv")
    acc = deltas[deltas.quantity == "val/acc"]
    assert sorted(acc.matched.unique()) == ["objective.aux_weight=0.0",
                                            "objective.aux_weight=0.5"]
    assert len(acc) == 4 and (acc.pairs == 3).all()
    assert set(acc.arm) == {"adapter=dora, adapter.r=8", "adapter=lora, adapter.r=8"}


def test_encoder_vs_decoder_on_two_tasks_pairs_by_task_though_the_encoder_head_varies(
        store, keep_global_uri, tmp_path):  # noqa: F811
    """The encoder's head depends on the task (classifier, span), the decoder's never
    (generate): the head still changes with the model within each task, so it is in the arm."""
    client, uri = store
    exp_id = experiment(client, "encoder-vs-decoder")
    accs = {}
    for i, (model, task, seed) in enumerate(itertools.product(
            ["minilm", "smollm2-135m"], ["sentiment", "qa"], [0, 1, 2])):
        encoder = model == "minilm"
        head = ("classifier" if task == "sentiment" else "span") if encoder else "generate"
        accs[(model, task, seed)] = 0.6 + 0.1 * encoder + 0.01 * seed + 0.001 * i
        log_run(client, exp_id, {"model.name": model, "task.name": task, "task.head": head,
                                 "adapter.name": "full" if encoder else "lora",
                                 "adapter.method": "full" if encoder else "lora",
                                 "model.family": "encoder" if encoder else "decoder",
                                 "seed": seed}, {"val/acc": accs[(model, task, seed)]}, start=i)
    markdown = report(uri, tmp_path / "out", "--by", "model", name="encoder-vs-decoder")
    assert "two runs pair when they share `task.name` and the seed" in markdown
    deltas = pd.read_csv(tmp_path / "out" / "paired_deltas.csv")
    acc = deltas[deltas.quantity == "val/acc"].set_index("matched")
    assert sorted(acc.index) == ["task=qa", "task=sentiment"]
    assert (acc.pairs == 3).all() and (acc.baseline.str.startswith("model=minilm")).all()
    for task in ["sentiment", "qa"]:
        diffs = [accs[("smollm2-135m", task, s)] - accs[("minilm", task, s)] for s in range(3)]
        assert acc.loc[f"task={task}", "delta"] == pytest.approx(np.mean(diffs))
    decision = pd.read_csv(tmp_path / "out" / "decision.csv").set_index("scope")
    assert sorted(decision.index) == ["task=qa", "task=sentiment"], "best per task"
    assert decision.best.str.startswith("model=minilm").all()


def test_hardware_as_it_resolved_splits_configurations(store, keep_global_uri,  # noqa: F811
                                                       tmp_path):
    """hardware=auto resolved to two precisions on two machines: not one configuration."""
    client, uri = store
    exp_id = experiment(client, "hardware")
    for i, (adapter, precision, seed) in enumerate(itertools.product(
            ["full", "lora"], ["32-true", "bf16-mixed"], [0, 1])):
        log_run(client, exp_id, {"adapter.name": adapter, "adapter.method": adapter,
                                 "hardware.name": "auto", "seed": seed,
                                 "hardware.resolved.precision": precision},
                {"val/acc": 0.5 + 0.01 * i}, start=i)
    markdown = report(uri, tmp_path / "out", name="hardware")
    assert "`hardware.resolved.precision`" in markdown.split("## Decision")[0]
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert len(summary) == 4 and (summary.n == 2).all()
    deltas = pd.read_csv(tmp_path / "out" / "paired_deltas.csv")
    assert sorted(deltas[deltas.quantity == "val/acc"].matched) == [
        "hardware.resolved.precision=32-true", "hardware.resolved.precision=bf16-mixed"]


def test_runs_alike_but_ignored_keys_are_named_and_pair_once(store, keep_global_uri,  # noqa: F811
                                                             tmp_path):
    client, uri = store
    exp_id = experiment(client, "dups")
    for i, (adapter, seed) in enumerate([("full", 0), ("lora", 0), ("lora", 0), ("full", 1),
                                         ("lora", 1)]):
        log_run(client, exp_id, {"adapter.name": adapter, "adapter.method": adapter,
                                 "seed": seed}, {"val/acc": 0.5 + 0.01 * i}, start=i)
    markdown = report(uri, tmp_path / "out", name="dups")
    assert "2 run(s) share configuration and seed with another" in markdown
    deltas = pd.read_csv(tmp_path / "out" / "paired_deltas.csv")
    [acc] = deltas[deltas.quantity == "val/acc"].to_dict("records")
    assert acc["pairs"] == 2, "seed 0 pairs once, with the latest lora run"
    assert acc["delta"] == pytest.approx(((0.52 - 0.50) + (0.54 - 0.53)) / 2)


def study_params(arm: str, phase: str) -> dict[str, str]:
    """The `study` node hydra/sweeper=study adds to each run's config, recorded as params."""
    return {"study.id": "s1", "study.arm": f"adapter={arm}", "study.phase": phase}


def test_a_study_section_from_its_tags(store, keep_global_uri, tmp_path):  # noqa: F811
    client, uri = store
    exp_id = experiment(client, "study")
    parent = client.create_run(exp_id, run_name="study-s1",
                               tags={"tunelab.run_kind": "study", "tunelab.study_id": "s1",
                                     "tunelab.study.trials_per_arm": "3",
                                     "tunelab.study.seeds": "3",
                                     "tunelab.study.budget_kind": "seconds"})
    client.set_terminated(parent.info.run_id)
    trials = {"full": [("0.0001", 0.60), ("0.001", 0.70), ("0.01", 0.65)],
              "lora": [("0.01", 0.72), ("0.001", 0.69), ("0.003", 0.75)]}
    confirm = {"full": [0.68, 0.71, 0.69], "lora": [0.74, 0.76, 0.73]}
    start = 0
    for arm, values in trials.items():
        for lr, acc in values:
            start += 1
            log_run(client, exp_id, {"adapter.name": arm, "adapter.method": arm,
                                     "optim.lr": lr, "seed": 0, "budget.seconds": "60",
                                     **study_params(arm, "search")},
                    {"val/acc": acc}, start=start,
                    tags={"tunelab.study_id": "s1", "tunelab.arm": f"adapter={arm}",
                          "tunelab.phase": "search"})
    best_lr = {"full": "0.001", "lora": "0.003"}
    for arm, accs in confirm.items():
        for seed, acc in enumerate(accs, start=1):
            start += 1
            log_run(client, exp_id, {"adapter.name": arm, "adapter.method": arm,
                                     "optim.lr": best_lr[arm], "seed": seed,
                                     "budget.seconds": "60", **study_params(arm, "confirm")},
                    {"val/acc": acc - 0.01, "test/acc": acc}, start=start,
                    tags={"tunelab.study_id": "s1", "tunelab.arm": f"adapter={arm}",
                          "tunelab.phase": "confirm"})
    markdown = report(uri, tmp_path / "out", "--study", "s1")
    assert "Task metric `test/acc`" in markdown, "a study's confirm runs are scored on test"
    assert "6 (study search trials (in the study section))" in markdown
    assert "## Study s1" in markdown
    assert "Budget kind: seconds (trainer.max_steps=20, budget.seconds=60)" in markdown
    assert "Study settings: budget_kind=seconds, seeds=3, trials_per_arm=3." in markdown
    arms = pd.read_csv(tmp_path / "out" / "study-s1-arms.csv").set_index("arm")
    assert arms.loc["adapter=lora", "tuned values"] == "optim.lr=0.003"
    assert arms.loc["adapter=full", "tuned values"] == "optim.lr=0.001"
    assert arms.loc["adapter=lora", "confirm test/acc mean"] == pytest.approx(
        np.mean(confirm["lora"]))
    search = pd.read_csv(tmp_path / "out" / "study-s1-search.csv")
    lora = search[search.arm == "adapter=lora"].sort_values("trial")
    assert lora.best_so_far.tolist() == pytest.approx([0.72, 0.72, 0.75])
    assert "![study-s1-search.png](study-s1-search.png)" in markdown
    decision = pd.read_csv(tmp_path / "out" / "decision.csv").iloc[0]
    assert decision.best == "adapter=lora", "the tuned lr goes with the arm"
    assert "`optim.lr`" in markdown.split("## Decision")[0]
    assert decision.pairs == 3

    [compare_run] = client.search_runs([exp_id], "tags.`tunelab.run_kind` = 'compare'")
    assert compare_run.data.tags["tunelab.study_id"] == "s1"


def test_unknown_study_exits_2_naming_the_studies(store, keep_global_uri,  # noqa: F811
                                                  capsys):
    from tunelab.compare.cli import main

    client, uri = store
    log_run(client, experiment(client, "other-study"), {"seed": 0}, {"val/acc": 0.5},
            tags={"tunelab.study_id": "real", "tunelab.phase": "confirm"})
    with pytest.raises(SystemExit) as exit_:
        main(["--tracking-uri", uri, "--study", "nope"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "no run of study 'nope'" in err and "real" in err


@pytest.mark.parametrize("key, lower", [("val/loss", True), ("train/aux_loss", True),
                                        ("val/ppl_best", True), ("search/lm/val_ppl_best", True),
                                        ("val/acc", False), ("test/f1_best", False)])
def test_compare_and_export_rank_by_the_one_direction_rule(key, lower):
    """A report's ranking and tunelab-export --best read one rule (tracking.names): a study's
    `search/<arm>/val_ppl_best` is minimised by both (the report once maximised it)."""
    from tunelab.compare.runs import RunSet, metric_mode
    from tunelab.deploy.runs import lower_is_better
    runs = RunSet("e", pd.DataFrame({"params.task.monitor": ["acc"], "params.task.mode": ["max"]}))
    assert lower_is_better(key) is lower
    assert metric_mode(runs, key) == ("min" if lower else "max")
