"""A study's section of the report, read from the tags its sweeper puts on every run.

Runs of a study carry `tunelab.study_id`, `tunelab.arm` and `tunelab.phase` (`search`: trials
tuning each arm on validation; `confirm`: each arm's best on fresh seeds, scored on test); the
parent run is tagged `tunelab.run_kind=study`. Everything here is read from MLflow, so a study
made by any version of the sweeper reads the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd

from tunelab.compare.grouping import UNSET, differing, ignored, param_frame
from tunelab.compare.runs import ARM_TAG, PHASE_TAG, STUDY_TAG, RunSet
from tunelab.compare.stats import BUDGET_KEYS, paired_test, shared_budget

PLAN_TAG = "tunelab.study."


@dataclass
class Study:
    """One study: per-arm tuned values and results, search curves, confirm runs, the budget."""

    study_id: str
    settings: dict[str, str]
    budget: str
    arms: pd.DataFrame
    search: pd.DataFrame
    confirm: pd.DataFrame
    tests: pd.DataFrame


def budget_kind(params: pd.DataFrame, recorded: str | None) -> str:
    """Which budget ends the runs (as the parent recorded it, else the `budget.*` params set,
    else steps or epochs), with the limits the runs share."""
    budget = shared_budget(params)
    if recorded:
        return f"{recorded} ({budget})"
    kinds = [k.removeprefix("budget.") for k in BUDGET_KEYS
             if k.startswith("budget.") and k in params.columns
             and (set(params[k]) - UNSET)]
    if not kinds:
        steps = set(params.get("trainer.max_steps", pd.Series(dtype=str))) - (UNSET | {"-1"})
        kinds = ["steps" if steps else "epochs"]
    return f"{' + '.join(kinds)} ({budget})"


def search_curve(trials: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """Trials in the order they started, with the best value so far of `metric`."""
    ordered = trials.sort_values("start_time")
    value = pd.to_numeric(ordered[f"metrics.{metric}"], errors="coerce").reset_index(drop=True)
    best = value.cummax() if mode == "max" else value.cummin()
    return pd.DataFrame({"trial": np.arange(1, len(value) + 1), "value": value,
                         "best_so_far": best, "run_id": ordered.run_id.to_numpy()})


def tuned_values(trials: pd.DataFrame, best_run: str) -> str:
    """The searched params (those that differ among an arm's trials) as its best trial set them."""
    params = param_frame(trials)
    keys = [k for k in differing(params) if not ignored(k)]
    row = params[trials.run_id.to_numpy() == best_run].iloc[0]
    return ", ".join(f"{k}={row[k]}" for k in keys) or "(nothing searched)"


def parent_settings(study_id: str) -> dict[str, str]:
    """What the study's parent run (`tunelab.run_kind=study`) says of its plan: its
    `tunelab.study.*` tags (trials per arm, seeds, budget kind), the storage URL aside."""
    found = mlflow.search_runs(search_all_experiments=True, output_format="list",
                               filter_string=f"tags.`tunelab.run_kind` = 'study' and "
                                             f"tags.`{STUDY_TAG}` = '{study_id}'")
    if not found:
        return {}
    return {k.removeprefix(PLAN_TAG): v for k, v in sorted(found[0].data.tags.items())
            if k.startswith(PLAN_TAG) and k not in {f"{PLAN_TAG}storage", f"{PLAN_TAG}arms"}}


def one_study(study_id: str, search: pd.DataFrame, confirm: pd.DataFrame, monitor: str,
              mode: str) -> Study:
    val, test = f"val/{monitor}", f"test/{monitor}"
    arms, curves = [], []
    for arm in sorted(set(search.get(f"tags.{ARM_TAG}", [])) | set(confirm[f"tags.{ARM_TAG}"])):
        trials = search[search[f"tags.{ARM_TAG}"] == arm] if not search.empty else search
        done = confirm[confirm[f"tags.{ARM_TAG}"] == arm]
        row = {"arm": arm, "trials": len(trials), "confirm seeds": len(done)}
        if not trials.empty and f"metrics.{val}" in trials:
            curve = search_curve(trials, val, mode).assign(arm=arm)
            curves.append(curve)
            best = curve.loc[curve.value.idxmax() if mode == "max" else curve.value.idxmin()]
            row.update({f"best search {val}": best.value,
                        "tuned values": tuned_values(trials, best.run_id)})
        scores = pd.to_numeric(done.get(f"metrics.{test}", pd.Series(dtype=float)),
                               errors="coerce")
        row.update({f"confirm {test} mean": scores.mean(), f"confirm {test} std": scores.std()})
        arms.append(row)
    confirm_view = pd.DataFrame({
        "arm": confirm[f"tags.{ARM_TAG}"], "seed": confirm["params.seed"],
        "run": confirm.get("tags.mlflow.runName", confirm.run_id),
        test: pd.to_numeric(confirm.get(f"metrics.{test}", np.nan), errors="coerce")})
    confirm_view = confirm_view.sort_values(["arm", "seed"]).reset_index(drop=True)
    everything = param_frame(pd.concat([search, confirm]))
    settings = parent_settings(study_id)
    return Study(study_id, settings, budget_kind(everything, settings.get("budget_kind")),
                 pd.DataFrame(arms),
                 pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(),
                 confirm_view, arm_tests(confirm_view, test))


def arm_tests(confirm: pd.DataFrame, test: str) -> pd.DataFrame:
    """Each arm minus the first (sorted) on the confirm seeds they share."""
    arms = sorted(set(confirm.arm))
    rows = []
    for arm in arms[1:]:
        pairs = confirm[confirm.arm == arm].merge(confirm[confirm.arm == arms[0]], on="seed")
        both = pairs[[f"{test}_x", f"{test}_y"]].dropna().to_numpy(float)
        rows.append({"arm": arm, "baseline": arms[0], "quantity": test,
                     **paired_test(both[:, 0], both[:, 1])})
    return pd.DataFrame(rows)


def studies(runs: RunSet, monitor: str, mode: str) -> list[Study]:
    """Every study among the runs (only `runs.study` when one was asked for)."""
    column = f"tags.{STUDY_TAG}"
    ids: set[str] = set()
    for frame in (runs.search, runs.runs):
        if column in frame.columns:
            ids |= set(frame[column].dropna())
    out = []
    for study_id in sorted(ids):
        search = runs.search[runs.search[column] == study_id] if not runs.search.empty \
            else runs.search
        own = runs.runs[runs.runs.get(column, pd.Series(dtype=object)) == study_id]
        confirm = own[own.get(f"tags.{PHASE_TAG}", pd.Series(dtype=object)) == "confirm"]
        out.append(one_study(study_id, search, confirm, monitor, mode))
    return out
