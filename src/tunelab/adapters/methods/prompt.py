"""Prompt tuning (peft PromptTuningConfig): trained embeddings prepended to the input only; the
fewest trained parameters of the peft family. Adds virtual tokens, so it cannot merge."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig
from peft import PeftType, PromptTuningConfig, TaskType

from tunelab import tasks
from tunelab.adapters.method import POSITIVE_INT, PeftMethod, setting


@dataclass
class Prompt(PeftMethod):
    """A trained soft prompt in front of the input embeddings."""
    num_virtual_tokens: int = setting(20, check=POSITIVE_INT,
                                      doc="soft-prompt length: more capacity, longer sequences and "
                                          "positions used")

    merges = False
    config_class = PromptTuningConfig
    peft_type = PeftType.PROMPT_TUNING

    def padding_side(self, model: DictConfig, task: DictConfig) -> str | None:
        """Prompt tuning hands a decoder classifier embeddings instead of ids, so transformers
        cannot find each row's last real token and pools the last position, a pad on right-padded
        rows: a row's prediction then depends on what else is in its batch. Left padding puts the
        row's own last token there (peft's examples pad decoders left for the same reason). The
        run's saved tokenizer keeps the side, so evaluation and exports pad as training did."""
        classifier = tasks.spec_for(task, model.family).peft_task_type == TaskType.SEQ_CLS
        return "left" if model.family == "decoder" and classifier else None
