"""The task's inference pipeline for a trained run: which columns it takes, what it returns, and
the code that computes it. Evaluation, export and the served pyfunc model all predict through it.
The task registry (`TaskSpec.pipeline`, `inputs`, `output`, `model_type`) says which one a run's
task kind, head and model family get:

| run | pipeline | inputs | outputs | params |
| --- | --- | --- | --- | --- |
| classification, head=classifier | TextClassifier | data.text_column (+ text_pair_column) | label, score | |
| classification, head=generate | LabelScorer | same | label, score | |
| qa, encoder (span) | SpanReader | data.question_column, data.context_column | answer, score | |
| qa, head=generate (decoder) | TextGenerator | same | answer | max_new_tokens |
| instruct (decoder) | TextGenerator | data.prompt_column | response | max_new_tokens |
| lm (decoder) | TextGenerator | prompt | response | max_new_tokens |
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch
from omegaconf import DictConfig
from transformers import PreTrainedTokenizerBase

from tunelab import tasks
from tunelab.deploy.classifier import TextClassifier, build_net, load_trained_tokenizer
from tunelab.deploy.generation import LabelScorer, TextGenerator
from tunelab.deploy.qa import SpanReader, reads_token_types


class Pipeline(Protocol):
    model_type: str             # the LoggedModel's model_type
    inputs: list[str]           # input columns, in signature order
    params: dict[str, Any]      # per-request params and their defaults (the signature's params)

    def predict(self, frame: pd.DataFrame, params: dict | None = None) -> pd.DataFrame: ...


EXAMPLE_TEXTS = ("an example sentence to classify", "another example, to show a batch")
EXAMPLE_QA = {"question": ["Who wrote the report?", "Where is Lumen based?"],
              "context": ["The report was written by Ada Moreau in 1998.",
                          "Lumen makes lamps. Lumen is based in Oslo and employs 40 people."]}
EXAMPLE_PROMPTS = ("Reverse the word: lamp", "What is 3 plus 4?")


def unsupported(cfg: DictConfig) -> str | None:
    """Why a run has no deployable pipeline, or None when it has one."""
    task, family = cfg.task, cfg.model.family
    try:
        spec = tasks.spec_for(task, family)
    except KeyError as err:
        return f"{err.args[0]}: no inference pipeline"
    if spec.pipeline is None:
        return (f"a {family} {task.kind} run writes no text (masked LM); start a fine-tune from "
                "it with model.init_from=<run id> and deploy that")
    return None


def make_pipeline(cfg: DictConfig, labels: list[str], net: torch.nn.Module,
                  tokenizer: PreTrainedTokenizerBase, allow_null: bool = False,
                  token_types: bool | None = None) -> Pipeline:
    """The pipeline the task registry names for the run, around its trained network. Batches are
    the run's `data.batch_size`, so padding matches what its validation saw. `allow_null` and
    `token_types` are for extractive QA (SpanReader); `token_types` defaults to what `net`
    reads, and a merged export passes what the network it was merged from read."""
    task, columns = cfg.task, cfg.data
    spec = tasks.spec_for(task, cfg.model.family)
    common = {"batch_size": int(columns.batch_size)}
    kind = tasks.load(spec.pipeline)
    if kind is SpanReader:
        return SpanReader(net, tokenizer, columns.max_length, task.doc_stride,
                          *spec.input_columns(columns), allow_null,
                          reads_token_types(net) if token_types is None else token_types,
                          **common)
    if kind is TextGenerator:
        return TextGenerator(net, tokenizer, task, cfg.objective, columns.max_length,
                             spec.input_columns(columns), **common)
    args = (net, tokenizer, labels, columns.max_length, columns.text_column,
            columns.text_pair_column)
    if kind is LabelScorer:
        return LabelScorer(*args, **common, task=task, objective=cfg.objective)
    return TextClassifier(*args, **common)


def load_pipeline(cfg: DictConfig, labels: list[str], weights: Path,
                  base_weights: Path | None = None, allow_null: bool = False,
                  token_types: bool | None = None) -> Pipeline:
    """The pipeline of a weights folder (full, merged, or an adapter on its rebuilt base)."""
    tokenizer = load_trained_tokenizer(weights)
    net = build_net(cfg, labels, weights, tokenizer, base_weights)
    return make_pipeline(cfg, labels, net, tokenizer, allow_null, token_types)


def input_example(pipeline: Pipeline) -> pd.DataFrame:
    """Two rows of input for the model's signature and input example."""
    if pipeline.model_type == "question-answering":
        return pd.DataFrame(dict(zip(pipeline.inputs, EXAMPLE_QA.values())))
    if pipeline.model_type == "text-generation":
        return pd.DataFrame({pipeline.inputs[0]: list(EXAMPLE_PROMPTS)})
    rows = {pipeline.inputs[0]: list(EXAMPLE_TEXTS)}
    if len(pipeline.inputs) == 2:
        rows[pipeline.inputs[1]] = list(EXAMPLE_TEXTS[::-1])
    return pd.DataFrame(rows)
