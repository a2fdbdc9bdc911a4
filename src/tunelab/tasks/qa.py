"""Question answering on SQuAD-format rows (conf/task/qa.yaml): a span of the context (encoders)
or the answer written by a decoder. Data: tunelab.data.qa; metrics: tunelab.models.qa_metrics."""

from __future__ import annotations

from tunelab.tasks.spec import CAUSAL_LM, QUESTION_ANSWERING, MetricSpec, TaskKind, TaskSpec

KIND = TaskKind("qa", columns={"question": "question_column", "context": "context_column",
                               "answers": "answer_column"}, generators=("qa",),
                nested="data", unnest="tunelab.data.qa:squad_rows")
_COMMON = {"kind": "qa", "inputs": ("question_column", "context_column"),
           "output": "answer", "model_type": "question-answering"}

SPECS = (
    TaskSpec(head="span", family="encoder", auto_class=QUESTION_ANSWERING,
             peft_task_type="QUESTION_ANS", data="tunelab.data.qa:QaData",
             metric_specs=(MetricSpec("squad", ("em", "f1"),
                                      "tunelab.models.metrics:squad_spans"),),
             pipeline="tunelab.deploy.qa:SpanReader", windows=True, null_answers=True, **_COMMON),
    TaskSpec(head="generate", family="decoder", auto_class=CAUSAL_LM, peft_task_type="CAUSAL_LM",
             data="tunelab.data.generative:GenerateQaData",
             metric_specs=(MetricSpec("ppl", ("ppl",), "tunelab.models.metrics:perplexity"),
                           MetricSpec("squad", ("em", "f1"),
                                      "tunelab.models.metrics:squad_answers", generated=True)),
             pipeline="tunelab.deploy.generation:TextGenerator", generative=True, prompt="qa",
             **_COMMON),
)
