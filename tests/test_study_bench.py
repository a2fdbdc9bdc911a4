"""bench/study_banking77.sh and bench/study_squad.sh as the defaults' evidence is gathered:
SEED_TRIALS (bench/seed_trials.py) stores designed or earlier trials in each arm's Optuna study
under the id the command itself gets, so the sweep runs the designed grid, or, its search done
before, confirms the best on fresh seeds without training a search trial again."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

from tests.conftest import ROOT, train_runs
from tunelab.data import synthetic

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


def banking77_study(tmp_path: Path, seeded: dict, arguments: list[str],
                    **env: str) -> subprocess.CompletedProcess:
    """bench/study_banking77.sh on tiny-bert over 60 generated intent rows, 2 steps of 8, with
    `seeded` as its SEED_TRIALS file."""
    data = tmp_path / "banking"
    data.mkdir()
    intents_csv(data / "train.csv", 60)
    intents_csv(data / "test.csv", 12)
    (tmp_path / "seed.json").write_text(json.dumps(seeded))
    env = {**os.environ, "DATA": str(data), "WORK": str(tmp_path), "STEPS": "2", "BATCH": "8",
           "EVAL": "8", "SEED_TRIALS": str(tmp_path / "seed.json"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HYDRA_FULL_ERROR": "1",
           **env}
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "study_banking77.sh"), "model=tiny-bert",
         "data.max_length=16", *arguments], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_seeded_trials_leave_only_the_confirm_phase_to_run(tmp_path):
    seeded = {arm: {"completed": [[WORSE[arm], 0.1], [params, value]]}
              for arm, (params, value) in BEST.items()}
    proc = banking77_study(tmp_path, seeded, ["adapter=full,lora"], TRIALS="2", SEEDS="1")
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


def test_a_plain_search_finds_its_seeded_trials(tmp_path):
    """SEARCH=1 (one arm, hydra/sweeper=optuna) keeps its trials in one Optuna study with no arm
    in its name; a completed seeded trial counts toward TRIALS, so one more is trained."""
    params, value = BEST["adapter=lora"]
    proc = banking77_study(tmp_path, {"adapter=lora": {"completed": [[params, value]]}},
                           ["adapter=lora", "optim.lr=tag(log, interval(4e-4, 2e-2))"],
                           TRIALS="2", SEARCH="1")
    assert "1 of 2 trials already complete" in proc.stderr + proc.stdout
    runs = train_runs(MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"))
    assert len(runs) == 1 and float(runs[0].data.params["optim.lr"]) != params["optim.lr"]


def squad_json(path: Path, articles: int, questions: int) -> None:
    """Generated QA rows as SQuAD v1.1 nesting, `questions` single-question paragraphs per article."""
    rows = synthetic.generate("qa", articles * questions, 0)
    data = [{"title": f"article {a}", "paragraphs": [
        {"context": row["context"], "qas": [{"id": row["id"], "question": row["question"],
                                            "answers": [{"text": row["answers"]["text"][0],
                                                         "answer_start":
                                                             row["answers"]["answer_start"][0]}]}]}
        for row in rows[a * questions:(a + 1) * questions]]} for a in range(articles)]
    path.write_text(json.dumps({"version": "1.1", "data": data}))


def test_squad_study_runs_its_designed_grid_and_scores_test_on_held_out_articles(tmp_path):
    squad_json(tmp_path / "squad.json", articles=6, questions=5)
    grid = {"adapter=full": {"enqueue": [{"optim.lr": 3e-4}]},
            "adapter=lora": {"enqueue": [{"optim.lr": 6e-3, "adapter.r": 8}]}}
    (tmp_path / "grid.json").write_text(json.dumps(grid))
    env = {**os.environ, "DATA": str(tmp_path / "squad.json"), "WORK": str(tmp_path),
           "ARTICLES": "0:2 2:4 4:6", "TRAIN": "8", "EVAL": "4", "STEPS": "2", "BATCH": "4",
           "TRIALS": "1", "SEEDS": "1", "SEED_TRIALS": str(tmp_path / "grid.json"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "study_squad.sh"), "model=tiny-bert", "adapter=full,lora",
         "data.max_length=64", "task.doc_stride=16"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = {split: {qa["id"] for article in json.loads((tmp_path / "data" / f"{split}.json")
                                                       .read_text())["data"]
                   for paragraph in article["paragraphs"] for qa in paragraph["qas"]}
           for split in ("train", "validation", "test")}
    assert [len(ids[s]) for s in ("train", "validation", "test")] == [8, 4, 4]
    assert not (ids["train"] | ids["validation"]) & ids["test"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = {(r.data.tags["tunelab.arm"], r.data.tags["tunelab.phase"]): r
            for r in train_runs(client)}
    assert sorted(runs) == [("adapter=full", "confirm"), ("adapter=full", "search"),
                            ("adapter=lora", "confirm"), ("adapter=lora", "search")]
    for (arm, phase), run in runs.items():     # the grid's rates, not TPE's random start
        assert float(run.data.params["optim.lr"]) == grid[arm]["enqueue"][0]["optim.lr"]
        assert run.data.params["seed"] == ("1" if phase == "confirm" else "0")
        assert "val/f1" in run.data.metrics
    assert "test/f1" in runs["adapter=lora", "confirm"].data.metrics
