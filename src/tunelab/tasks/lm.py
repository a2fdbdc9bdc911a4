"""Self-supervised (continued) pretraining on a text column (conf/task/lm.yaml): masked LM on
encoders, next token on decoders, whose LM head is also the head they generate with."""

from __future__ import annotations

from tunelab.tasks.spec import CAUSAL_LM, MASKED_LM, MetricSpec, TaskKind, TaskSpec

KIND = TaskKind("lm", columns={"text": "text_column"}, generators=("lm",))
_COMMON = {"kind": "lm",
           "metric_specs": (MetricSpec("ppl", ("ppl",), "tunelab.models.metrics:perplexity"),),
           "generative": True, "self_supervised": True, "prompt": "text"}
# a decoder continues the text of a `prompt` column (no data config key names it)
_WRITES = {"auto_class": CAUSAL_LM, "peft_task_type": "CAUSAL_LM",
           "data": "tunelab.data.generative:LanguageModelingData",
           "pipeline": "tunelab.deploy.generation:TextGenerator", "inputs": ("prompt",),
           "output": "response", "model_type": "text-generation", "family": "decoder"}

SPECS = (
    # a masked LM writes no text: nothing to serve; its weights start a later fine-tune
    TaskSpec(head="lm", family="encoder", auto_class=MASKED_LM, peft_task_type=None,
             data="tunelab.data.generative:LanguageModelingData", **_COMMON),
    TaskSpec(head="lm", **_WRITES, **_COMMON),
    TaskSpec(head="generate", **_WRITES, **_COMMON),
)
