"""One way to open and write an MLflow run of any kind: a training run (through TrackedRun), a
sweep's or study's parent, an eval, a compare report, a reproduce re-run.

What a caller hands in as a value is masked on the way to the store (tracking.masking): the run
name, every tag and param value, a dataset input's source, an error's text; so a run of any kind
masks what a training run masks. Artifacts go as given (the caller's files: a training run's
config.yaml is its already masked config). Light (MLflow only, no torch), so compare/ writes its
report run through it too.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import mlflow
from mlflow import MlflowClient
from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunStatus, RunTag

from tunelab.tracking import names
from tunelab.tracking.masking import mask_text, masked

BATCH = 100             # MLflow's limit on params per log_batch call
ERROR_TAG_LIMIT = 4900  # under MLflow's tag value limit; error.txt holds the whole traceback


def dataset_digest(digest: str) -> str:
    """The part of tunelab's data digest (sha256 of the rows read) that a dataset input records:
    MLflow keeps at most 36 characters of a dataset's digest."""
    return digest[:36]


def recorded_data_digests(run) -> set[str]:
    """The data digests `run`'s dataset inputs recorded (empty for runs that recorded none)."""
    return {entry.dataset.digest for entry in run.inputs.dataset_inputs} if run.inputs else set()


def masked_params(params: dict[str, Any]) -> dict[str, str]:
    """Param values as MLflow stores them (strings), masked by key name and by value."""
    return {k: str(masked(str(v), k)) for k, v in params.items()}


def masked_tags(tags: dict[str, Any]) -> dict[str, str]:
    """Tag values as MLflow stores them, masked: for runs here, and for the LoggedModels and
    registry versions tunelab-export tags with their lineage."""
    return {k: mask_text(str(v)) for k, v in tags.items()}


@dataclass
class RunWriter:
    """An open MLflow run; names, tags, params and dataset sources are masked as they go in."""

    client: MlflowClient
    run_id: str

    @classmethod
    def create(cls, client: MlflowClient, experiment_id: str, kind: str, name: str,
               tags: dict[str, str] | None = None) -> RunWriter:
        """A new RUNNING run of `kind` (tag tunelab.run_kind) named `name`."""
        tags = {names.RUN_KIND: kind, **(tags or {})}
        run = client.create_run(experiment_id, run_name=mask_text(name), tags=masked_tags(tags))
        return cls(client, run.info.run_id)

    @classmethod
    def reopen(cls, client: MlflowClient, run_id: str,
               tags: dict[str, str] | None = None) -> RunWriter:
        """An earlier run continued (a resumed training run, a rejoined sweep parent): RUNNING
        again, with `tags` set."""
        client.update_run(run_id, status="RUNNING")
        writer = cls(client, run_id)
        writer.tag(tags or {})
        return writer

    # ---- writing -----------------------------------------------------------------------------
    def tag(self, tags: dict[str, str]) -> None:
        if tags:
            self.client.log_batch(self.run_id, tags=[RunTag(k, v)
                                                     for k, v in masked_tags(tags).items()])

    def untag(self, key: str) -> None:
        self.client.delete_tag(self.run_id, key)

    def log_params(self, params: dict[str, Any]) -> None:
        batch = [Param(k, v) for k, v in masked_params(params).items()]
        for start in range(0, len(batch), BATCH):
            self.client.log_batch(self.run_id, params=batch[start:start + BATCH])

    def log_metrics(self, metrics: dict[str, float] | list[Metric], step: int = 0) -> None:
        """`metrics` at `step`, or MLflow Metrics as they are (their own steps and times)."""
        if isinstance(metrics, dict):
            now = int(time.time() * 1000)
            metrics = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def log_text(self, text: str, path: str) -> None:
        self.client.log_text(self.run_id, text, path)

    def log_dict(self, data: dict, path: str) -> None:
        self.client.log_dict(self.run_id, data, path)

    def log_artifacts(self, folder: Path, path: str) -> None:
        self.client.log_artifacts(self.run_id, str(folder), path)

    def log_input(self, dataset, path: str, data_files: str | None, digest: str, name: str,
                  context: str, split: str | None = None) -> None:
        """Record rows read as an MLflow dataset input (the UI's Datasets column): `path` is the
        Hub id or the `datasets` builder that read `data_files`; `context` its role (train,
        validation, eval, ...)."""
        source = HuggingFaceDatasetSource(path=mask_text(path), split=mask_text(split or context),
                                          data_files=data_files and mask_text(data_files))
        entry = mlflow.data.from_huggingface(dataset, source=source, digest=dataset_digest(digest),
                                             name=mask_text(name))
        self.client.log_inputs(self.run_id, [DatasetInput(
            entry._to_mlflow_entity(), tags=[InputTag(names.DATA_CONTEXT, context)])])

    # ---- closing -----------------------------------------------------------------------------
    def finish(self, status: str = RunStatus.to_string(RunStatus.FINISHED)) -> None:
        """End the run FINISHED, or with the `status` its owner decided (a sweep's parent ends
        FAILED when a job failed, KILLED when it was stopped)."""
        self.client.set_terminated(self.run_id, status)

    def fail(self, exc_type: type[BaseException], exc: BaseException,
             tb: TracebackType | None) -> None:
        """End FAILED with the error recorded (tag tunelab.error, error.txt), or KILLED when the
        user interrupted (Lightning turns Ctrl-C into sys.exit(1): the run was killed, not
        failed)."""
        if isinstance(exc, SystemExit) and isinstance(exc.__context__, KeyboardInterrupt):
            exc = exc.__context__
            exc_type, tb = KeyboardInterrupt, exc.__traceback__
        self.tag({names.ERROR: mask_text(f"{exc_type.__name__}: {exc}")[:ERROR_TAG_LIMIT]})
        self.log_text(mask_text("".join(traceback.format_exception(exc_type, exc, tb))),
                      "error.txt")
        killed = isinstance(exc, KeyboardInterrupt)
        self.client.set_terminated(self.run_id, "KILLED" if killed else "FAILED")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        """FINISHED when the block ends normally, else FAILED (or KILLED) with the error."""
        if exc is None:
            self.finish()
        else:
            self.fail(exc_type, exc, tb)
        return False
