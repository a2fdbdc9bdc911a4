"""Hydra callbacks for multiruns: one sweep id and one parent MLflow run per multirun."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from hydra.experimental.callback import Callback
from mlflow.entities import RunTag
from omegaconf import DictConfig

from tunelab.tracking.store import artifact_root, client_for, experiment_id, tracking_uri

SWEEP_ENV = "TUNELAB_SWEEP_ID"


def sweep_id_for(sweep_dir: str) -> str:
    """The same id for every job of a multirun, from its (shared) sweep folder."""
    return hashlib.sha1(str(Path(sweep_dir).resolve()).encode()).hexdigest()[:12]


class SweepCallback(Callback):
    """Creates the parent run at multirun start; jobs (any launcher) find it by sweep id."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        sweep_id = sweep_id_for(config.hydra.sweep.dir)
        os.environ[SWEEP_ENV] = sweep_id
        uri = tracking_uri(config.tracking.uri, config.paths.mlruns_dir)
        client = client_for(uri)
        exp = experiment_id(client, config.tracking.experiment,
                            artifact_root(uri, config.paths.mlruns_dir))
        overrides = " ".join(config.hydra.overrides.task)
        run = client.create_run(exp, run_name=f"sweep-{sweep_id}", tags={
            "tunelab.run_kind": "sweep", "tunelab.sweep_id": sweep_id,
            "tunelab.overrides": overrides, "tunelab.sweep_dir": str(config.hydra.sweep.dir)})
        self._client, self._run_id = client, run.info.run_id

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if getattr(self, "_run_id", None):
            self._client.log_batch(self._run_id, tags=[RunTag("tunelab.sweep_status", "done")])
            self._client.set_terminated(self._run_id, "FINISHED")
