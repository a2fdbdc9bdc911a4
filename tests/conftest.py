"""Shared fixtures: real Hydra composition over conf/, shrunk to tiny models and tiny data, with
every store and cache in tmp_path."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# Small enough for seconds on 2 cores, big enough that tiny-bert learns the generated sentiment.
# fp32, so that the numbers are the same on every CPU: hardware=cpu trains in bf16 where the CPU
# has bf16 instructions (tests/test_perf.py::test_a_default_run_on_a_cpu_with_bf16_trains_in_bf16).
TINY = ["model=tiny-bert", "hardware.precision=32-true", "trainer.max_steps=200",
        "trainer.max_epochs=null", "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=10", "optim.lr=1e-3", "data.synthetic.train_size=1600",
        "data.synthetic.eval_size=96", "data.batch_size=32", "data.max_length=32"]


def compose_cfg(overrides: list[str], tmp_path: Path) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.tracking.uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
        cfg.paths.cache_dir = str(tmp_path / "cache")
        cfg.paths.checkpoint_dir = str(tmp_path / "checkpoints")
        cfg.paths.mlruns_dir = str(tmp_path / "mlruns")
    return cfg


@pytest.fixture
def tiny_cfg(tmp_path):
    def make(*overrides: str) -> DictConfig:
        return compose_cfg([*TINY, *overrides], tmp_path)
    return make


@pytest.fixture
def client(tmp_path) -> MlflowClient:
    (tmp_path / "mlruns").mkdir(exist_ok=True)
    return MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")


@pytest.fixture
def one_thread():
    """One torch thread: two OpenMP threads on two busy, shared cores run several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def prepared_data(cfg: DictConfig, batch_size: int = 8):
    """The checked config and its raw splits, task data, tokenizer and a set-up datamodule."""
    from tunelab import build
    from tunelab.config import check_config

    cfg = check_config(cfg)
    inputs = build.build_data(cfg)
    tokenizer = build.build_tokenizer(cfg)
    dm = build.build_datamodule(cfg, inputs, tokenizer, batch_size=batch_size)
    dm.setup()
    return cfg, inputs.raw, inputs.task_data, tokenizer, dm


def train_runs(client: MlflowClient, experiment: str = "tunelab", kind: str = "train"):
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], f"tags.`tunelab.run_kind` = '{kind}'")


def run_cli(args: list[str], cwd: Path, timeout: int = 600, env: dict | None = None):
    """Run a tunelab console script as a user would, from `cwd`."""
    exe = Path(sys.executable).parent / args[0]
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "1", **(env or {})}
    return subprocess.run([str(exe), *args[1:]], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, log: Path, workers: int) -> Iterator[str]:
    """A real `mlflow server` over `backend_uri`, serving artifacts from `artifacts`, its output in
    `log`; yields its URI once /health answers, stops it (and its workers) afterwards."""
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", backend_uri,
         "--serve-artifacts", "--artifacts-destination", str(artifacts),
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
                time.sleep(1)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:     # a busy machine: stop it the hard way
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def kill_once_a_run_finishes(args: list[str], cwd: Path, log: Path, limit: float = 400) -> None:
    """Start a tunelab console script from `cwd` as a user would and SIGKILL its whole process
    group as soon as the store under `cwd` holds a FINISHED training run (or after `limit` s)."""
    exe = Path(sys.executable).parent / args[0]
    with log.open("w") as out:
        proc = subprocess.Popen([str(exe), *args[1:]], cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    client = MlflowClient(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")
    deadline = time.time() + limit
    try:
        while time.time() < deadline and proc.poll() is None:
            time.sleep(1)
            try:
                if any(r.info.status == "FINISHED" for r in train_runs(client)):
                    break
            except Exception:               # the job is still creating the store
                continue
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
