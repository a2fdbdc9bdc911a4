"""`tunelab-compare` and the notebook on a real tiny sweep: 2 adapters × 3 seeds, made once."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import mlflow
import mlflow.tracking._tracking_service.utils as tracking_utils
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from scipy import stats as sps

from tests.conftest import ROOT, run_cli, train_runs

ADAPTERS = ("full", "lora")
SEEDS = (0, 1, 2)
# Tiny but with curves: a train/loss point every 2 steps and validation every 4.
SWEEP = ["-m", f"adapter={','.join(ADAPTERS)}", f"seed={','.join(map(str, SEEDS))}",
         "model=tiny-bert", "trainer.max_steps=12", "trainer.max_epochs=null",
         "trainer.log_every_n_steps=2", "trainer.val_check_interval=4",
         "trainer.enable_progress_bar=false", "data.synthetic.train_size=200",
         "data.synthetic.eval_size=32", "data.batch_size=32", "data.max_length=32", "optim.lr=1e-3"]
NOTEBOOK = ROOT / "notebooks" / "compare_runs.ipynb"


def store_uri(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"


def crash_run(client: MlflowClient, experiment: str, run_name: str) -> str:
    """A training run as a crash leaves it: tagged `train`, FAILED, no metrics."""
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    run = client.create_run(exp_id, run_name=run_name, tags={"tunelab.run_kind": "train"})
    client.set_terminated(run.info.run_id, status="FAILED")
    return run.info.run_id


def sweep_folder(factory: pytest.TempPathFactory) -> Path:
    """A user's working folder after the sweep and one crashed run; made once per session and
    shared with tests/test_ui.py (the sweep is the expensive part: about a minute)."""
    folder = factory.getbasetemp() / "compare-sweep"
    if (folder / "sweep.done").exists():
        return folder
    folder.mkdir(exist_ok=True)
    proc = run_cli(["tunelab-train", *SWEEP], cwd=folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    crash_run(MlflowClient(store_uri(folder)), "tunelab", "tiny-bert-lora-sentiment-cpu-s9")
    (folder / "sweep.done").touch()
    return folder


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    return sweep_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def report(sweep) -> Path:
    """`tunelab-compare` as a user types it after the sweep: no arguments at all."""
    proc = run_cli(["tunelab-compare"], cwd=sweep, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = sweep / "reports" / "tunelab"
    assert str(Path("reports/tunelab/report.md")) in proc.stdout
    return out


@pytest.fixture
def keep_global_uri(monkeypatch) -> None:
    """Put MLflow's process-wide URI (and the env var it exports) back as it was after the test:
    tunelab.compare sets it, and later tests' subprocesses would inherit it."""
    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def global_uri(keep_global_uri, sweep) -> str:
    mlflow.set_tracking_uri(store_uri(sweep))
    return store_uri(sweep)


def finished_runs(folder: Path) -> pd.DataFrame:
    """The sweep's runs as MLflow holds them, read independently of tunelab.compare."""
    runs = train_runs(MlflowClient(store_uri(folder)))
    return pd.DataFrame([{"adapter": r.data.params["adapter.name"],
                          "seed": int(r.data.params["seed"]), **r.data.metrics}
                         for r in runs if r.info.status == "FINISHED"])


def test_report_tables_match_the_runs_in_mlflow(sweep, report):
    expected = finished_runs(sweep)
    assert len(expected) == len(ADAPTERS) * len(SEEDS)

    summary = pd.read_csv(report / "summary.csv").set_index("adapter.name")
    assert sorted(summary.index) == list(ADAPTERS)
    assert (summary.n == len(SEEDS)).all()
    for adapter, runs in expected.groupby("adapter"):
        for key in ["val/acc", "params/trainable_pct", "params/adapter_mb",
                    "perf/train_samples_per_sec", "perf/peak_mem_mb", "time/fit_seconds"]:
            assert summary.loc[adapter, key] == pytest.approx(runs[key].mean())
            assert summary.loc[adapter, f"{key}_std"] == pytest.approx(runs[key].std(), abs=1e-9)
    assert summary.loc["lora", "params/trainable_pct"] < summary.loc["full", "params/trainable_pct"]

    deltas = pd.read_csv(report / "paired_deltas.csv")
    acc = deltas[deltas.quantity == "val/acc"].iloc[0]
    assert (acc.arm, acc.baseline, acc.pairs) == ("adapter=lora", "adapter=full", len(SEEDS))
    by_seed = expected.pivot(index="seed", columns="adapter", values="val/acc")
    spread = (by_seed.lora - by_seed.full)
    assert acc.delta == pytest.approx(spread.mean())
    assert acc.sd == pytest.approx(spread.std(), nan_ok=True)
    if spread.std() > 0:
        assert acc.p_t == pytest.approx(sps.ttest_rel(by_seed.lora, by_seed.full).pvalue)
    assert acc.ci_low <= acc.delta + 1e-12 and acc.delta <= acc.ci_high + 1e-12, "3 pairs: a CI"
    assert spread.min() - 1e-12 <= acc.ci_low and acc.ci_high <= spread.max() + 1e-12

    [decision] = pd.read_csv(report / "decision.csv").to_dict("records")
    means = expected.groupby("adapter")["val/acc"].mean()
    assert decision["best"] == f"adapter={means.idxmax()}" or means.nunique() == 1
    assert decision["budget"] == "trainer.max_steps=12"
    assert decision["pairs"] == len(SEEDS)

    pareto = pd.read_csv(report / "pareto.csv")
    for cost, column in [("params/trainable_pct", "frontier trainable %"),
                         ("perf/peak_mem_mb", "frontier peak mem MB"),
                         ("time/fit_seconds", "frontier fit s")]:
        assert pareto.loc[pareto[cost].idxmin(), column], f"the cheapest in {cost} is on it"
        for _, row in pareto[~pareto[column]].iterrows():
            dominated = (pareto["val/acc"] >= row["val/acc"]) & (pareto[cost] <= row[cost]) & \
                ((pareto["val/acc"] > row["val/acc"]) | (pareto[cost] < row[cost]))
            assert (dominated & pareto[column]).any(), "off the frontier means dominated"


def test_report_files_plots_and_compare_run(sweep, report):
    markdown = (report / "report.md").read_text()
    headings = ["## Decision", "### Pareto frontier", "## Configurations",
                "## Paired differences along `adapter.name`", "## Quality against budget"]
    assert [markdown.index(h) for h in headings] == sorted(markdown.index(h) for h in headings)
    assert "Task metric `val/acc` (higher is better)" in markdown
    assert f"Counted: {len(ADAPTERS) * len(SEEDS)} FINISHED" in markdown
    assert "Excluded 1 training run(s): 1 (status FAILED)" in markdown
    assert "Configurations are every param that differs among these runs: `adapter.name`" \
        in markdown
    for png in ["pareto.png", "deltas.png", "learning_curves.png"]:
        assert f"({png})" in markdown and (report / png).is_file()
    page = (report / "report.html").read_text()
    assert not re.search(r'(?:src|href)="(?!data:)', page), "the page reads no other file"
    sources = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(sources) == 3
    for source in sources:
        height, width, _ = matplotlib.image.imread(io.BytesIO(base64.b64decode(source))).shape
        assert height >= 100 and width >= 400, f"{width}x{height}"

    client = MlflowClient(store_uri(sweep))
    [run] = train_runs(client, kind="compare")
    assert run.info.status == "FINISHED"
    assert run.data.tags["tunelab.compare.metric"] == "val/acc"
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {f"report/{f}" for f in ["report.md", "report.html", "pareto.png", "deltas.png",
                                    "learning_curves.png", "summary.csv", "decision.csv"]} <= logged
    logged_page = client.download_artifacts(run.info.run_id, "report/report.html", str(sweep))
    assert Path(logged_page).read_text() == page, "the MLflow artifact is the same one file"


def test_learning_curves_come_from_the_metric_history(sweep, global_uri):
    from tunelab.compare import compare, load_runs, resolve_experiment, with_metric

    runs = with_metric(load_runs(resolve_experiment(None)), "val/acc")
    assert runs.excluded == {"status FAILED": 1}
    curves = compare(runs, "val/acc").curves
    curves = curves[curves.axis == "optimizer step"]
    steps = curves.groupby(["run_id", "key"]).step.nunique().unstack()
    assert len(steps) == len(ADAPTERS) * len(SEEDS)
    assert (steps["train/loss"] >= 3).all() and (steps["val/acc"] >= 2).all()
    client = MlflowClient(global_uri)
    run_id = steps.index[0]
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "train/loss"))
    mine = curves[(curves.run_id == run_id) & (curves.key == "train/loss")]
    assert sorted(zip(mine.step, mine.y)) == history


def test_paired_test_is_seeded_and_gives_no_interval_below_three_pairs():
    from tunelab.compare.stats import paired_test

    base = np.zeros(5)
    diffs = np.random.default_rng(7).normal(0.05, 0.02, size=5)
    assert paired_test(diffs, base) == paired_test(diffs, base)
    full = paired_test(diffs, base)
    assert diffs.min() <= full["ci_low"] < diffs.mean() < full["ci_high"] <= diffs.max()
    assert full["p_flip"] == pytest.approx(2 / 2 ** 5), "all positive: the 2 extreme patterns"
    two = paired_test(diffs[:2], base[:2])
    assert np.isnan(two["ci_low"]) and np.isnan(two["ci_high"])
    assert two["p_t"] == pytest.approx(sps.ttest_1samp(diffs[:2], 0).pvalue)
    one = paired_test(diffs[:1], base[:1])
    assert np.isnan(one["p_t"]) and np.isnan(one["p_flip"]) and np.isnan(one["sd"])


@pytest.mark.parametrize("args, message, listed", [
    (["--experiment", "nope"], "no experiment 'nope'", ["tunelab"]),
    (["--metric", "val/nope"], "no FINISHED training run of 'tunelab' has metric 'val/nope'",
     ["val/acc", "time/fit_seconds"]),
    (["--baseline", "dora"], "no run with baseline adapter.name='dora'", ["full, lora"]),
])
def test_user_errors_exit_2_and_say_what_exists(sweep, global_uri, tmp_path, capsys, args,
                                                message, listed):
    """In-process (the report fixture already runs the console script): saves a subprocess."""
    from tunelab.compare.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([*args, "--tracking-uri", global_uri, "--out", str(tmp_path / "unused")])
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2, stderr
    assert message in stderr
    assert all(name in stderr for name in listed), stderr
    assert not (tmp_path / "unused").exists()


def test_experiment_without_finished_training_runs_exits_2(keep_global_uri, tmp_path,
                                                           capsys):
    from tunelab.compare.cli import main

    (tmp_path / "mlruns").mkdir()
    crash_run(MlflowClient(store_uri(tmp_path)), "crashed-only", "crashed")
    for uri, message in [
            (store_uri(tmp_path), "'crashed-only' has no FINISHED training runs (1 status FAILED)"),
            (store_uri(tmp_path / "none"), "no MLflow store at")]:
        with pytest.raises(SystemExit) as exit_:
            main(["--tracking-uri", uri])
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err


def test_notebook_is_committed_clean_and_runs_on_the_sweep(sweep, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "no outputs committed"
    assert "TUNELAB_TRACKING_URI" in code[0].source

    monkeypatch.setenv("TUNELAB_TRACKING_URI", store_uri(sweep))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3, "the notebook draws the report's plots"
    shown = json.dumps([o.get("data", {}) for o in outputs] + [o.get("text", "") for o in outputs])
    for part in ["## Decision", "Pareto frontier", "p (paired t)", "95% CI", "frontier fit s",
                 "## Paired differences along `adapter.name`"]:
        assert part in shown, part
    for adapter in ADAPTERS:
        for seed in SEEDS:
            assert f"tiny-bert-{adapter}-sentiment-cpu-s{seed}" in shown
    assert not (tmp_path / "mlruns").exists(), "the env var, not the default store, was read"


def test_importing_compare_loads_no_training_code():
    """compare/ reads runs made anywhere: importing it (the report, the command line, the tag
    names and the client it shares with tracking/) loads neither torch nor Lightning."""
    probe = ("import sys, tunelab.compare, tunelab.compare.cli; "
             "print(sorted(m for m in ('torch', 'lightning', 'transformers', 'peft') "
             "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout
