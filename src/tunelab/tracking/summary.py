"""What a finished run or sweep tells its user, read back from MLflow so it states what the store
recorded (not what the process believes it logged): the run, its final metrics, its costs and the
exact command and URL that show it in the MLflow UI."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from mlflow import MlflowClient
from mlflow.entities import Run
from tabulate import tabulate

from tunelab.tracking import names

UI_HOST, UI_PORT = "127.0.0.1", 5000
# MLflow 3.17's UI picks its view (GenAI or model training) from this URL parameter, else from
# the browser's last choice (GenAI at first); the experiment's mlflow.experimentKind tag, which
# tunelab also sets, no longer decides it. Links tunelab prints open the model-training view.
TRAINING_VIEW = "workflowType=machine_learning"
STATUS_NOTES = {
    "resumed": "resumed: continued from its last checkpoint into the same MLflow run",
    "skipped": "skipped: this config already has this FINISHED run, nothing trained "
               "(tracking.on_finished=rerun trains again)",
}
# the cost line: metric key, label, format
COSTS = (("params/trainable_pct", "trainable", "{:.3g}%"),
         ("perf/train_samples_per_sec", "", "{:.4g} samples/s"),
         ("perf/peak_mem_mb", "peak mem", "{:.0f} MB"),
         ("time/fit_seconds", "fit", "{:.1f} s"))


@dataclass(frozen=True)
class FailedJob:
    """A sweep job that failed, possibly before it had an MLflow run (a config error)."""
    label: str          # "job 3" or the run's name
    overrides: str
    error: str


def shown_uri(uri: str) -> str:
    """`uri` without a password, so it can be printed and copied into a shell."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def ui_location(uri: str) -> tuple[str | None, str]:
    """The command that serves the store in the MLflow UI (None for a tracking server, which is
    its own UI) and the UI's base URL."""
    if uri.startswith(("http://", "https://")):
        return None, uri.rstrip("/")
    command = (f"mlflow ui --backend-store-uri {shlex.quote(shown_uri(uri))} "
               f"--host {UI_HOST} --port {UI_PORT}")
    return command, f"http://{UI_HOST}:{UI_PORT}"


def run_url(uri: str, run: Run) -> str:
    return (f"{ui_location(uri)[1]}/#/experiments/{run.info.experiment_id}/runs/"
            f"{run.info.run_id}?{TRAINING_VIEW}")


def see_it(uri: str, run: Run) -> list[str]:
    """Lines that tell a user how to open `run` in the MLflow UI."""
    command, _ = ui_location(uri)
    return [f"  see it: {command}" if command else "  see it:", f"          {run_url(uri, run)}"]


def metric_line(metrics: dict[str, float], prefix: str) -> str | None:
    values = {k.removeprefix(prefix): v for k, v in sorted(metrics.items())
              if k.startswith(prefix)}
    return "  ".join(f"{k} {v:.4g}" for k, v in values.items()) or None


def cost_line(metrics: dict[str, float]) -> str:
    parts = [f"{label} {fmt.format(metrics[key])}".strip() for key, label, fmt in COSTS
             if key in metrics]
    return " | ".join(parts) or "not recorded"


def run_summary(client: MlflowClient, uri: str, run_id: str, status: str = "new") -> str:
    """The end-of-run summary; `status` is how the run was opened (new, resumed, skipped)."""
    run = client.get_run(run_id)
    experiment = client.get_experiment(run.info.experiment_id).name
    lines = [f"run {run.info.run_name} ({run.info.run_id}): {run.info.status} "
             f"in experiment {experiment!r}"]
    if status in STATUS_NOTES:
        lines.append(f"  {STATUS_NOTES[status]}")
    for split in ("val", "test"):
        line = metric_line(run.data.metrics, f"{split}/")
        if line:
            lines.append(f"  {split:<5} {line}")
    lines.append(f"  cost  {cost_line(run.data.metrics)}")
    return "\n".join(lines + see_it(uri, run))


def ranked(runs: list[Run], metric: str, mode: str) -> list[Run]:
    """Best first by `metric` (task.mode: max or min); runs without it last."""
    sign = -1.0 if mode == "max" else 1.0
    return sorted(runs, key=lambda r: (metric not in r.data.metrics,
                                       sign * r.data.metrics.get(metric, 0.0)))


def varying_overrides(runs: list[Run]) -> dict[str, str]:
    """Each run's overrides less those every run shares: what tells the jobs apart."""
    split = {r.info.run_id: r.data.tags.get(names.OVERRIDES, "").split() for r in runs}
    shared = set.intersection(*map(set, split.values())) if len(split) > 1 else set()
    return {rid: " ".join(o for o in ovs if o not in shared) for rid, ovs in split.items()}


def compare_command(client: MlflowClient, uri: str, parent: Run, metric: str) -> str:
    """The tunelab-compare command for this sweep's (or study's) runs."""
    study = parent.data.tags.get(names.STUDY_ID)
    scope = f"--study {study}" if study else \
        f"--experiment {shlex.quote(client.get_experiment(parent.info.experiment_id).name)}"
    return (f"tunelab-compare {scope} --tracking-uri {shlex.quote(shown_uri(uri))} "
            f"--metric {metric}")


def sweep_summary(client: MlflowClient, uri: str, parent_run_id: str, runs: list[Run],
                  metric: str, mode: str, failed: list[FailedJob]) -> str:
    """The end-of-sweep (or study) summary: `runs` (its training runs) ranked by `metric` with
    the overrides that tell them apart, the best one, the parent run, the failed jobs with their
    errors, and the commands that compare and show them."""
    parent = client.get_run(parent_run_id)
    lines = [f"{parent.info.run_name}: {len(runs)} runs, {len(failed)} failed; "
             f"parent run {parent.info.run_id}"]
    order = ranked(runs, metric, mode)
    if order:
        shown = varying_overrides(order)
        rows = [[i, _value(r, metric), r.info.run_name, r.info.run_id, r.info.status,
                 shown[r.info.run_id]] for i, r in enumerate(order, 1)]
        table = tabulate(rows, headers=["#", metric, "run", "id", "status", "overrides"],
                         disable_numparse=True)
        lines += ["  " + row for row in table.splitlines()]
    best = next((r for r in order if metric in r.data.metrics), None)
    if best is not None:
        lines.append(f"  best ({mode} {metric}): {best.info.run_name} ({best.info.run_id}) "
                     f"{metric}={_value(best, metric)}")
    if failed:
        lines.append("  these jobs failed (rerun the same command to retry only them):")
        lines += [f"    {f.label}: {f.overrides}\n      {f.error}" for f in failed]
    lines.append(f"  compare: {compare_command(client, uri, parent, metric)}")
    return "\n".join(lines + see_it(uri, parent))


def _value(run: Run, metric: str) -> str:
    value = run.data.metrics.get(metric)
    return "-" if value is None else f"{value:.4f}"


def print_run_summary(run) -> None:
    """Print a TrackedRun's summary where it has a run: rank 0 only (other ranks log nothing)."""
    if run.active and run.run_id is not None:
        print(run_summary(run.client, run.uri, run.run_id, run.status), flush=True)
