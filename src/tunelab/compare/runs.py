"""Which runs a comparison reads, straight from MLflow.

Reads the tracking store through MLflow's client only, so a report works on runs made anywhere
(another machine, a server, an older tunelab) and never imports training code: tag names and
the retrying client come from tunelab.tracking's light modules (names, store). Every function
uses MLflow's current tracking URI: set it once with `mlflow.set_tracking_uri`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Experiment

from tunelab.tracking import names
from tunelab.tracking.store import client_for, embedded_uri

TRAIN_FILTER = names.kind_filter(names.TRAIN)
STUDY_TAG, ARM_TAG, PHASE_TAG = names.STUDY_ID, names.ARM, names.PHASE     # compare.study's


class CompareError(Exception):
    """A problem with what the user asked for (exit 2), as opposed to a bug."""


def default_tracking_uri() -> str:
    """The embedded store training writes by default: SQLite under ./mlruns/."""
    return embedded_uri()


def current_client() -> MlflowClient:
    """tunelab's retrying client on MLflow's current tracking URI (a sweep may be writing)."""
    return client_for(mlflow.get_tracking_uri())


def check_store(uri: str) -> None:
    """Refuse a SQLite path that holds no store: MLflow would silently create an empty one."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise CompareError(f"no MLflow store at {uri} (train first, or pass --tracking-uri)")


def resolve_experiment(name: str | None, study: str | None = None) -> Experiment:
    """`name`; else the experiment holding study `study`; else that of the latest training run."""
    client = current_client()
    if name is None and study is not None:
        return study_experiment(study)
    if name is not None:
        found = client.get_experiment_by_name(name)
        if found is None:
            known = sorted(e.name for e in client.search_experiments())
            raise CompareError(f"no experiment {name!r} in {mlflow.get_tracking_uri()}; "
                               f"experiments: {', '.join(known) or '(none)'}")
        return found
    latest = mlflow.search_runs(search_all_experiments=True, filter_string=TRAIN_FILTER,
                                order_by=["attributes.start_time DESC"], max_results=1,
                                output_format="list")
    if not latest:
        raise CompareError(f"no training runs in {mlflow.get_tracking_uri()}")
    return client.get_experiment(latest[0].info.experiment_id)


def study_experiment(study: str) -> Experiment:
    """The experiment whose runs carry `tunelab.study_id=study`; an error listing known ids."""
    found = mlflow.search_runs(search_all_experiments=True, max_results=1, output_format="list",
                               filter_string=f"tags.`{STUDY_TAG}` = '{study}'")
    if not found:
        known = mlflow.search_runs(search_all_experiments=True,
                                   filter_string=f"tags.`{STUDY_TAG}` != ''")
        ids = sorted(set(known[f"tags.{STUDY_TAG}"])) if not known.empty else []
        raise CompareError(f"no run of study {study!r} in {mlflow.get_tracking_uri()}; "
                           f"studies: {', '.join(ids) or '(none)'}")
    return current_client().get_experiment(found[0].info.experiment_id)


@dataclass
class RunSet:
    """The FINISHED training runs that count, one row per run, and why others were left out.

    A study's search trials are kept apart in `search`: each arm's tuning curve, not seeds of
    one configuration (they differ in the searched params and would each be a configuration).
    """

    experiment: str
    runs: pd.DataFrame
    excluded: dict[str, int] = field(default_factory=dict)
    search: pd.DataFrame = field(default_factory=pd.DataFrame)
    study: str | None = None

    @property
    def metrics(self) -> list[str]:
        return sorted(c.removeprefix("metrics.") for c in self.runs.columns
                      if c.startswith("metrics.") and self.runs[c].notna().any())


def load_runs(experiment: Experiment, study: str | None = None) -> RunSet:
    """FINISHED training runs of `experiment` (of study `study` only, when given); the latest
    run per config hash stands for it.

    A config rerun with `tracking.on_finished=rerun` leaves two FINISHED runs of one hash;
    counting both would count one seed twice in the mean and in the pairing.
    """
    where = TRAIN_FILTER + (f" and tags.`{STUDY_TAG}` = '{study}'" if study else "")
    frame = mlflow.search_runs([experiment.experiment_id], filter_string=where,
                               order_by=["attributes.start_time DESC"])
    excluded: dict[str, int] = {}
    if frame.empty:
        raise CompareError(f"experiment {experiment.name!r} has no training runs")
    for status, count in frame.loc[frame.status != "FINISHED", "status"].value_counts().items():
        excluded[f"status {status}"] = int(count)
    finished = frame[frame.status == "FINISHED"]
    if finished.empty:
        raise CompareError(f"experiment {experiment.name!r} has no FINISHED training runs "
                           f"({', '.join(f'{n} {k}' for k, n in excluded.items())})")
    if "params.seed" not in finished.columns:
        raise CompareError(f"runs of {experiment.name!r} record no seed param")
    hash_col = f"tags.{names.CONFIG_HASH}"
    if hash_col in finished.columns:
        dup = finished[hash_col].notna() & finished.duplicated(hash_col, keep="first")
        if dup.any():
            excluded["superseded by a later run of the same config"] = int(dup.sum())
        finished = finished[~dup]
    phase = finished.get(f"tags.{PHASE_TAG}", pd.Series(index=finished.index, dtype=object))
    search = finished[phase == "search"]
    if not search.empty:
        excluded["study search trials (in the study section)"] = len(search)
    kept = finished[phase != "search"]
    if kept.empty:
        raise CompareError(f"experiment {experiment.name!r} has no FINISHED training runs "
                           "outside a study's search phase")
    return RunSet(experiment.name, kept.reset_index(drop=True), excluded,
                  search.reset_index(drop=True), study)


def default_metric(runs: RunSet) -> str:
    """`val/<task.monitor>`: the metric the runs themselves optimised; `test/<task.monitor>`
    when every run is a study's confirm run (tuned on validation, scored on test)."""
    monitors = runs.runs.get("params.task.monitor", pd.Series(dtype=str)).dropna()
    if monitors.empty:
        raise CompareError("the runs record no task.monitor param; pass --metric "
                           f"(metrics: {', '.join(runs.metrics)})")
    phase = runs.runs.get(f"tags.{PHASE_TAG}", pd.Series(dtype=object))
    split = "test" if (phase == "confirm").all() and not phase.empty else "val"
    return f"{split}/{monitors.mode().iloc[0]}"


def with_metric(runs: RunSet, metric: str) -> RunSet:
    """Only runs that recorded `metric`; an error naming the metrics there are if none did."""
    column = f"metrics.{metric}"
    if column not in runs.runs.columns or runs.runs[column].isna().all():
        raise CompareError(f"no FINISHED training run of {runs.experiment!r} has metric "
                           f"{metric!r}; metrics: {', '.join(runs.metrics)}")
    has = runs.runs[column].notna()
    excluded = dict(runs.excluded)
    if (~has).any():
        excluded[f"no {metric}"] = int((~has).sum())
    return RunSet(runs.experiment, runs.runs[has].reset_index(drop=True), excluded,
                  runs.search, runs.study)


def metric_mode(runs: RunSet, metric: str) -> str:
    """'max' or 'min': lower is better for losses and perplexities (tracking.names' one rule),
    else the task's own mode for its monitor."""
    if names.lower_is_better(metric):
        return "min"
    base = names.metric_name(metric)
    frame = runs.runs
    if "params.task.mode" in frame.columns and "params.task.monitor" in frame.columns:
        modes = frame.loc[frame["params.task.monitor"] == base, "params.task.mode"].dropna()
        if not modes.empty:
            return str(modes.mode().iloc[0])
    return "max"


def metric_histories(run_ids: list[str], keys: list[str]) -> pd.DataFrame:
    """Every logged value of `keys` for `run_ids`, long form: run_id, key, step, value, and
    timestamp (ms; the wall clock MLflow stamped on each value)."""
    client = current_client()
    rows = [{"run_id": run_id, "key": key, "step": m.step, "value": m.value,
             "timestamp": m.timestamp}
            for run_id in run_ids for key in keys
            for m in client.get_metric_history(run_id, key)]
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value", "timestamp"])
