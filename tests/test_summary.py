"""What a run and a sweep print at the end, as a user sees it from the shell, checked against what
the MLflow store recorded."""

from __future__ import annotations

import logging
import re

from mlflow import MlflowClient

from tests.conftest import TINY, prepared_data, run_cli, train_runs
from tunelab.tracking.names import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG
from tunelab.tracking.store import client_for
from tunelab.tracking.summary import FailedJob, run_summary, see_it, shown_uri, sweep_summary

FAST = [*TINY, "trainer.max_steps=5", "data.synthetic.train_size=64",
        "data.synthetic.eval_size=32", "data.batch_size=16"]


def store(tmp_path) -> tuple[str, MlflowClient]:
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    return uri, client_for(uri)


def test_run_ends_with_its_summary_and_a_rerun_says_it_skipped(tmp_path):
    uri, client = store(tmp_path)
    client.create_experiment("tunelab")        # made elsewhere, without a kind
    proc = run_cli(["tunelab-train", *FAST], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run] = train_runs(client)
    exp, metrics = run.info.experiment_id, run.data.metrics
    out = proc.stdout
    assert f"run {run.info.run_name} ({run.info.run_id}): FINISHED" in out
    assert re.search(rf"val +acc {metrics['val/acc']:.4g} .*f1 {metrics['val/f1']:.4g}", out)
    assert re.search(rf"test +acc {metrics['test/acc']:.4g}", out)
    assert re.search(rf"cost +trainable {metrics['params/trainable_pct']:.3g}% \| "
                     rf"{metrics['perf/train_samples_per_sec']:.4g} samples/s \| "
                     rf"peak mem {metrics['perf/peak_mem_mb']:.0f} MB \| "
                     rf"fit {metrics['time/fit_seconds']:.1f} s", out)
    assert f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000" in out
    assert f"http://127.0.0.1:5000/#/experiments/{exp}/runs/{run.info.run_id}" \
        "?workflowType=machine_learning" in out
    assert "skipped" not in out and "resumed" not in out
    assert client.get_experiment(exp).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND

    again = run_cli(["tunelab-train", *FAST], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"run {run.info.run_name} ({run.info.run_id}): FINISHED" in again.stdout
    assert "skipped: this config already has this FINISHED run" in again.stdout
    assert len(train_runs(client)) == 1


def test_resumed_run_says_so(tmp_path):
    uri, client = store(tmp_path)
    exp = client.create_experiment("tunelab")
    run = client.create_run(exp, run_name="r")
    client.log_metric(run.info.run_id, "val/loss", 0.5)
    text = run_summary(client, uri, run.info.run_id, status="resumed")
    assert "resumed: continued from its last checkpoint into the same MLflow run" in text
    assert "val   loss 0.5" in text and "cost  not recorded" in text


def test_server_store_summary_links_the_server_and_hides_passwords(tmp_path):
    uri, client = store(tmp_path)
    exp = client.create_experiment("tunelab")
    run = client.create_run(exp, run_name="r")
    text = run_summary(client, uri, run.info.run_id)
    assert "mlflow ui --backend-store-uri" in text
    assert see_it("http://team:5000/", run)[1].strip() == \
        f"http://team:5000/#/experiments/{exp}/runs/{run.info.run_id}?workflowType=machine_learning"
    assert shown_uri("postgresql://mlflow:hunter2@db:5432/mlflow") == \
        "postgresql://mlflow:***@db:5432/mlflow"


def test_sweep_summary_ranks_by_the_monitored_metric_in_its_direction(tmp_path):
    uri, client = store(tmp_path)
    exp = client.create_experiment("tunelab")
    parent = client.create_run(exp, run_name="sweep-abc", tags={"tunelab.study_id": "st1"})
    losses = {"seed=0": 0.7, "seed=1": 0.2, "seed=2": 0.4}
    for override, loss in losses.items():
        run = client.create_run(exp, run_name=f"run-{override}",
                                tags={"tunelab.overrides": f"model=tiny-bert {override}"})
        client.log_metric(run.info.run_id, "val/loss", loss)
        client.set_terminated(run.info.run_id)
    runs = client.search_runs([exp], "tags.`tunelab.overrides` != ''")
    text = sweep_summary(client, uri, parent.info.run_id, runs, "val/loss", "min",
                         [FailedJob("job 3", "model=tiny-bert seed=3", "ValueError: boom")])
    rows = [ln.split() for ln in text.splitlines() if re.match(r"  \d ", ln)]
    assert [(r[0], r[1], r[-1]) for r in rows] == [("1", "0.2000", "seed=1"),
                                                   ("2", "0.4000", "seed=2"),
                                                   ("3", "0.7000", "seed=0")]
    assert f"sweep-abc: 3 runs, 1 failed; parent run {parent.info.run_id}" in text
    assert "best (min val/loss): run-seed=1" in text
    assert "job 3: model=tiny-bert seed=3\n      ValueError: boom" in text
    assert f"tunelab-compare --study st1 --tracking-uri {uri} --metric val/loss" in text


def test_sweep_ends_with_its_ranked_jobs_failures_and_compare_command(tmp_path):
    """Two jobs train, the bias-free model's bitfit job is a config error: the sweep's summary
    ranks the runs, names the failure, and the command exits 2 with one line for it."""
    proc = run_cli(["tunelab-train", "-m", *FAST, "model=tiny-bert,tiny-llama",
                    "adapter=bitfit,lora"], cwd=tmp_path, env={"HYDRA_FULL_ERROR": "0"})
    out = proc.stdout
    assert proc.returncode == 2, proc.stderr[-3000:]
    uri, client = store(tmp_path)
    runs = train_runs(client)
    [parent] = train_runs(client, kind="sweep")
    assert len(runs) == 3
    for n in range(4):
        assert re.search(rf"sweep \w+: job {n} \({n + 1} of 4\) starting: model=", proc.stdout +
                         proc.stderr)
    order = sorted(runs, key=lambda r: -r.data.metrics["val/acc"])
    rows = [ln.split() for ln in out.splitlines() if re.match(r"  [123] ", ln)]
    assert [r[3] for r in rows] == [r.info.run_id for r in order]
    assert all(r[4] == "FINISHED" and r[5].startswith("model=") and r[6].startswith("adapter=")
               for r in rows), "only the overrides that tell the jobs apart"
    assert f"parent run {parent.info.run_id}" in out
    assert f"best (max val/acc): {order[0].info.run_name} ({order[0].info.run_id})" in out
    assert re.search(r"job 2: model=tiny-llama .*adapter=bitfit\n +ConfigError: "
                     r"adapter='bitfit': model=tiny-llama \(llama\) has no bias terms", out)
    assert f"tunelab-compare --experiment tunelab --tracking-uri {uri} --metric val/acc" in out
    assert f"/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}?workflowType=" \
        "machine_learning" in out
    assert "tunelab-train: error: adapter='bitfit'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_tokenizing_says_what_it_does_and_a_cache_hit_says_so(tiny_cfg, caplog):
    caplog.set_level(logging.INFO, logger="tunelab.data.datamodule")
    cfg = tiny_cfg("data.synthetic.train_size=64", "data.synthetic.eval_size=32")
    prepared_data(cfg)
    assert re.search(r"tokenizing train: \d+ rows \(.*tokenized", caplog.text)
    assert "tokenized splits ready in" in caplog.text
    caplog.clear()
    prepared_data(cfg)
    assert re.search(r"reading tokenized train: \d+ rows", caplog.text)
    assert "tokenizing train" not in caplog.text


def test_reading_a_gguf_file_logs_before_and_after_with_seconds(caplog):
    """SmolLM2's GGUF config alone takes seconds to read (its weights tens of seconds)."""
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF
    from tunelab import models
    from tunelab.config import check_config

    caplog.set_level(logging.INFO, logger="tunelab.models.loading")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = check_config(compose("train", overrides=["model=smollm2-135m"]))
    models.skeleton(cfg.model, cfg.task)
    said = f"smollm2-135m: reading the config from {cfg.model.gguf_file}"
    assert f"{said} ..." in caplog.text
    assert re.search(rf"{re.escape(said)}: done in \d+\.\d s", caplog.text)
