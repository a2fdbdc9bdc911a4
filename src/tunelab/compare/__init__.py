"""Comparison of finished runs, read from MLflow only (never imports training code)."""

from tunelab.compare.report import Comparison, compare, write_report
from tunelab.compare.runs import (CompareError, RunSet, default_metric, default_tracking_uri,
                                  load_runs, metric_histories, resolve_experiment, with_metric)

__all__ = ["Comparison", "CompareError", "RunSet", "compare", "default_metric",
           "default_tracking_uri", "load_runs", "metric_histories", "resolve_experiment",
           "with_metric", "write_report"]
