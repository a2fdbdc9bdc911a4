"""`tunelab-eval`: a finished training run's weights scored on a split of its own data or on a new
labelled file, recorded as a new run of kind `eval` in the same experiment.

Metrics are the task's own, computed with the same torchmetrics objects as training, under an
`eval/` prefix whatever the split (`eval/acc`, `eval/f1`, fractions in [0, 1], and `eval/loss`);
the param `eval.split` or `eval.data_file` says what was scored, and `predictions.jsonl` holds
every row's gold label, prediction and score. The training run is never written to.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import mlflow
import torch
from mlflow import MlflowClient
from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource
from mlflow.entities import DatasetInput, InputTag, Metric, Param, Run, RunStatus
from omegaconf import OmegaConf

from tunelab import data
from tunelab.data.sources import FILE_BUILDERS
from tunelab.deploy.classifier import TextClassifier, build_net, load_trained_tokenizer
from tunelab.deploy.runs import DeployError, TrainedRun
from tunelab.models.module import task_metrics
from tunelab.tracking.params import config_hash

log = logging.getLogger("tunelab")


@dataclass
class EvalData:
    """The rows to score, with where they came from (for the MLflow dataset input)."""

    rows: datasets.Dataset
    builder: str                # the `datasets` builder that read them (json, csv, ...)
    file: str | None
    digest: str
    name: str                   # the split, or the file's name

    @classmethod
    def from_split(cls, trained: TrainedRun, split: str) -> EvalData:
        """Re-read the run's own data through tunelab.data with its recorded data config."""
        cfg = trained.cfg
        raw = data.load_splits(cfg.data, cfg.task, Path(cfg.paths.cache_dir))
        if split not in raw.splits:
            raise DeployError(f"run {trained.run_id}'s data has no {split!r} split; it has "
                              f"{list(raw.splits)} (or give --data-file)")
        recorded = trained.run.data.tags.get("tunelab.config_hash")
        if recorded and config_hash(OmegaConf.to_container(cfg), raw.digest) != recorded:
            log.warning("the data read now differs from what run %s read when it trained",
                        trained.run_id)
        builder, file = raw.origins[split]
        return cls(raw.splits[split], builder, file, raw.digest, split)

    @classmethod
    def from_file(cls, trained: TrainedRun, path: str) -> EvalData:
        """A labelled file with the columns the run trained on."""
        file = Path(path).expanduser()
        if file.suffix.lower() not in FILE_BUILDERS:
            raise DeployError(f"--data-file {path}: not one of {sorted(FILE_BUILDERS)}")
        if not file.is_file():
            raise DeployError(f"--data-file {path}: no such file (relative to {Path.cwd()})")
        builder, kwargs = FILE_BUILDERS[file.suffix.lower()]
        try:
            rows = datasets.load_dataset(builder, data_files={"eval": str(file.resolve())},
                                         split="eval", **kwargs)
        except Exception as err:  # noqa: BLE001 - datasets raises many types for unreadable files
            raise DeployError(f"--data-file {path}: not a readable {file.suffix} file ({err})") \
                from None
        wanted = {"data.text_column": trained.cfg.data.text_column,
                  "data.label_column": trained.cfg.data.label_column}
        if trained.cfg.data.text_pair_column:
            wanted["data.text_pair_column"] = trained.cfg.data.text_pair_column
        missing = {key: col for key, col in wanted.items() if col not in rows.column_names}
        if missing:
            raise DeployError(f"--data-file {path} lacks the column(s) "
                              f"{sorted(missing.values())} that run {trained.run_id} trained on "
                              f"({', '.join(f'{k}={v}' for k, v in missing.items())}); it has "
                              f"{rows.column_names}")
        if len(rows) == 0:
            raise DeployError(f"--data-file {path} has no rows")
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        return cls(rows, builder, str(file.resolve()), digest, file.name)


def gold_ids(trained: TrainedRun, rows: datasets.Dataset) -> torch.Tensor:
    """Label names -> the run's label ids; a label the run never saw is an error, not a miss."""
    index = {name: i for i, name in enumerate(trained.labels)}
    gold = [str(v) for v in rows[trained.cfg.data.label_column]]
    unseen = sorted(set(gold) - set(index))
    if unseen:
        raise DeployError(f"labels {unseen} are not among the labels run {trained.run_id} "
                          f"trained on: {trained.labels}")
    return torch.tensor([index[g] for g in gold])


def score(trained: TrainedRun, logits: torch.Tensor, gold: torch.Tensor) -> dict[str, float]:
    metrics = task_metrics(trained.cfg.task, len(trained.labels))
    values = {f"eval/{k}": float(v) for k, v in metrics(logits.argmax(-1), gold).items()}
    values["eval/loss"] = float(torch.nn.functional.cross_entropy(logits, gold))
    return values


def evaluate(client: MlflowClient, run: Run, split: str = "test",
             data_file: str | None = None) -> Run:
    """Score the run's weights and record a FINISHED `eval` run; return it."""
    with tempfile.TemporaryDirectory(prefix="tunelab-eval-") as tmp:
        trained = TrainedRun.fetch(client, run, Path(tmp))
        source = EvalData.from_file(trained, data_file) if data_file else \
            EvalData.from_split(trained, split)
        gold = gold_ids(trained, source.rows)
        tokenizer = load_trained_tokenizer(trained.weights)
        net = build_net(trained.cfg, trained.labels, trained.weights, tokenizer,
                        trained.base_weights)
        classifier = TextClassifier(net, tokenizer, trained.labels, trained.cfg.data.max_length)
        columns = trained.cfg.data
        texts = [str(t) for t in source.rows[columns.text_column]]
        pairs = [str(t) for t in source.rows[columns.text_pair_column]] \
            if columns.text_pair_column else None
        logits = classifier.logits(texts, pairs)
    predictions = classifier.frame(logits)
    predictions.insert(0, "gold", [trained.labels[i] for i in gold.tolist()])
    predictions.insert(0, "text", texts)
    params = {"eval.source_run": trained.run_id, "eval.samples": len(gold),
              **({"eval.data_file": source.file} if data_file else {"eval.split": split})}
    return record(client, trained, source, score(trained, logits, gold), params,
                  predictions.to_json(orient="records", lines=True))


def record(client: MlflowClient, trained: TrainedRun, source: EvalData,
           metrics: dict[str, float], params: dict[str, object], predictions: str) -> Run:
    """A new `eval` run beside the training run, linked to it by `tunelab.source_run`."""
    tags = {"tunelab.run_kind": "eval", "tunelab.source_run": trained.run_id,
            "tunelab.source_config_hash": trained.run.data.tags.get("tunelab.config_hash", "")}
    name = f"eval-{trained.run.info.run_name or trained.run_id}-{source.name}"
    run = client.create_run(trained.run.info.experiment_id, run_name=name, tags=tags)
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                         params=[Param(k, str(v)) for k, v in params.items()])
        client.log_text(run_id, predictions, "predictions.jsonl")
        hf_source = HuggingFaceDatasetSource(path=source.builder, data_files=source.file,
                                             split=source.name)
        entry = mlflow.data.from_huggingface(source.rows, source=hf_source,
                                             digest=source.digest[:36],
                                             name=f"{trained.cfg.task.name}-eval")
        client.log_inputs(run_id, [DatasetInput(entry._to_mlflow_entity(),
                                                tags=[InputTag("mlflow.data.context", "eval")])])
    except BaseException:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    return client.get_run(run_id)

