"""`tunelab-compare`: an experiment's training runs in, a report (files + an MLflow run) out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mlflow

from tunelab.compare.grouping import grouping, param_frame, resolve_by
from tunelab.compare.report import DEFAULT_BY, Comparison, compare, write_report
from tunelab.compare.runs import (
    CompareError,
    RunSet,
    check_store,
    current_client,
    default_metric,
    default_tracking_uri,
    load_runs,
    resolve_experiment,
    with_metric,
)
from tunelab.tracking import names
from tunelab.tracking.writer import RunWriter


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tunelab-compare",
        description="Compare an experiment's FINISHED training runs: a decision (best "
                    "configuration per budget, its significance and cost per point), every "
                    "differing param as a configuration, paired differences along --by with "
                    "paired tests and bootstrap CIs, Pareto frontiers, quality against budget "
                    "and study sections, written as Markdown + self-contained HTML + PNG + CSV "
                    "and logged to MLflow as a run tagged tunelab.run_kind=compare.")
    p.add_argument("--experiment", help="experiment name (default: the experiment of the most "
                                        "recent training run in the store)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the embedded store "
                                          "sqlite:///./mlruns/mlflow.db)")
    p.add_argument("--metric", help="task metric key (default: val/<task.monitor> of the runs)")
    p.add_argument("--out", type=Path, help="report folder (default: reports/<experiment>)")
    p.add_argument("--study", help="only the runs of this study (tag tunelab.study_id); "
                                   "its experiment unless --experiment is given")
    p.add_argument("--by", default=DEFAULT_BY,
                   help="the axis pairs differ in: adapter, model, task, hardware or any param "
                        f"key such as optim.lr (default: {DEFAULT_BY}); keys it determines "
                        "across the runs change with it")
    p.add_argument("--baseline", help="the value of --by the others are paired against "
                                      "(default: full for adapters, else the first in order)")
    return p


def check_by(runs: RunSet, by: str) -> None:
    """An explicit --by must name a param the runs differ in (the default may find none: the
    report then says so)."""
    params = param_frame(runs.runs)
    g = grouping(params, resolve_by(by, params))
    if not g.arm:
        raise CompareError(f"--by {by}: all runs share {g.by}={params[g.by].iloc[0]}; params "
                           f"that differ: {', '.join(g.keys) or '(none)'}")


def log_comparison(c: Comparison, experiment_id: str, out: Path) -> str:
    """Record the report as the artifacts of a `compare` run beside the runs it compares."""
    tags = {names.COMPARE_METRIC: c.metric, names.COMPARE_BY: c.grouping.by or "",
            names.COMPARE_BASELINE: c.baseline or ""}
    if c.runs.study:
        tags[names.STUDY_ID] = c.runs.study
    with RunWriter.create(current_client(), experiment_id, names.COMPARE,
                          f"compare-{c.metric.replace('/', '-')}", tags) as run:
        run.log_params({"metric": c.metric, "by": c.grouping.by, "baseline": c.baseline,
                        "runs": len(c.tidy), "configurations": len(c.summary),
                        "excluded": sum(c.runs.excluded.values())})
        run.log_artifacts(out, "report")
    return run.run_id


def run(args: argparse.Namespace) -> tuple[Path, str]:
    """Every user error surfaces as CompareError before any file or MLflow run is written."""
    uri = args.tracking_uri or default_tracking_uri()
    check_store(uri)
    mlflow.set_tracking_uri(uri)
    experiment = resolve_experiment(args.experiment, args.study)
    runs = load_runs(experiment, args.study)
    metric = args.metric or default_metric(runs)
    runs = with_metric(runs, metric)
    if args.by != DEFAULT_BY:
        check_by(runs, args.by)
    comparison = compare(runs, metric, args.by, args.baseline)
    out = args.out or Path("reports") / experiment.name
    report = write_report(comparison, out)
    return report, log_comparison(comparison, experiment.experiment_id, out)


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    try:
        report, run_id = run(args)
    except CompareError as err:
        p.exit(2, f"tunelab-compare: error: {err}\n")
    print(f"report: {report} (and {report.with_suffix('.html')}); MLflow compare run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
