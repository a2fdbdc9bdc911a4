"""Which runs a comparison reads, straight from MLflow.

Reads the tracking store through MLflow's client only, so a report works on runs made anywhere
(another machine, a server, an older tunelab) and never imports training code. Every function
uses MLflow's current tracking URI: set it once with `mlflow.set_tracking_uri`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Experiment

GROUP_KEYS = ["model.name", "task.name", "adapter.name", "hardware.name"]
TRAIN_FILTER = "tags.`tunelab.run_kind` = 'train'"


class CompareError(Exception):
    """A problem with what the user asked for (exit 2), as opposed to a bug."""


def default_tracking_uri() -> str:
    """The embedded store training writes by default: SQLite under ./mlruns/."""
    return f"sqlite:///{Path.cwd() / 'mlruns' / 'mlflow.db'}"


def check_store(uri: str) -> None:
    """Refuse a SQLite path that holds no store: MLflow would silently create an empty one."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise CompareError(f"no MLflow store at {uri} (train first, or pass --tracking-uri)")


def resolve_experiment(name: str | None) -> Experiment:
    """`name`, or the experiment of the most recent training run when no name is given."""
    client = MlflowClient()
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


@dataclass
class RunSet:
    """The FINISHED training runs that count, one row per run, and why others were left out."""

    experiment: str
    runs: pd.DataFrame
    excluded: dict[str, int] = field(default_factory=dict)

    @property
    def metrics(self) -> list[str]:
        return sorted(c.removeprefix("metrics.") for c in self.runs.columns
                      if c.startswith("metrics.") and self.runs[c].notna().any())


def load_runs(experiment: Experiment) -> RunSet:
    """FINISHED training runs of `experiment`; the latest run per config hash stands for it.

    A config rerun with `tracking.on_finished=rerun` leaves two FINISHED runs of one hash;
    counting both would count one seed twice in the mean and in the pairing.
    """
    frame = mlflow.search_runs([experiment.experiment_id], filter_string=TRAIN_FILTER,
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
    missing = [k for k in GROUP_KEYS + ["seed"] if f"params.{k}" not in finished.columns]
    if missing:
        raise CompareError(f"runs of {experiment.name!r} lack params {missing}")
    hash_col = "tags.tunelab.config_hash"
    if hash_col in finished.columns:
        dup = finished[hash_col].notna() & finished.duplicated(hash_col, keep="first")
        if dup.any():
            excluded["superseded by a later run of the same config"] = int(dup.sum())
        finished = finished[~dup]
    return RunSet(experiment.name, finished.reset_index(drop=True), excluded)


def default_metric(runs: RunSet) -> str:
    """`val/<task.monitor>`: the metric the runs themselves optimised."""
    monitors = runs.runs.get("params.task.monitor", pd.Series(dtype=str)).dropna()
    if monitors.empty:
        raise CompareError("the runs record no task.monitor param; pass --metric "
                           f"(metrics: {', '.join(runs.metrics)})")
    return f"val/{monitors.mode().iloc[0]}"


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
    return RunSet(runs.experiment, runs.runs[has].reset_index(drop=True), excluded)


def metric_mode(runs: RunSet, metric: str) -> str:
    """'max' or 'min': the task's own mode for its monitor, lower-is-better for losses and ppl."""
    base = metric.rsplit("/", 1)[-1].removesuffix("_best")
    if base.endswith("loss") or base == "ppl":
        return "min"
    frame = runs.runs
    if "params.task.mode" in frame.columns and "params.task.monitor" in frame.columns:
        modes = frame.loc[frame["params.task.monitor"] == base, "params.task.mode"].dropna()
        if not modes.empty:
            return str(modes.mode().iloc[0])
    return "max"


def metric_histories(run_ids: list[str], keys: list[str]) -> pd.DataFrame:
    """Every logged value of `keys` for `run_ids`, long form: run_id, key, step, value."""
    client = MlflowClient()
    rows = [{"run_id": run_id, "key": key, "step": m.step, "value": m.value}
            for run_id in run_ids for key in keys
            for m in client.get_metric_history(run_id, key)]
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])
