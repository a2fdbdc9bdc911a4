"""After-the-fact tools on finished runs: evaluate a run's weights, export them as an MLflow
Model (optionally registered), and predict with a logged or registered model.

These commands read the MLflow record a training run left behind (config/config.yaml,
labels.json, weights/) and never write to that run: evaluations become new `eval` runs, exports
become MLflow LoggedModels whose `source_run_id` is the training run.
"""

from tunelab.deploy.evaluate import evaluate
from tunelab.deploy.export import export
from tunelab.deploy.predict import predict_frame
from tunelab.deploy.runs import DeployError, TrainedRun, best_run, connect, finished_train_run

__all__ = ["DeployError", "TrainedRun", "best_run", "connect", "evaluate", "export",
           "finished_train_run", "predict_frame"]
