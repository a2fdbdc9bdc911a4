"""Finding the training run a command is about, and fetching its record: the resolved config,
the label names and the trained weights, exactly as the run logged them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from tunelab import adapters
from tunelab.deploy.pipeline import unsupported
from tunelab.tracking import names
from tunelab.tracking.masking import MASK
from tunelab.tracking.names import lower_is_better
from tunelab.tracking.store import client_for, tracking_uri
from tunelab.tracking.weights import run_weights


class DeployError(ValueError):
    """Bad input to an after-the-fact command; the message says what was wrong and what to do.
    The command line turns it into exit code 2."""


def connect(uri: str | None) -> MlflowClient:
    """A client on `uri` (default: the embedded store under ./mlruns/), also made the tracking
    and registry URI of MLflow's fluent API, which `models:/` URIs and pyfunc logging use."""
    resolved = tracking_uri(uri)
    mlflow.set_tracking_uri(resolved)
    mlflow.set_registry_uri(resolved)
    return client_for(resolved)


def finished_train_run(client: MlflowClient, run_id: str) -> Run:
    """The run `run_id`, refusing anything whose weights are not a finished training's weights."""
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise DeployError(f"run {run_id!r} not found in {client.tracking_uri}; list runs with "
                          "`mlflow ui` or pass --tracking-uri for another store") from None
    kind = run.data.tags.get(names.RUN_KIND)
    if kind != names.TRAIN:
        source = run.data.tags.get(names.SOURCE_RUN)
        hint = f"; its source training run is {source}" if source else ""
        what = f"of kind {kind!r}" if kind else "not a tunelab run"
        raise DeployError(f"run {run_id} is {what}, not a training run (tag "
                          f"{names.RUN_KIND}={names.TRAIN}){hint}")
    if run.info.lifecycle_stage == "deleted":
        raise DeployError(f"run {run_id} is deleted; restore it with `mlflow runs restore`")
    if run.info.status != "FINISHED":
        raise DeployError(f"run {run_id} is {run.info.status}, not FINISHED, so it has no final "
                          "weights; rerun its tunelab-train command to resume it")
    return run


def metric_key(metric: str) -> str:
    """`acc` means the final validation value `val/acc`; a key with a `/` is used as given."""
    return metric if "/" in metric else f"val/{metric}"


def best_run(client: MlflowClient, experiment: str, metric: str) -> Run:
    """The FINISHED training run of `experiment` with the best value of `metric`; ties go to the
    most recent run, as MLflow's own ordering would have it."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        known = sorted(e.name for e in client.search_experiments())
        raise DeployError(f"experiment {experiment!r} not found in {client.tracking_uri}; "
                          f"it has {known}")
    finished = f"{names.kind_filter(names.TRAIN)} and attributes.status = 'FINISHED'"
    runs = client.search_runs([found.experiment_id], finished, max_results=50000,
                              order_by=["attributes.start_time DESC"])
    if not runs:
        raise DeployError(f"experiment {experiment!r} has no FINISHED training run")
    key = metric_key(metric)
    scored = [r for r in runs if key in r.data.metrics]
    if not scored:
        keys = sorted({k for r in runs for k in r.data.metrics})
        raise DeployError(f"no FINISHED training run of {experiment!r} has metric {key!r}; "
                          f"their metrics: {keys}")
    sign = -1.0 if lower_is_better(key) else 1.0
    return max(scored, key=lambda r: sign * r.data.metrics[key])


@dataclass
class TrainedRun:
    """A training run's record, downloaded: what rebuilding its model needs and nothing else."""

    run: Run
    cfg: DictConfig
    labels: list[str]
    weights: Path
    config_file: Path       # the downloaded config/config.yaml
    labels_file: Path       # the downloaded labels.json
    base_weights: Path | None = None    # the earlier run's weights when model.init_from was set

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def is_adapter(self) -> bool:
        return adapters.is_adapter_folder(self.weights)

    @classmethod
    def fetch(cls, client: MlflowClient, run: Run, folder: Path) -> TrainedRun:
        """Download config/, labels.json and weights/ of `run` into `folder`."""
        paths = {}
        for artifact in ("config/config.yaml", "labels.json", "weights"):
            try:
                paths[artifact] = Path(client.download_artifacts(run.info.run_id, artifact,
                                                                 str(folder)))
            except (MlflowException, OSError):
                raise DeployError(f"run {run.info.run_id} has no {artifact} artifact; only "
                                  "runs recorded by tunelab-train can be evaluated or exported") \
                    from None
        config, labels = paths["config/config.yaml"], paths["labels.json"]
        trained = cls(run, OmegaConf.load(config), json.loads(labels.read_text())["labels"],
                      paths["weights"], config, labels)
        trained.require_supported()
        if trained.cfg.model.get("init_from"):
            trained.base_weights = run_weights(trained.cfg.model.init_from, client.tracking_uri,
                                               folder / "base")
        return trained

    def require_supported(self) -> None:
        reason = unsupported(self.cfg)
        if reason:
            raise DeployError(f"run {self.run_id}: evaluate/export/predict do not support it: "
                              f"{reason}")
        arch = self.cfg.model.get("config") or {}
        masked = [f"model.config.{k}" for k, v in arch.items() if v == MASK]
        if masked and self.cfg.model.pretrained is None and self.is_adapter:
            raise DeployError(f"run {self.run_id} recorded {masked} masked as secrets, so its "
                              "random-init architecture cannot be rebuilt from its record")
