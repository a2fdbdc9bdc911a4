"""`tunelab-eval`: a finished training run's weights scored on a split of its own data or on a new
labelled file, recorded as a new run of kind `eval` in the same experiment.

Predictions come from the task pipeline an export serves (tunelab.deploy.pipeline), and metrics
are the task's own, computed as training computed them, under an `eval/` prefix whatever the
split (fractions in [0, 1]):

- classification: `eval/acc`, `eval/f1`, `eval/loss` (cross-entropy; with head=generate the
  label tokens' loss, training's val/loss).
- qa: `eval/em`, `eval/f1` (SQuAD-normalised, against every gold answer of a question); decoder
  QA adds `eval/ppl` and `eval/loss` over answer tokens.
- instruct: `eval/em` (greedy answers of every row, not only task.generate_eval_samples of them),
  `eval/ppl`, `eval/loss` over response tokens. lm (decoders): `eval/ppl`, `eval/loss`.

The param `eval.split` or `eval.data_file` says what was scored, and `predictions.jsonl` holds
every row's reference and prediction. The training run is never written to.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import datasets
import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.entities import Run
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from torchmetrics import MeanMetric

from tunelab import build, data, tasks
from tunelab.data.sources import FILE_BUILDERS, RawData, unnest
from tunelab.deploy.classifier import TextClassifier
from tunelab.deploy.generation import LabelScorer, TextGenerator
from tunelab.deploy.pipeline import Pipeline, load_pipeline
from tunelab.deploy.qa import SpanReader, allows_null
from tunelab.deploy.runs import DeployError, TrainedRun
from tunelab.models.generative import ExactMatch, GenerativeHead
from tunelab.models.metrics import task_metrics
from tunelab.models.qa_metrics import squad_scores
from tunelab.tracking import names
from tunelab.tracking.writer import RunWriter, dataset_digest, recorded_data_digests

log = logging.getLogger("tunelab")


@dataclass
class EvalData:
    """The rows to score, with where they came from (for the MLflow dataset input)."""

    rows: datasets.Dataset
    builder: str                # the `datasets` builder that read them (json, csv, ...)
    file: str | None
    digest: str
    name: str                   # the split, or the file's name
    task_data: object | None = None     # the task's data bound to these rows (None: raw_rows)
    allow_null: bool = False    # qa: the run's training data had unanswerable questions

    @classmethod
    def from_split(cls, trained: TrainedRun, split: str) -> EvalData:
        """Re-read the run's own data as it trained on it (`build.build_data`, its recorded data
        config; qa rows come normalised)."""
        cfg = trained.cfg
        inputs = build.build_data(cfg)
        raw, task_data = inputs.raw, inputs.task_data
        if split not in raw.splits:
            raise DeployError(f"run {trained.run_id}'s data has no {split!r} split; it has "
                              f"{list(raw.splits)} (or give --data-file)")
        # The rows themselves, not the config hash: that also covers the hardware as it resolves
        # on this machine (precision `auto`, a GPU), which says nothing about the data.
        recorded = recorded_data_digests(trained.run)
        if recorded and dataset_digest(raw.digest) not in recorded:
            log.warning("the data read now differs from what run %s read when it trained",
                        trained.run_id)
        builder, file = raw.origins[split]
        return cls(raw.splits[split], builder, file, raw.digest, split, task_data,
                   bool(getattr(task_data, "with_negatives", False)))

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
        # the columns the run's task reads (a SQuAD JSON file, nested under `data`, needs none)
        wanted = tasks.kind(trained.cfg.task.kind).file_columns(trained.cfg.data,
                                                                rows.column_names)
        missing = {key: col for key, col in wanted.items() if col not in rows.column_names}
        if missing:
            raise DeployError(f"--data-file {path} lacks the column(s) "
                              f"{sorted(missing.values())} that run {trained.run_id} trained on "
                              f"({', '.join(f'{k}={v}' for k, v in missing.items())}); it has "
                              f"{rows.column_names}")
        if len(rows) == 0:
            raise DeployError(f"--data-file {path} has no rows")
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        cfg, where = trained.cfg, str(file.resolve())
        spec = tasks.spec_for(cfg.task, cfg.model.family)
        if spec.raw_rows:
            return cls(rows, builder, where, digest, file.name)
        # The task's own checks and normalisation (SQuAD nesting, answer starts) read the file as
        # they read a train split; gold labels are checked against the run's (gold_ids).
        raw = RawData(datasets.DatasetDict({"train": rows}), digest, where, {"train": where},
                      {"train": (builder, where)})
        unnest(raw, cfg.data, cfg.task)
        task_data = data.task_data_for(raw, cfg.data, cfg.task, cfg.model.family)
        null = spec.null_answers and allows_null(cfg)
        return cls(raw.splits["train"], builder, where, digest, file.name, task_data, null)


def gold_ids(trained: TrainedRun, rows: datasets.Dataset) -> torch.Tensor:
    """Label names -> the run's label ids; a label the run never saw is an error, not a miss."""
    index = {name: i for i, name in enumerate(trained.labels)}
    gold = [str(v) for v in rows[trained.cfg.data.label_column]]
    unseen = sorted(set(gold) - set(index))
    if unseen:
        raise DeployError(f"labels {unseen} are not among the labels run {trained.run_id} "
                          f"trained on: {trained.labels}")
    return torch.tensor([index[g] for g in gold])


@dataclass
class Scored:
    metrics: dict[str, float]
    predictions: pd.DataFrame | None


def token_metrics(trained: TrainedRun, pipeline: Pipeline, source: EvalData,
                  references: list[str] | None = None) -> dict[str, float]:
    """A decoder's `eval/loss` (and `eval/ppl` when the task writes free text) over the rows as
    its validation computed them: the task's encoding, batches of `data.batch_size`, and
    GenerativeHead's forward and eval step. Appends each row's decoded reference answer to
    `references` (what em compares with, as in training)."""
    cfg, tokenizer = trained.cfg, pipeline.tokenizer
    task = OmegaConf.merge(cfg.task, {"generate_eval_samples": 0})  # answers come from pipeline
    head = GenerativeHead(task, tokenizer, "decoder", cfg.objective, trained.labels)
    spec = head.spec
    encoded = source.rows.map(source.task_data.encode, batched=True,
                              remove_columns=source.rows.column_names,
                              fn_kwargs={"tokenizer": tokenizer,
                                         "max_length": cfg.data.max_length})
    loader = DataLoader(encoded, batch_size=int(cfg.data.batch_size),
                        collate_fn=source.task_data.collator(tokenizer))
    metrics, mean = task_metrics(spec, len(trained.labels)), MeanMetric()
    classify = spec.prompt == "label"
    with torch.no_grad():
        for batch in loader:
            if classify:    # eval_step would also score every label again
                out = head.forward(pipeline.net, batch, deterministic=True)
                mean.update(out.loss, weight=batch["input_ids"].shape[0])
            else:
                head.eval_step(pipeline.net, batch, metrics, mean)
            if references is not None:
                references += head.references(batch, batch["input_ids"].shape[0])
    values = {"eval/loss": float(mean.compute())}
    if not classify:
        values["eval/ppl"] = float(metrics["ppl"].compute())
    return values


def score_classification(trained: TrainedRun, pipeline: TextClassifier,
                         source: EvalData) -> Scored:
    gold = gold_ids(trained, source.rows)
    frame = source.rows.to_pandas()
    logits = pipeline.logits(*pipeline.texts(frame))
    metrics = task_metrics(tasks.spec_for(trained.cfg.task, trained.cfg.model.family),
                           len(trained.labels))
    values = {f"eval/{k}": float(v) for k, v in metrics(logits.argmax(-1), gold).items()}
    if isinstance(pipeline, LabelScorer):
        values.update(token_metrics(trained, pipeline, source))
    else:
        values["eval/loss"] = float(torch.nn.functional.cross_entropy(logits, gold))
    predictions = pipeline.frame(logits)
    predictions.insert(0, "gold", [trained.labels[i] for i in gold.tolist()])
    predictions.insert(0, "text", frame[pipeline.text_column].astype(str).tolist())
    return Scored(values, predictions)


def score_qa(trained: TrainedRun, pipeline: SpanReader | TextGenerator,
             source: EvalData) -> Scored:
    rows = source.rows
    frame = pd.DataFrame(dict(zip(pipeline.inputs, (rows["question"], rows["context"]))))
    predictions = pipeline.predict(frame)
    golds = [answers["text"] for answers in rows["answers"]]
    scores = squad_scores(dict(enumerate(predictions["answer"])), dict(enumerate(golds)))
    values = {f"eval/{k}": float(v) for k, v in scores.items()}
    if isinstance(pipeline, TextGenerator):
        values.update(token_metrics(trained, pipeline, source))
    predictions.insert(0, "gold", golds)
    predictions.insert(0, "question", rows["question"])
    predictions.insert(0, "id", rows["id"])
    return Scored(values, predictions)


def score_generation(trained: TrainedRun, pipeline: TextGenerator, source: EvalData) -> Scored:
    if not pipeline.spec.generated_metrics():     # lm: nothing to answer
        return Scored(token_metrics(trained, pipeline, source), None)
    references: list[str] = []
    values = token_metrics(trained, pipeline, source, references)
    frame = source.rows.to_pandas()
    answers = pipeline.generate(pipeline.prompt_ids(frame))
    em = ExactMatch()
    em.update(answers, references)
    values["eval/em"] = float(em.compute())
    prompts = frame[pipeline.inputs[0]].astype(str).tolist()
    return Scored(values, pd.DataFrame({"prompt": prompts, "reference": references,
                                        "response": answers}))


SCORERS = {"text-classification": score_classification, "question-answering": score_qa,
           "text-generation": score_generation}   # by the pipeline's model type


def evaluate(client: MlflowClient, run: Run, split: str = "test",
             data_file: str | None = None) -> Run:
    """Score the run's weights and record a FINISHED `eval` run; return it."""
    with tempfile.TemporaryDirectory(prefix="tunelab-eval-") as tmp:
        trained = TrainedRun.fetch(client, run, Path(tmp))
        source = EvalData.from_file(trained, data_file) if data_file else \
            EvalData.from_split(trained, split)
        pipeline = load_pipeline(trained.cfg, trained.labels, trained.weights,
                                 trained.base_weights, source.allow_null)
        scored = SCORERS[pipeline.model_type](trained, pipeline, source)
    params = {"eval.source_run": trained.run_id, "eval.samples": len(source.rows),
              **({"eval.data_file": source.file} if data_file else {"eval.split": split})}
    predictions = None if scored.predictions is None else \
        scored.predictions.to_json(orient="records", lines=True, force_ascii=False)
    return record(client, trained, source, scored.metrics, params, predictions)


def record(client: MlflowClient, trained: TrainedRun, source: EvalData,
           metrics: dict[str, float], params: dict[str, object],
           predictions: str | None) -> Run:
    """A new `eval` run beside the training run, linked to it by `tunelab.source_run`; opened
    through tracking's RunWriter, so its name, params and dataset input are masked as a training
    run's are."""
    tags = {names.SOURCE_RUN: trained.run_id,
            names.SOURCE_CONFIG_HASH: trained.run.data.tags.get(names.CONFIG_HASH, "")}
    name = f"eval-{trained.run.info.run_name or trained.run_id}-{source.name}"
    with RunWriter.create(client, trained.run.info.experiment_id, names.EVAL, name,
                          tags) as run:
        run.log_metrics(metrics)
        run.log_params(params)
        if predictions is not None:
            run.log_text(predictions, "predictions.jsonl")
        run.log_input(source.rows, source.builder, source.file, source.digest,
                      f"{trained.cfg.task.name}-eval", "eval", split=source.name)
    return client.get_run(run.run_id)

