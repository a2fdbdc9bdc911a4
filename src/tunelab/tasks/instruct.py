"""Supervised fine-tuning on prompt/response pairs (conf/task/instruct.yaml), decoders only."""

from __future__ import annotations

from tunelab.tasks.spec import CAUSAL_LM, MetricSpec, TaskKind, TaskSpec

KIND = TaskKind("instruct", columns={"prompt": "prompt_column", "response": "response_column"},
                generators=("instruct",))
SPECS = (
    TaskSpec(kind="instruct", head="generate", family="decoder", auto_class=CAUSAL_LM,
             peft_task_type="CAUSAL_LM", data="tunelab.data.generative:InstructData",
             metric_specs=(MetricSpec("ppl", ("ppl",), "tunelab.models.metrics:perplexity"),
                           MetricSpec("em", ("em",), "tunelab.models.metrics:exact_match",
                                      generated=True)),
             pipeline="tunelab.deploy.generation:TextGenerator",
             inputs=("prompt_column",), output="response", model_type="text-generation",
             generative=True, prompt="chat"),
)
