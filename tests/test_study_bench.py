"""bench/study_banking77.sh as the defaults' evidence is gathered: SEED_TRIALS imports earlier
trials into each arm's Optuna study under the id the command itself gets, so a study whose search
ran before confirms their best on fresh seeds without training a search trial again."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

from tests.conftest import ROOT, train_runs

BEST = {"adapter=full": ({"optim.lr": 3e-4}, 0.5), "adapter=lora": ({"optim.lr": 6e-3,
                                                                    "adapter.r": 4}, 0.5)}
WORSE = {"adapter=full": {"optim.lr": 1e-4}, "adapter=lora": {"optim.lr": 2e-3, "adapter.r": 8}}


def intents_csv(path: Path, rows: int) -> None:
    """banking77's columns (text, category): three intents, told apart by one word."""
    words = ["card", "refund", "transfer"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "category"])
        writer.writeheader()
        writer.writerows({"text": f"help with my {words[i % 3]} number {i}",
                          "category": f"intent_{words[i % 3]}"} for i in range(rows))


def test_seeded_trials_leave_only_the_confirm_phase_to_run(tmp_path):
    data = tmp_path / "banking"
    data.mkdir()
    intents_csv(data / "train.csv", 60)
    intents_csv(data / "test.csv", 12)
    seeded = {arm: {"completed": [[WORSE[arm], 0.1], [params, value]]}
              for arm, (params, value) in BEST.items()}
    (tmp_path / "seed.json").write_text(json.dumps(seeded))
    env = {**os.environ, "DATA": str(data), "WORK": str(tmp_path), "STEPS": "2", "BATCH": "8",
           "TRIALS": "2", "SEEDS": "1", "EVAL": "8", "SEED_TRIALS": str(tmp_path / "seed.json"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "study_banking77.sh"), "model=tiny-bert", "adapter=full,lora",
         "data.max_length=16"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
        check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 of 2 trials already complete" in proc.stderr + proc.stdout
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = train_runs(client)
    assert sorted((r.data.tags["tunelab.arm"], r.data.tags["tunelab.phase"]) for r in runs) == [
        ("adapter=full", "confirm"), ("adapter=lora", "confirm")]     # no search trial retrained
    for run in runs:
        params, _ = BEST[run.data.tags["tunelab.arm"]]
        assert float(run.data.params["optim.lr"]) == params["optim.lr"]
        assert run.data.params["seed"] == "1" and "test/acc" in run.data.metrics
    [parent] = train_runs(client, kind="study")
    assert float(parent.data.params["tuned/adapter:lora/optim.lr"]) == 6e-3
    assert parent.data.params["tuned/adapter:lora/adapter.r"] == "4"
