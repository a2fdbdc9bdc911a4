"""Real multiruns from the shell, as a user types them."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from tests.conftest import TINY, run_cli, train_runs


def test_multirun_gives_one_finished_run_per_job_under_one_sweep(tmp_path):
    args = ["tunelab-train", "-m", "adapter=full,lora", "seed=0,1", *TINY,
            "trainer.max_steps=20"]
    proc = run_cli(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = train_runs(client)
    assert len(runs) == 4
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.info.run_name for r in runs} == {f"tiny-bert-{a}-sentiment-cpu-s{s}"
                                               for a in ("full", "lora") for s in (0, 1)}
    [parent] = train_runs(client, kind="sweep")
    sweep_ids = {r.data.tags["tunelab.sweep_id"] for r in runs}
    assert sweep_ids == {parent.data.tags["tunelab.sweep_id"]}
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    assert parent.info.status == "FINISHED"
    assert (tmp_path / "mlruns" / "artifacts").is_dir(), "artifacts live beside the SQLite store"

    rerun = run_cli(args, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert len(train_runs(client)) == 4, "a rerun of a finished sweep trains nothing again"
    assert "already has FINISHED run" in rerun.stdout + rerun.stderr


def test_bad_override_fails_before_any_run_is_recorded(tmp_path):
    proc = run_cli(["tunelab-train", *TINY, "optim.lr=-1"], cwd=tmp_path)
    assert proc.returncode != 0
    assert "optim.lr=-1.0: a learning rate > 0" in proc.stderr
    assert not (tmp_path / "mlruns" / "mlflow.db").exists() or \
        not train_runs(MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"))


@pytest.mark.parametrize("args, message, full_error", [
    (["adapter=lorra"], "tunelab-train: error: adapter='lorra': one of the options of config "
                        "group 'adapter': bitfit, dora, full, head, ", "0"),
    (["adapter=lorra"], "tunelab-train: error: adapter='lorra': one of the options", "1"),
    (["model=tiny-llama", "adapter=bitfit"],
     "tunelab-train: error: adapter='bitfit': model=tiny-llama (llama) has no bias terms", "1"),
    (["optim.lrr=1"], "tunelab-train: error: Could not override 'optim.lrr'; "
                      "Key 'lrr' is not in struct; To append to your config use +optim.lrr=1", "0"),
])
def test_config_error_is_one_line_and_exit_2(tmp_path, args, message, full_error):
    """Hydra's composition errors and tunelab's ConfigError alike end in one line and exit 2,
    with no run recorded; a traceback (and Hydra's 'Error executing job') only when the user set
    HYDRA_FULL_ERROR=1."""
    proc = run_cli(["tunelab-train", *TINY, *args], cwd=tmp_path,
                   env={"HYDRA_FULL_ERROR": full_error})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert message in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("tunelab-train: error: ")
    if full_error == "1":       # the user asked for the whole story: traceback above the line
        assert "Traceback" in proc.stderr
    else:
        assert "Traceback" not in proc.stderr and "Error executing job" not in proc.stderr
        assert [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()] == \
            [ln for ln in proc.stderr.splitlines() if ln.startswith("tunelab-train: error: ")]
    assert not train_runs(MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"))
