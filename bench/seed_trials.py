"""Seed a study's Optuna studies before its sweep starts (bench/study_*.sh, SEED_TRIALS=<file>).

    python bench/seed_trials.py SPEC.json MLRUNS ADAPTER_CONF_DIR <the sweep's arguments...>

SPEC names each adapter arm and what to store in its Optuna study (a plain search, SEARCH=1, has
one arm and one study):
{"adapter=lora": {"enqueue": [{"optim.lr": 2e-3, "adapter.r": 8}],
                  "completed": [[{"optim.lr": 4.3e-3, "adapter.r": 8}, 0.446]]}}.
Enqueued points are the arm's next trials (a designed grid instead of TPE's random start);
completed ones are earlier trials with their val score, which count toward trials_per_arm, so
trials_per_arm = their number leaves the confirm phase alone to run on the best of them.

The study id is the one the same arguments give `tunelab-train -m` (its sweep key), and the Optuna
study name and storage are the sweeper's own (tunelab.sweeps.study), so the sweep finds them. An
arm whose study already holds trials is left as stored: rerunning a killed study resumes it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import optuna
from omegaconf import OmegaConf

from tunelab.sweeps.callbacks import sweep_key
from tunelab.sweeps.study import default_storage, distribution, optuna_study_name, parse


def study_id(arguments: list[str]) -> str:
    """The sweep key of `tunelab-train -m <arguments>`: Hydra's task overrides are the
    arguments less hydra's own (hydra/sweeper=..., hydra.sweeper.*)."""
    task = [a for a in arguments if not a.startswith("hydra")]
    experiment = next((a.split("=", 1)[1] for a in task if a.startswith("tracking.experiment=")),
                      "tunelab")
    return sweep_key(OmegaConf.create({"hydra": {"overrides": {"task": task}, "sweeper": {}},
                                       "tracking": {"experiment": experiment}}))


def seed(spec: dict, mlruns: Path, adapters: Path, arguments: list[str]) -> None:
    sid = study_id(arguments)
    storage = default_storage(mlruns)
    # a plain search (SEARCH=1: hydra/sweeper=optuna) keeps its trials in one study, no arm's
    plain = "hydra/sweeper=study" not in arguments
    if plain and len(spec) != 1:
        raise SystemExit(f"seed: a plain search has one arm; the spec names {list(spec)}")
    for arm, points in spec.items():
        space = OmegaConf.load(adapters / f"{arm.split('=', 1)[1]}.yaml").search
        dists = {k: distribution(parse([f"{k}={v}"])[0]) for k, v in space.items()}
        study = optuna.create_study(study_name=optuna_study_name(sid, None if plain else arm),
                                    storage=storage, direction="maximize", load_if_exists=True)
        if study.trials:
            print(f"seed: {arm} already has {len(study.trials)} trials, left as stored")
            continue
        for params in points.get("enqueue", []):
            study.enqueue_trial(params)
        for params, value in points.get("completed", []):
            study.add_trial(optuna.trial.create_trial(
                params=params, distributions={k: dists[k] for k in params}, value=value))
        print(f"seed: study {sid} arm {arm}: {len(study.trials)} trials stored")


if __name__ == "__main__":
    spec_file, mlruns_dir, adapter_dir, *args = sys.argv[1:]
    seed(json.loads(Path(spec_file).read_text()), Path(mlruns_dir), Path(adapter_dir), args)
