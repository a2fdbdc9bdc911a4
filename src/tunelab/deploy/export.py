"""`tunelab-export`: a training run's weights as a deployable MLflow Model, optionally registered.

The model is an MLflow LoggedModel in the run's experiment whose `source_run_id` is the training
run, so MLflow itself records the lineage while the training run's record stays untouched (no
new run kind is needed). Its artifacts are the run's config and labels plus either a merged
transformers folder (default: PEFT deltas folded into the base, nothing to rebuild at load) or
the run's adapter folder (`--no-merge`: the base is rebuilt at load from where the run got it).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus, Run
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from tunelab import adapters, tasks
from tunelab.deploy.classifier import build_net, load_trained_tokenizer
from tunelab.deploy.pipeline import Pipeline, input_example, make_pipeline
from tunelab.deploy.pyfunc import TunelabModel
from tunelab.deploy.qa import allows_null, reads_token_types
from tunelab.deploy.runs import DeployError, TrainedRun
from tunelab.tracking import names
from tunelab.tracking.identity import installed_versions
from tunelab.tracking.writer import masked_tags

log = logging.getLogger("tunelab")

REQUIREMENTS = ("tunelab", "torch", "transformers", "peft", "mlflow", "omegaconf", "pandas")


@dataclass
class Exported:
    model_uri: str                  # models:/<model id>; also runs:/<source run>/<model name>
    model_id: str
    source_run: str
    merged: bool
    registered_uri: str | None = None

    @property
    def uri(self) -> str:
        """What to serve or predict with: the registry alias/version when registered."""
        return self.registered_uri or self.model_uri


def lineage_tags(trained: TrainedRun, merged: bool) -> dict[str, str]:
    """The model's lineage, masked as run tags are (the base can be a local path or Hub id)."""
    cfg, tags = trained.cfg, trained.run.data.tags
    return masked_tags({names.SOURCE_RUN: trained.run_id,
                        names.CONFIG_HASH: tags.get(names.CONFIG_HASH, ""),
                        names.MERGED: str(merged).lower(), names.MODEL: cfg.model.name,
                        names.ADAPTER: cfg.adapter.name, names.TASK: cfg.task.name,
                        names.BASE: cfg.model.pretrained or
                        f"{cfg.model.name} config, seed {cfg.seed}"})


def _requirements() -> list[str]:
    return [f"{name}=={v}" for name, v in installed_versions(REQUIREMENTS).items()]


def _weights_to_log(trained: TrainedRun, merge: bool, folder: Path,
                    allow_null: bool) -> tuple[Path, Pipeline]:
    """The weights folder the model will carry, and the pipeline it loads as (for the example)."""
    if trained.is_adapter and not merge and trained.base_weights is not None:
        raise DeployError(f"run {trained.run_id} trained its adapter on the weights of run "
                          f"{trained.cfg.model.init_from} (model.init_from), which a served model "
                          "cannot rebuild offline; export it merged")
    tokenizer = load_trained_tokenizer(trained.weights)
    net = build_net(trained.cfg, trained.labels, trained.weights, tokenizer, trained.base_weights)
    if not trained.is_adapter:
        log.info("run %s saved the whole model (adapter=%s): nothing to merge",
                 trained.run_id, trained.cfg.adapter.name)
    if not merge or not trained.is_adapter:
        return trained.weights, make_pipeline(trained.cfg, trained.labels, net, tokenizer,
                                              allow_null)
    try:
        merged = adapters.merge(net)
    except ValueError as err:
        raise DeployError(f"run {trained.run_id} (adapter={trained.cfg.adapter.name}) cannot be "
                          f"merged: {err} (tunelab-export --no-merge does that: the adapter "
                          "on its recorded base)") from None
    token_types = reads_token_types(net)
    merged.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder, make_pipeline(trained.cfg, trained.labels, merged, tokenizer, allow_null,
                                 token_types)


def log_model(client: MlflowClient, run: Run, merge: bool) -> Exported:
    """Log the run's model as a READY LoggedModel; a failure leaves it FAILED, never half-READY."""
    with tempfile.TemporaryDirectory(prefix="tunelab-export-") as tmp:
        trained = TrainedRun.fetch(client, run, Path(tmp))
        cfg = trained.cfg
        allow_null = tasks.spec_for(cfg.task, cfg.model.family).null_answers and \
            allows_null(cfg)
        weights, pipeline = _weights_to_log(trained, merge, Path(tmp) / "merged" / "weights",
                                            allow_null)
        merged = merge and trained.is_adapter
        example = input_example(pipeline)
        output = pipeline.predict(example)
        model = mlflow.initialize_logged_model(
            name=f"{run.info.run_name or run.info.run_id}{'-merged' if merged else ''}",
            source_run_id=run.info.run_id, experiment_id=run.info.experiment_id,
            tags=lineage_tags(trained, merged), model_type=pipeline.model_type)
        try:
            mlflow.pyfunc.log_model(
                name=model.name, model_id=model.model_id, python_model=TunelabModel(),
                artifacts={"weights": str(weights),
                           "config": str(trained.config_file),
                           "labels": str(trained.labels_file)},
                model_config={"allow_null": allow_null,
                              "token_types": getattr(pipeline, "token_types", True)},
                signature=infer_signature(example, output, params=pipeline.params or None),
                input_example=example, pip_requirements=_requirements())
        except BaseException:
            mlflow.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
            raise
        mlflow.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    return Exported(f"models:/{model.model_id}", model.model_id, run.info.run_id, merged)


def register(client: MlflowClient, exported: Exported, name: str, alias: str | None,
             tags: dict[str, str]) -> str:
    """Register the model as a new version of `name` (tagged with its lineage) under `alias`;
    any failure removes what this call created, so nothing is left half-registered."""
    try:
        client.get_registered_model(name)
        created = False
    except MlflowException:
        created = True
    made = None
    try:
        made = mlflow.register_model(exported.model_uri, name, tags=tags)
        if alias:
            client.set_registered_model_alias(name, alias, made.version)
    except MlflowException as err:
        if made is not None:
            client.delete_model_version(name, made.version)
        if created:
            try:
                client.delete_registered_model(name)
            except MlflowException:
                pass    # the failure came before the registered model existed
        what = f"{name!r}" + (f" with alias {alias!r}" if alias else "")
        raise DeployError(f"could not register {exported.model_uri} as {what}: {err.message} "
                          "(the model stays logged, unregistered)") from None
    return f"models:/{name}@{alias}" if alias else f"models:/{name}/{made.version}"


def export(client: MlflowClient, run: Run, merge: bool = True, register_as: str | None = None,
           alias: str | None = None) -> Exported:
    """Log the run's model and, with `register_as`, register it under `alias`."""
    if alias and not register_as:
        raise DeployError("--alias names a registry alias; give --register NAME with it")
    exported = log_model(client, run, merge)
    if register_as:
        tags = client.get_logged_model(exported.model_id).tags
        lineage = {k: v for k, v in tags.items() if k.startswith(names.PREFIX)}
        exported.registered_uri = register(client, exported, register_as, alias, lineage)
    return exported
