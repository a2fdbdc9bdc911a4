"""Real training processes killed, interrupted and re-run: resume into the same MLflow run with the
same numbers, Ctrl-C ends KILLED, a bad group option fails fast, and `tunelab-reproduce`."""

from __future__ import annotations

import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from tests.conftest import TINY, compose_cfg, run_cli, train_runs
from tunelab.models.module import TuneModule
from tunelab.reproduce import compare
from tunelab.tracking.logger import RunLogger
from tunelab.train import train

# 30 batches an epoch, a checkpoint every 25 steps: every resume point (25, 50, 75) is mid-epoch,
# and a resumed run still crosses epoch boundaries (30, 60) with their validations.
RESUMABLE = [*TINY, "data.synthetic.train_size=960", "trainer.max_steps=80",
             "trainer.checkpoint_every_n_steps=25"]
BATCHES_PER_EPOCH = 30
EXACT = 1e-6    # metrics go through MLflow as float64 of float32 values: equal runs are equal here


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    """A console script as a user starts it, its output in cwd/<script>.log (no pipe to fill)."""
    cwd.mkdir(parents=True, exist_ok=True)
    log = open(cwd / f"{args[0]}.log", "ab")
    exe = Path(sys.executable).parent / args[0]
    return subprocess.Popen([str(exe), *args[1:]], cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "HYDRA_FULL_ERROR": "1"})


def wait_for_checkpoint(proc: subprocess.Popen, cwd: Path, timeout: float = 600) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(cwd.glob("checkpoints/*/last.ckpt"))
        if found:
            return found[0]
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    log = (cwd / "tunelab-train.log").read_text()[-3000:]
    pytest.fail(f"no checkpoint appeared (exit {proc.returncode}):\n{log}")


def store(cwd: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")


def assert_same_histories(client, run, ref_client, reference) -> None:
    """The resumed run recorded the same steps with the same values as the uninterrupted one."""
    for key in ("train/loss", "val/loss", "val/acc"):
        resumed = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        expected = sorted((m.step, m.value) for m in
                          ref_client.get_metric_history(reference.info.run_id, key))
        assert [s for s, _ in resumed] == [s for s, _ in expected], key
        assert [v for _, v in resumed] == pytest.approx([v for _, v in expected], abs=EXACT), key


def test_sigkill_mid_epoch_resumes_into_the_same_run_with_the_same_metrics(tiny_cfg, client,
                                                                          tmp_path):
    overrides = [*RESUMABLE, "adapter=lora"]
    train(tiny_cfg(*overrides[len(TINY):]))
    [reference] = train_runs(client)

    cwd = tmp_path / "cli"
    proc = start(["tunelab-train", *overrides], cwd)
    ckpt_path = wait_for_checkpoint(proc, cwd)
    time.sleep(0.5)         # let it run on past the checkpoint: those steps are replayed
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    [killed] = train_runs(store(cwd))
    assert killed.info.status == "RUNNING", "SIGKILL leaves the run abandoned"

    ckpt = torch.load(ckpt_path, weights_only=True, map_location="cpu")
    assert ckpt["global_step"] % BATCHES_PER_EPOCH != 0, "the resume point is mid-epoch"
    saved = set(ckpt["state_dict"])
    assert saved and all("lora_" in k or "classifier" in k or "val_best" in k for k in saved), \
        sorted(saved)[:10]
    base_bytes = 4 * reference.data.metrics["params/total"]
    lora_ckpt = ckpt_path.stat().st_size
    assert lora_ckpt < 0.1 * base_bytes, "a LoRA checkpoint holds the adapter, not the base"

    again = run_cli(["tunelab-train", *overrides], cwd=cwd)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Restored all states from the checkpoint" in again.stderr, "resumed, not retrained"
    [run] = train_runs(store(cwd))
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert run.data.tags["tunelab.resumed"] == "true"
    assert not ckpt_path.parent.exists(), "checkpoints go once the run has finished"
    for key in run.data.metrics:
        steps = [m.step for m in store(cwd).get_metric_history(run.info.run_id, key)]
        assert len(steps) == len(set(steps)), f"{key} recorded a step twice: {steps}"
    assert_same_histories(store(cwd), run, client, reference)
    for key, value in reference.data.metrics.items():
        if key.startswith(("train/", "val/", "test/", "params/")):
            assert run.data.metrics[key] == pytest.approx(value, abs=EXACT), key


def crash_then_resume(tiny_cfg, client, tmp_path, monkeypatch, crash, lost_step=None):
    """A run in the reference store, then the same run crashed by `crash` (patched in),
    optionally with one recorded train/loss step deleted, as a write MLflow's pool of threads
    never finished. Returns (crashed checkpoint step, resumed run, reference run, its client)."""
    overrides = [*RESUMABLE[len(TINY):], "adapter=lora"]
    ref_client = MlflowClient(f"sqlite:///{tmp_path / 'reference/mlruns/mlflow.db'}")
    train(compose_cfg([*TINY, *overrides], tmp_path / "reference"))
    [reference] = train_runs(ref_client)

    with monkeypatch.context() as patch:
        crash(patch)
        with pytest.raises(RuntimeError, match="went away"):
            train(tiny_cfg(*overrides))
    [crashed] = train_runs(client)
    assert crashed.info.status == "FAILED"
    [ckpt_path] = (tmp_path / "checkpoints").glob("*/last.ckpt")
    resume_step = torch.load(ckpt_path, weights_only=True, map_location="cpu")["global_step"]
    if lost_step is not None:
        with sqlite3.connect(tmp_path / "mlruns" / "mlflow.db") as db:
            db.execute("DELETE FROM metrics WHERE run_uuid = ? AND key = 'train/loss' AND step = ?",
                       (crashed.info.run_id, lost_step))

    train(tiny_cfg(*overrides))
    [run] = train_runs(client)
    assert run.info.run_id == crashed.info.run_id and run.info.status == "FINISHED"
    return resume_step, run, reference, ref_client


def test_a_checkpoint_is_not_the_resume_point_until_its_steps_metrics_are_recorded(
        tiny_cfg, client, tmp_path, monkeypatch):
    """Lightning saves step 50's checkpoint before it logs step 50's metrics: a process that dies
    in between resumes from step 25 and records step 50, instead of resuming past it."""
    log = RunLogger.log_metrics

    def dies_before_step_50_lands(self, metrics, step=None):
        if self.trainer.global_step == 50 and "train/loss" in metrics:
            raise RuntimeError("the machine went away")
        return log(self, metrics, step)

    resume_step, run, reference, ref_client = crash_then_resume(
        tiny_cfg, client, tmp_path, monkeypatch,
        lambda patch: patch.setattr(RunLogger, "log_metrics", dies_before_step_50_lands))
    assert resume_step == 25
    assert_same_histories(client, run, ref_client, reference)


def test_a_step_lost_in_flight_after_the_checkpoint_is_recorded_on_resume(
        tiny_cfg, client, tmp_path, monkeypatch):
    """MLflow writes asynchronous batches from a pool of threads, so a killed process can leave
    step 70 recorded and step 60 lost: the replay records it, and no step twice."""
    step = TuneModule.training_step

    def dies_at_step_73(self, batch, batch_idx):
        if self.trainer.global_step == 73:
            raise RuntimeError("the machine went away")
        return step(self, batch, batch_idx)

    resume_step, run, reference, ref_client = crash_then_resume(
        tiny_cfg, client, tmp_path, monkeypatch,
        lambda patch: patch.setattr(TuneModule, "training_step", dies_at_step_73), lost_step=60)
    assert resume_step == 50
    assert_same_histories(client, run, ref_client, reference)


def test_ctrl_c_ends_the_run_killed_with_a_nonzero_exit(tmp_path):
    cwd = tmp_path / "cli"
    proc = start(["tunelab-train", *RESUMABLE, "adapter=full", "trainer.max_steps=2000"], cwd)
    ckpt_path = wait_for_checkpoint(proc, cwd)
    full_ckpt = ckpt_path.stat().st_size
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=300) != 0, "Ctrl-C exits non-zero"
    [run] = train_runs(store(cwd))
    assert run.info.status == "KILLED"
    assert run.data.tags["tunelab.error"].startswith("KeyboardInterrupt")
    artifacts = {a.path for a in store(cwd).list_artifacts(run.info.run_id)}
    assert "error.txt" in artifacts
    base_bytes = 4 * run.data.metrics["params/total"]
    assert full_ckpt > 2.5 * base_bytes, "full fine-tuning resumes weights and both Adam moments"


class _InterruptsWhenCollected:
    """An object whose finaliser sends SIGINT: Python ignores the KeyboardInterrupt raised there."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_landing_in_a_finaliser_during_a_checkpoint_write_still_stops_the_run(
        tiny_cfg, client, monkeypatch):
    from tunelab.tracking.checkpoints import StreamedCheckpointIO
    write = StreamedCheckpointIO.save_checkpoint
    saves = []

    def save_then_collect_a_finaliser(self, checkpoint, path, storage_options=None):
        write(self, checkpoint, path, storage_options)
        saves.append(path)
        _InterruptsWhenCollected()      # collected at once: the signal lands in its __del__

    monkeypatch.setattr(StreamedCheckpointIO, "save_checkpoint", save_then_collect_a_finaliser)
    with pytest.raises(SystemExit) as stopped:
        train(tiny_cfg("trainer.max_steps=200", "trainer.checkpoint_every_n_steps=10"))
    assert stopped.value.code == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "handler restored"
    [run] = train_runs(client)
    assert run.info.status == "KILLED"
    assert run.data.tags["tunelab.error"].startswith("KeyboardInterrupt")
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert len(saves) == 1 and max(steps) <= 20, "stopped at the next batch, not at step 200"


def test_checkpoints_stream_to_disk_and_replace_the_last_one_whole(tmp_path):
    """A checkpoint write holds no second copy of the checkpoint in memory (Lightning's own
    save builds it in a BytesIO first), and a write that fails leaves the last checkpoint whole.
    Python-side buffers are what tracemalloc sees, so the copy is measured there (the RSS peak
    is at the mercy of the kernel paging out cold memory)."""
    import tracemalloc

    from lightning.pytorch.plugins.io import TorchCheckpointIO

    from tunelab.tracking.checkpoints import StreamedCheckpointIO

    state = {"weights": torch.ones(16 * 2**20)}        # 64 MB, outside tracemalloc's view
    buffered = {}
    for io in (StreamedCheckpointIO(), TorchCheckpointIO()):
        tracemalloc.start()
        io.save_checkpoint(state, tmp_path / type(io).__name__ / "last.ckpt")
        buffered[type(io).__name__] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    assert buffered["StreamedCheckpointIO"] < 4 < 60 < buffered["TorchCheckpointIO"], buffered
    saved = torch.load(tmp_path / "StreamedCheckpointIO" / "last.ckpt", weights_only=True)
    assert torch.equal(saved["weights"], state["weights"])

    target = tmp_path / "again" / "last.ckpt"
    StreamedCheckpointIO().save_checkpoint({"step": 1}, target)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        StreamedCheckpointIO().save_checkpoint({"step": 2, "unpicklable": lambda: None}, target)
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]


def test_unknown_group_option_from_the_shell_lists_the_options(tmp_path):
    start_time = time.perf_counter()
    proc = run_cli(["tunelab-train", "adapter=loraa"], cwd=tmp_path)
    assert proc.returncode != 0
    assert "adapter/loraa" in proc.stderr
    for option in ("full", "lora"):
        assert f"\t{option}\n" in proc.stderr, proc.stderr[-2000:]
    assert time.perf_counter() - start_time < 120
    assert not (tmp_path / "mlruns" / "mlflow.db").exists(), "nothing is recorded"


def test_reproduce_reruns_a_run_from_its_record_and_reports_a_match(tiny_cfg, client, tmp_path):
    train(tiny_cfg("trainer.max_steps=40"), overrides=["model=tiny-bert", "trainer.max_steps=40"])
    [source] = train_runs(client)
    client.set_tag(source.info.run_id, "tunelab.version.torch", "0.0.1")
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    elsewhere = tmp_path / "elsewhere"     # the record alone: no Hydra output, no working folder
    elsewhere.mkdir()
    proc = run_cli(["tunelab-reproduce", source.info.run_id, "--tracking-uri", uri], cwd=elsewhere)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "metrics match" in proc.stdout
    assert "torch was 0.0.1" in proc.stderr, "a version drift is warned about"

    [rerun] = train_runs(client, kind="reproduce")
    assert rerun.data.tags["tunelab.source_run"] == source.info.run_id
    assert rerun.info.status == "FINISHED" and rerun.info.run_id != source.info.run_id
    assert rerun.data.tags["tunelab.config_hash"] == source.data.tags["tunelab.config_hash"]
    assert rerun.data.tags["tunelab.overrides"] == "model=tiny-bert trainer.max_steps=40"
    assert not rerun.data.params, "only train runs carry the training params"
    assert [r.info.run_id for r in train_runs(client)] == [source.info.run_id]
    for key in ("val/acc", "val/loss", "test/f1", "train/loss"):
        assert rerun.data.metrics[key] == pytest.approx(source.data.metrics[key], abs=EXACT)

    tampered = {**source.data.metrics, "val/acc": source.data.metrics["val/acc"] + 0.01}
    rows = {key: same for key, _, _, same in compare(tampered, rerun.data.metrics)}
    assert rows["val/acc"] is False and rows["val/loss"] is True
