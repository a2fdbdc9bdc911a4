"""Sweeps as users launch them: presets, the joblib launcher, Optuna, a killed and resumed sweep,
a failing job, two sweeps writing one SQLite store at once, and a real `mlflow server`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import mlflow.entities
import pytest
import yaml
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from tests.conftest import CONF, TINY, kill_once_a_run_finishes, mlflow_server, run_cli, train_runs
from tunelab.config import check_config
from tunelab.tracking.store import client_for

# A job in a few seconds: 4 optimizer steps, every step logged, so a history is easy to count.
STEPS = 4
FAST = [*TINY, f"trainer.max_steps={STEPS}", "data.synthetic.train_size=64",
        "data.synthetic.eval_size=32", "data.batch_size=16", "trainer.log_every_n_steps=1"]
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]


def store(tmp_path: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")


def compose_global(overrides: list[str], with_hydra: bool = True):
    """The composed config; with its `hydra` node to read the sweep, without it to check a job."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=with_hydra)


def assert_complete(client: MlflowClient, run) -> None:
    """A run that lost nothing: finished, every train step and the final validation recorded."""
    assert run.info.status == "FINISHED", run.data.tags.get("tunelab.error")
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, STEPS + 1))
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")] == [STEPS]
    assert run.data.params["model.name"] == "tiny-bert"
    assert {d.dataset.name for d in run.inputs.dataset_inputs} >= {"sentiment-train"}


def test_presets_compose_into_their_sweeps():
    cfg = compose_global(["experiment=peft-vs-full"])
    params = dict(cfg.hydra.sweeper.params)
    assert params == {"adapter": "full,lora,prefix", "seed": "0,1,2"}
    for adapter in params["adapter"].split(","):
        job = check_config(compose_global(["experiment=peft-vs-full", f"adapter={adapter}"],
                                          with_hydra=False))
        assert (job.model.name, job.task.name, job.adapter.name) == ("minilm", "sentiment", adapter)
        assert job.model.gradient_checkpointing is False

    cfg = compose_global(["experiment=encoder-vs-decoder"])
    arms = cfg.hydra.sweeper.params["+experiment/arms"].split(",")
    picked = {}
    for arm in arms:
        job = check_config(compose_global(["experiment=encoder-vs-decoder",
                                           f"+experiment/arms={arm}"], with_hydra=False))
        picked[arm] = (job.model.name, job.model.family, job.task.head, job.adapter.name,
                       job.task.name)
    assert picked == {
        "encoder-classifier": ("minilm", "encoder", "classifier", "full", "sentiment"),
        "decoder-lora": ("smollm2-135m", "decoder", "generate", "lora", "sentiment")}

    search = compose_global(["hparams_search=lr_rank"])
    assert search.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert search.hydra.sweeper.direction == "maximize"      # task.mode=max for sentiment
    assert set(search.hydra.sweeper.params) == {"optim.lr", "adapter.r"}


def test_killed_preset_sweep_reruns_only_what_is_missing(tmp_path):
    """experiment=peft-vs-full on tiny-bert, one seed: SIGKILL the sweep once its first job has
    finished, run the same command again, and only the missing configs train."""
    args = ["tunelab-train", "-m", "experiment=peft-vs-full", "seed=0", *FAST]
    kill_once_a_run_finishes(args, tmp_path, tmp_path / "first.log")
    client = store(tmp_path)
    before = {r.info.run_id: r for r in train_runs(client)}
    finished = {i for i, r in before.items() if r.info.status == "FINISHED"}
    assert 1 <= len(finished) < 3, (tmp_path / "first.log").read_text()[-3000:]

    rerun = run_cli(args, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    runs = train_runs(client)
    assert len(runs) == 3, "one run per config: full, lora and prefix at seed 0"
    assert {r.data.params["adapter.name"] for r in runs} == {"full", "lora", "prefix"}
    assert len({r.data.tags["tunelab.config_hash"] for r in runs}) == 3
    assert {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        if run.info.run_id in finished:     # skipped, not trained again
            assert run.info.end_time == before[run.info.run_id].info.end_time
        elif run.info.run_id in before:     # killed mid-fit: resumed into the same run
            assert run.data.tags.get("tunelab.resumed") == "true"
    out = rerun.stdout + rerun.stderr
    assert out.count("already has FINISHED run") == len(finished)
    [parent] = train_runs(client, kind="sweep")
    assert parent.info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    assert {r.data.tags["tunelab.sweep_id"] for r in runs} == {parent.data.tags["tunelab.sweep_id"]}


def test_failing_job_does_not_stop_the_others_and_is_named(tmp_path):
    """Job 1 is rejected before it loads anything (data.max_length over tiny-bert's 256); its
    ConfigError must come back from the joblib worker without breaking the pool."""
    proc = run_cli(["tunelab-train", "-m", *JOBLIB, *FAST, "data.max_length=32,999"],
                   cwd=tmp_path)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "these jobs failed" in out
    assert re.search(r"job 1: .*data\.max_length=999", out)
    assert "ConfigError: data.max_length=999: at most 256" in out
    client = store(tmp_path)
    [run] = train_runs(client)
    assert run.data.params["data.max_length"] == "32"
    assert_complete(client, run)
    [parent] = train_runs(client, kind="sweep")
    assert parent.info.status == "FAILED"
    assert parent.data.tags["tunelab.failed_jobs"] == "1"


def test_optuna_search_records_its_trials_and_resumes_from_its_database(tmp_path):
    """hparams_search=lr_rank on tunelab's Optuna sweeper; the same search asked for one trial
    more continues its stored study: the 3 finished trials are neither rerun nor sampled again."""
    searchable = [arg for arg in FAST if not arg.startswith("optim.lr=")]  # a fixed lr wins
    command = ["tunelab-train", "-m", "hparams_search=lr_rank", *searchable]
    proc = run_cli([*command, "hydra.sweeper.n_trials=3"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = store(tmp_path)
    runs = train_runs(client)
    assert len(runs) == 3
    assert len({r.data.params["optim.lr"] for r in runs}) == 3
    assert {int(r.data.params["adapter.r"]) for r in runs} <= {4, 8, 16, 32}
    [parent] = train_runs(client, kind="sweep")
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    [results] = tmp_path.glob("multirun/*/*/optimization_results.yaml")
    best = yaml.safe_load(results.read_text())
    assert best["best_value"] == pytest.approx(max(r.data.metrics["val/acc"] for r in runs))

    proc = run_cli([*command, "hydra.sweeper.n_trials=4"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "3 of 4 trials already complete" in proc.stdout + proc.stderr
    again = {r.info.run_id: r for r in train_runs(client)}
    assert len(again) == 4
    assert all(again[r.info.run_id].info.end_time == r.info.end_time for r in runs)
    assert len({r.data.params["optim.lr"] for r in again.values()}) == 4
    assert (tmp_path / "mlruns" / "optuna.db").is_file()


def test_two_parallel_sweeps_on_one_sqlite_store_lose_nothing(tmp_path):
    exe = Path(sys.executable).parent / "tunelab-train"
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    procs = [subprocess.Popen([str(exe), "-m", *JOBLIB, f"seed={seeds}", *FAST,
                               f"hydra.sweep.dir=multirun/{name}"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name, seeds in (("a", "0,1"), ("b", "2,3"))]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, out in zip(procs, outs):
        assert proc.returncode == 0, out[-3000:]
    client = store(tmp_path)
    runs = train_runs(client)
    assert sorted(int(r.data.params["seed"]) for r in runs) == [0, 1, 2, 3]
    for run in runs:
        assert_complete(client, run)
    parents = train_runs(client, kind="sweep")
    assert len(parents) == 2 and {p.info.status for p in parents} == {"FINISHED"}
    assert sorted(r.data.tags["mlflow.parentRunId"] for r in runs) == \
        sorted([p.info.run_id for p in parents] * 2)


def test_parallel_sweep_against_a_real_mlflow_server(tmp_path):
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    with mlflow_server(f"sqlite:///{server_dir / 'mlflow.db'}", server_dir / "artifacts",
                       server_dir / "server.log", workers=1) as uri:
        proc = run_cli(["tunelab-train", "-m", *JOBLIB, "seed=0,1", *FAST,
                        f"tracking.uri={uri}"], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        client = MlflowClient(uri)
        runs = train_runs(client)
        assert sorted(int(r.data.params["seed"]) for r in runs) == [0, 1]
        for run in runs:
            assert_complete(client, run)
            listed = {a.path for a in client.list_artifacts(run.info.run_id, "config")}
            assert "config/config.yaml" in listed
        [parent] = train_runs(client, kind="sweep")
        assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
        assert list((server_dir / "artifacts").rglob("config.yaml")), "the server stores artifacts"
        assert not (tmp_path / "mlruns" / "mlflow.db").exists(), "nothing went to the local store"


def test_runs_logging_the_same_new_dataset_at_once_all_record_it(tmp_path):
    """MLflow looks a dataset up, then inserts it: simultaneous first logs of one dataset collide
    on its unique key (a parallel sweep failed so against a server). Every run must record it."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = client_for(uri)
    experiment = client.create_experiment("race")
    for attempt in range(3):           # a plain MlflowClient loses the race in most attempts
        runs = [client.create_run(experiment).info.run_id for _ in range(6)]
        dataset = mlflow.entities.Dataset(name=f"data-{attempt}", digest="d1", source_type="x",
                                          source="{}")
        start, errors = threading.Barrier(len(runs)), []

        def log(run_id: str) -> None:
            own = client_for(uri)
            start.wait()
            try:
                own.log_inputs(run_id, [mlflow.entities.DatasetInput(dataset)])
            except Exception as err:          # noqa: BLE001 (collected to report)
                errors.append(err)

        threads = [threading.Thread(target=log, args=(run_id,)) for run_id in runs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors[0]
        recorded = [client.get_run(r).inputs.dataset_inputs for r in runs]
        assert all(len(inputs) == 1 for inputs in recorded)
        assert {(i[0].dataset.name, i[0].dataset.digest) for i in recorded} == \
            {(f"data-{attempt}", "d1")}
