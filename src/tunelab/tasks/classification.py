"""Classification (conf/task/sentiment.yaml, intent.yaml): one label per text (or text pair)."""

from __future__ import annotations

from tunelab.tasks.spec import CAUSAL_LM, SEQUENCE_CLASSIFICATION, MetricSpec, TaskKind, TaskSpec

KIND = TaskKind("classification", columns={"text": "text_column", "label": "label_column"},
                optional_columns={"text_pair": "text_pair_column"},
                generators=("sentiment", "intent"))
METRICS = (MetricSpec("acc", ("acc",), "tunelab.models.metrics:accuracy"),
           MetricSpec("f1", ("f1",), "tunelab.models.metrics:macro_f1"))
_COMMON = {"kind": "classification", "metric_specs": METRICS,
           "inputs": ("text_column", "text_pair_column"),
           "output": "label", "model_type": "text-classification"}


def _classifier(family: str) -> TaskSpec:
    """A linear head on the pooled output (encoders, rnn) or on the last token (decoders)."""
    return TaskSpec(head="classifier", family=family, auto_class=SEQUENCE_CLASSIFICATION,
                    peft_task_type="SEQ_CLS",
                    data="tunelab.data.classification:ClassificationData",
                    pipeline="tunelab.deploy.classifier:TextClassifier", raw_rows=True,
                    **_COMMON)


SPECS = (
    _classifier("encoder"), _classifier("decoder"), _classifier("rnn"),
    # a decoder writes the label's words; the best-scoring label is its prediction
    TaskSpec(head="generate", family="decoder", auto_class=CAUSAL_LM, peft_task_type="CAUSAL_LM",
             data="tunelab.data.generative:GenerateClassificationData",
             pipeline="tunelab.deploy.generation:LabelScorer", generative=True, prompt="label",
             **_COMMON),
)
