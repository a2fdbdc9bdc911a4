"""Hardware profiles: every profile composes and builds its Trainer arguments without a GPU; a real
two-process gloo DDP sweep from the shell gives one MLflow run per job, no stray folders, and the
same result as one process; a sweep runs through the Ray preset on a local Ray head."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from mlflow import MlflowClient

from tests.conftest import CONF, run_cli, train_runs
from tunelab import hardware
from tunelab.config import check_config
from tunelab.hardware.launch import RANK_CONFIG, JobDDPStrategy, JobFSDPStrategy, RankCommand

# The DDP sweep. The training set is one global batch (32), so every optimizer step of either
# hardware sees all of it: on one process as one batch of 32, on two as 16 per rank, and DDP's
# gradient all-reduce (mean of the two rank means) is the gradient of the same 32 examples. With
# the same seed (same initial weights, rank 0's broadcast) and the model's dropout off, the two runs
# are the same computation but for float summation order, so their whole train/loss trajectory and
# final val/loss agree to FLOAT_TOL. LoRA keeps its own dropout (0.1; `adapter.dropout` does not
# exist on adapter=full, so one sweep cannot switch it off), and each process draws its own masks:
# there the runs agree within DROPOUT_TOL (measured 2e-4 apart; LoRA's loss moves 0.03 in
# 30 steps). Both in fp32: hardware=cpu trains in bf16 on a CPU that has it, cpu-ddp in fp32.
SWEEP = ["model=tiny-bert", "hardware.precision=32-true", "trainer.max_steps=30",
         "trainer.max_epochs=null", "trainer.val_check_interval=30",
         "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1", "optim.lr=2e-3",
         "data.synthetic.train_size=32", "data.synthetic.eval_size=64", "data.batch_size=32",
         "data.max_length=32",
         "++model.config.hidden_dropout_prob=0.0",
         "++model.config.attention_probs_dropout_prob=0.0"]
FLOAT_TOL, DROPOUT_TOL = 2e-3, 1e-2


def hw_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return check_config(compose("train", overrides=["model=tiny-bert", *overrides]))


def fake_cpu_bf16(monkeypatch, avx512_bf16: bool, amx: bool = False) -> None:
    """The CPU's bf16 instructions as torch reports them, faked; nothing else is."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)


# ---- profiles without a GPU (real Trainers for the GPU profiles: tests/test_distributed.py) ----
@pytest.mark.parametrize("name, accelerator, precision, strategy, world", [
    ("cpu", "cpu", "32-true", str, 1),
    ("cpu-ddp", "cpu", "32-true", JobDDPStrategy, 2),
    ("gpu", "gpu", "16-mixed", str, 1),
    ("multi-gpu", "gpu", "16-mixed", JobDDPStrategy, 1),
    ("fsdp", "gpu", "16-mixed", JobFSDPStrategy, 1),
    ("auto", "cpu", "32-true", str, 1),
])
def test_profile_composes_and_builds_trainer_kwargs(tmp_path, monkeypatch, name, accelerator,
                                                    precision, strategy, world):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)     # also on a GPU machine
    fake_cpu_bf16(monkeypatch, avx512_bf16=False)                      # a CPU without bf16
    cfg = hw_cfg(f"hardware={name}")
    kwargs = hardware.trainer_kwargs(cfg.hardware, cfg.trainer, cfg, tmp_path)
    assert cfg.hardware.name == name
    assert (kwargs["accelerator"], kwargs["precision"]) == (accelerator, precision)
    assert isinstance(kwargs["strategy"], strategy)
    if strategy is not str:
        assert kwargs["strategy"].command.run_dir == tmp_path
        assert kwargs["strategy"]._process_group_backend == cfg.hardware.process_group_backend
    params = hardware.profile_params(cfg.hardware, cfg.trainer, cfg.data.batch_size)
    assert params["hardware.world_size"] == world
    assert params["hardware.per_device_batch"] * world == cfg.data.batch_size
    assert params["hardware.resolved.accelerator"] == accelerator
    assert params["hardware.resolved.precision"] == precision


@pytest.mark.parametrize("avx512_bf16, amx, native", [(True, False, "bf16-mixed"),
                                                     (False, True, "bf16-mixed"),
                                                     (False, False, "32-true")])
def test_cpu_profiles_train_in_bf16_where_the_cpu_has_it(monkeypatch, avx512_bf16, amx, native):
    """hardware=cpu and auto pick bf16 autocast on a CPU with bf16 instructions (AVX-512 BF16 or
    AMX: as accurate as fp32 and faster, bench/RESULTS.md), fp32 elsewhere, decided where the
    Trainer is built and recorded as hardware.resolved.precision; a precision the user names
    wins either way. cpu-ddp stays fp32 (not measured there)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fake_cpu_bf16(monkeypatch, avx512_bf16, amx)
    for name in ("cpu", "auto"):
        for overrides, expected in (((), native), (("hardware.precision=32-true",), "32-true"),
                                    (("trainer.precision=32-true",), "32-true"),
                                    (("hardware.precision=bf16-mixed",), "bf16-mixed")):
            cfg = hw_cfg(f"hardware={name}", *overrides)
            assert hardware.trainer_kwargs(cfg.hardware, cfg.trainer)["precision"] == expected
            params = hardware.profile_params(cfg.hardware, cfg.trainer, cfg.data.batch_size)
            assert params["hardware.resolved.precision"] == expected, (name, overrides)
    ddp = hw_cfg("hardware=cpu-ddp")
    assert hardware.trainer_kwargs(ddp.hardware, ddp.trainer)["precision"] == "32-true"


def test_gpu_precision_and_batch_split_follow_the_devices(tmp_path, monkeypatch):
    """On a machine that shows CUDA: bf16 where supported, else fp16; `devices=auto` counts the
    GPUs and the global batch splits over GPUs x nodes x accumulation."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    cfg = hw_cfg("hardware=multi-gpu", "hardware.num_nodes=2", "data.batch_size=64",
                 "trainer.accumulate_grad_batches=2")
    assert hardware.precision(cfg.hardware, cfg.trainer.precision) == "bf16-mixed"
    assert hardware.world_size(cfg.hardware) == 8
    assert hardware.per_device_batch(64, cfg.hardware, 2) == 4
    auto = hw_cfg("hardware=auto")
    assert hardware.accelerator(auto.hardware) == "gpu"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert hardware.precision(cfg.hardware, cfg.trainer.precision) == "16-mixed"
    assert hardware.precision(cfg.hardware, "32-true") == "32-true"     # an explicit choice wins


def test_rank_command_reenters_the_same_job(tmp_path):
    """Ranks > 0 compose the job's frozen config in run mode: the same checked config, no sweep."""
    cfg = hw_cfg("hardware=cpu-ddp", "adapter=full", "seed=3")
    command = RankCommand(cfg, tmp_path / "job")
    command.write()
    argv = command.argv(1)
    assert argv[1:3] == ["-m", "tunelab.train"] and "-m" not in argv[3:]
    assert f"hydra.run.dir='{tmp_path / 'job'}'" in argv
    with initialize_config_dir(config_dir=str(tmp_path / "job"), version_base="1.3"):
        again = check_config(compose(Path(RANK_CONFIG).stem))
    assert again == cfg


def test_distributed_job_leaves_the_process_clean():
    """A sequential sweep's next job must not inherit the last job's rank variables, process
    group or thread count."""
    before = {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")}
    threads = torch.get_num_threads()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with hardware.distributed_job():
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK="0")
        torch.distributed.init_process_group("gloo", rank=0, world_size=1)
        torch.set_num_threads(1)
        assert torch.distributed.is_initialized()
    assert not torch.distributed.is_initialized()
    assert {k: os.environ.get(k) for k in before} == before
    assert torch.get_num_threads() == threads


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
                    reason="hydra-submitit-launcher not installed (pip install -e '.[all]')")
def test_slurm_preset_composes_to_a_submitit_launcher(tmp_path):
    overrides = ["+launcher=slurm", "hardware=multi-gpu", "hardware.devices=4",
                 "hardware.num_nodes=2"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
        check_config(compose("train", overrides=overrides))    # the preset adds no run keys
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert get_class(launcher._target_).__name__ == "SlurmLauncher"   # the plugin is there


# ---- a real DDP sweep from the shell ----------------------------------------------------------
@pytest.fixture(scope="module")
def ddp_sweep(tmp_path_factory):
    """`tunelab-train -m hardware=cpu,cpu-ddp adapter=full,lora`, run once for the tests below."""
    cwd = tmp_path_factory.mktemp("ddp_sweep")
    proc = run_cli(["tunelab-train", "-m", "hardware=cpu,cpu-ddp", "adapter=full,lora", *SWEEP],
                   cwd, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    client = MlflowClient(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")
    return cwd, client, train_runs(client)


def test_ddp_sweep_gives_one_run_per_job(ddp_sweep):
    cwd, client, runs = ddp_sweep
    jobs = sorted((r.data.params["hardware.name"], r.data.params["adapter.name"]) for r in runs)
    assert jobs == [("cpu", "full"), ("cpu", "lora"), ("cpu-ddp", "full"), ("cpu-ddp", "lora")]
    assert len({r.data.tags["tunelab.config_hash"] for r in runs}) == 4
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags["tunelab.sweep_id"] for r in runs}) == 1
    assert len(train_runs(client, kind="sweep")) == 1
    for run in runs:
        ddp = run.data.params["hardware.name"] == "cpu-ddp"
        assert run.data.params["hardware.world_size"] == ("2" if ddp else "1")
        assert run.data.params["hardware.per_device_batch"] == ("16" if ddp else "32")
        assert run.data.params["hardware.resolved.strategy"] == ("ddp" if ddp else "single_device")
        assert run.data.metrics["perf/train_samples_per_sec"] > 0
        # One writer per step: a second rank logging would leave two values at some step.
        history = client.get_metric_history(run.info.run_id, "train/loss")
        assert len({m.step for m in history}) == len(history)


def test_ddp_sweep_leaves_no_stray_folders(ddp_sweep):
    cwd, _, _ = ddp_sweep
    assert not (cwd / "outputs").exists()        # the relaunch used to write a run folder
    sweeps = list((cwd / "multirun").glob("*/*"))
    assert len(sweeps) == 1
    jobs = sorted(p.name for p in sweeps[0].iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0", "1", "2", "3"]
    ranked = sorted(p.parent.name for p in sweeps[0].glob("*/rank1.log"))
    assert ranked == ["2", "3"]                  # rank 1 ran inside its own job's folder, once


def test_cpu_ddp_matches_one_process(ddp_sweep):
    _, client, runs = ddp_sweep
    by_job = {(r.data.params["hardware.name"], r.data.params["adapter.name"]): r for r in runs}

    def losses(run) -> list[float]:
        history = client.get_metric_history(run.info.run_id, "train/loss")
        return [m.value for m in sorted(history, key=lambda m: m.step)]

    for adapter, tol in (("full", FLOAT_TOL), ("lora", DROPOUT_TOL)):
        one, two = by_job[("cpu", adapter)], by_job[("cpu-ddp", adapter)]
        curve_one, curve_two = losses(one), losses(two)
        assert len(curve_one) == len(curve_two) == 30
        assert curve_one[-1] < curve_one[0] - 2 * tol          # it learned: the curve is not flat
        gap = max(abs(a - b) for a, b in zip(curve_one, curve_two))
        assert gap <= tol, (adapter, gap, curve_one, curve_two)
        val_one, val_two = one.data.metrics["val/loss"], two.data.metrics["val/loss"]
        assert abs(val_one - val_two) <= tol, (adapter, val_one, val_two)


# ---- a sweep on a local Ray head ---------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray not installed")
def test_ray_preset_runs_a_sweep_on_a_ray_head(tmp_path):
    ray = str(Path(sys.executable).parent / "ray")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    # --block keeps `ray start` in the foreground, so this head (and only this one: `ray stop`
    # would stop every Ray instance on the machine) stops when its process is terminated.
    head = subprocess.Popen([ray, "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_ray(ray, f"127.0.0.1:{port}", env)
        proc = run_cli(["tunelab-train", "-m", "+launcher=ray",
                        f"hydra.launcher.address=127.0.0.1:{port}", "adapter=full,lora",
                        *SWEEP, "trainer.max_steps=3", "trainer.val_check_interval=3"],
                       tmp_path, timeout=600)
    finally:
        head.terminate()
        head.wait(timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = train_runs(client)
    assert sorted(r.data.params["adapter.name"] for r in runs) == ["full", "lora"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    parent = train_runs(client, kind="sweep")
    assert len(parent) == 1
    assert {r.data.tags.get("mlflow.parentRunId") for r in runs} == {parent[0].info.run_id}
    assert all("val/loss" in r.data.metrics for r in runs)
    assert sorted(p.name for p in (tmp_path / "multirun").glob("*/*/[0-9]")) == ["0", "1"]


def wait_for_ray(ray: str, address: str, env: dict, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while subprocess.run([ray, "health-check", f"--address={address}"], env=env,
                         capture_output=True, timeout=60).returncode != 0:
        assert time.monotonic() < deadline, f"no Ray head at {address} after {timeout}s"
        time.sleep(2)
