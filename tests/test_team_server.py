"""The team setup as the README gives it: a real PostgreSQL (Debian's `postgresql` package, a
throwaway cluster on 127.0.0.1) behind a real `mlflow server`. A parallel joblib sweep writes to it
and loses no run, metric or artifact; a run killed mid-fit resumes into the same run on it."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import free_port, mlflow_server, run_cli, train_runs
from tests.test_reliability import RESUMABLE, start, wait_for_checkpoint
from tests.test_sweeps import FAST, JOBLIB, assert_complete

PASSWORD = "tunelab-test"


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = found[-1] if found else shutil.which("initdb")
    if initdb is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found: apt-get install -y postgresql")
    return Path(initdb).parent


def _as_postgres_user(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as Debian's `postgres` user."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A fresh cluster on 127.0.0.1 with database and user `mlflow` (password auth), for this
    module only; yields the backend-store URI the README tells teams to use."""
    bin_dir, port = _postgres_bin(), free_port()
    folder = Path(tempfile.mkdtemp(prefix="tunelab-pg-"))   # not under root's private tmp_path
    (folder / "pw").write_text(PASSWORD)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        shutil.chown(folder / "pw", "postgres")

    def pg(*args: str) -> None:
        subprocess.run(_as_postgres_user([*args]), check=True, capture_output=True, cwd=folder)
    pg(str(bin_dir / "initdb"), "-D", str(folder / "data"), "-U", "mlflow", "-E", "UTF8",
       f"--pwfile={folder / 'pw'}", "--auth=scram-sha-256")
    pg(str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-l", str(folder / "log"), "-w",
       "-o", f"-h 127.0.0.1 -p {port} -k {folder}", "start")
    try:
        env = {**os.environ, "PGPASSWORD": PASSWORD}
        subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                        "mlflow", "mlflow"], check=True, capture_output=True, env=env)
        yield f"postgresql+psycopg://mlflow:{PASSWORD}@127.0.0.1:{port}/mlflow"
    finally:
        pg(str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """`mlflow server` over that database, as the README starts it; yields its URI and the
    folder it stores artifacts in."""
    artifacts = tmp_path_factory.mktemp("artifacts")
    with mlflow_server(postgres, artifacts, artifacts.parent / "mlflow-server.log",
                       workers=2) as uri:
        yield uri, artifacts


def test_parallel_sweep_on_postgres_loses_no_run_metric_or_artifact(server, tmp_path):
    uri, artifacts = server
    proc = run_cli(["tunelab-train", "-m", *JOBLIB, "seed=0,1", *FAST, f"tracking.uri={uri}",
                    "tracking.experiment=team-sweep"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(uri)
    runs = train_runs(client, "team-sweep")
    assert sorted(int(r.data.params["seed"]) for r in runs) == [0, 1]
    for run in runs:
        assert_complete(client, run)
        listed = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config", "weights"} <= listed, listed
        assert {"config/config.yaml", "config/overrides.yaml"} <= \
            {a.path for a in client.list_artifacts(run.info.run_id, "config")}
    [parent] = train_runs(client, "team-sweep", kind="sweep")
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    assert parent.info.status == "FINISHED"
    assert len(list(artifacts.rglob("config.yaml"))) >= 2, "the server stores the artifacts"
    assert not (tmp_path / "mlruns").exists(), "nothing went to the embedded store"


def test_run_killed_mid_fit_resumes_into_the_same_run_on_postgres(server, tmp_path):
    uri, _ = server
    overrides = [*RESUMABLE, "adapter=lora", f"tracking.uri={uri}",
                 "tracking.experiment=team-resume"]
    proc = start(["tunelab-train", *overrides], tmp_path)
    wait_for_checkpoint(proc, tmp_path)
    time.sleep(0.5)         # let it run on past the checkpoint: those steps are replayed
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    client = MlflowClient(uri)
    [killed] = train_runs(client, "team-resume")
    assert killed.info.status == "RUNNING", "SIGKILL leaves the run abandoned"

    again = run_cli(["tunelab-train", *overrides], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Restored all states from the checkpoint" in again.stderr, "resumed, not retrained"
    [run] = train_runs(client, "team-resume")
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert run.data.tags["tunelab.resumed"] == "true"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert sorted(steps) == list(range(10, 81, 10)), "every logged step once, none lost"
    assert "weights" in {a.path for a in client.list_artifacts(run.info.run_id)}
