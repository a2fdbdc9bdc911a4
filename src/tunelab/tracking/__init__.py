"""The one owner of MLflow during a run: create or resume, params/tags/artifacts, costs."""

from tunelab.tracking.perf import CostMeter
from tunelab.tracking.run import TrackedRun, is_rank_zero
from tunelab.tracking.store import client_for, experiment_id, tracking_uri
from tunelab.tracking.weights import run_weights

__all__ = ["CostMeter", "TrackedRun", "client_for", "experiment_id", "is_rank_zero",
           "run_weights", "tracking_uri"]
