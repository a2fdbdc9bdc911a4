"""Decoder runs rebuilt for inference: greedy text generation (`instruct`, `lm`, and `qa` with
`task.head=generate`) and classification by label likelihood (`task.head=generate`).

Prompts render through the run's chat template (`tunelab.data.generative.render`), and answers
come from the training evaluation's own `GenerativeHead.generate` and `score_labels`, so an
exported model writes and scores exactly as the run's validation did.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedTokenizerBase

from tunelab import tasks
from tunelab.data.generative import GenerateClassificationData, qa_prompt, render
from tunelab.deploy.classifier import TextClassifier
from tunelab.models.generative import GenerativeHead

# Answer length for `lm` runs, whose task config has no max_new_tokens (training never generates).
LM_MAX_NEW_TOKENS = 32


def _padded(prompts: list[list[int]], tokenizer: PreTrainedTokenizerBase) -> dict:
    """A batch as GenerativeHead reads it: right-padded ids and each row's prompt length."""
    batch = tokenizer.pad({"input_ids": prompts}, padding_side="right", return_tensors="pt")
    return {"input_ids": batch["input_ids"],
            "prompt_length": torch.tensor([len(p) for p in prompts])}


def text_end(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int | None]:
    """How the tokenizer ends a text (lm runs train on `tokenizer(text)`): the number of special
    tokens it appends, and the token to stop generation at (the last of them, else eos)."""
    full = tokenizer("x")["input_ids"]
    bare = tokenizer("x", add_special_tokens=False)["input_ids"]
    appended = len(full) - full.index(bare[0]) - len(bare)
    return appended, (full[-1] if appended else tokenizer.eos_token_id)


@dataclass
class TextGenerator:
    """Prompts (or question/context pairs for decoder QA) -> greedy answers.

    Inputs, output and model type are the task spec's (`prompt_column` or `prompt` -> `response`
    for instruct and lm, `question_column` + `context_column` -> `answer` for qa), and so is how
    a row becomes a prompt. `max_new_tokens` defaults to the run's `task.max_new_tokens` and is a
    per-request param."""

    net: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    task: DictConfig
    objective: DictConfig
    max_length: int
    inputs: list[str]
    batch_size: int = 32
    model_type: str = field(init=False)
    params: dict = field(init=False)

    def __post_init__(self) -> None:
        default = self.task.get("max_new_tokens") or LM_MAX_NEW_TOKENS
        self.params = {"max_new_tokens": int(default)}
        self.spec = tasks.spec_for(self.task, "decoder")
        self.output, self.model_type = self.spec.output, self.spec.model_type
        self.appended, self.lm_stop = text_end(self.tokenizer)

    def prompt_ids(self, frame: pd.DataFrame) -> list[list[int]]:
        """Token ids each row's answer continues, keeping the last `data.max_length` of them (the
        end a supervised example keeps when it truncates a prompt)."""
        if self.spec.prompt == "text":     # lm: the text itself, continued
            rows = [self.tokenizer(str(text))["input_ids"] for text in frame[self.inputs[0]]]
            rows = [ids[:len(ids) - self.appended] for ids in rows]
        elif self.spec.prompt == "qa":
            rows = [render(self.tokenizer, qa_prompt(str(q).strip(), str(c)), "")[0]
                    for q, c in zip(frame[self.inputs[0]], frame[self.inputs[1]])]
        else:
            rows = [render(self.tokenizer, str(p), "")[0] for p in frame[self.inputs[0]]]
        return [ids[-self.max_length:] for ids in rows]

    def head(self, max_new_tokens: int) -> GenerativeHead:
        task = OmegaConf.merge(self.task, {"max_new_tokens": int(max_new_tokens)})
        head = GenerativeHead(task, self.tokenizer, "decoder", self.objective, None)
        if self.spec.prompt == "text":
            head.stop_id = self.lm_stop     # a continued text ends where training texts ended
        return head

    def generate(self, prompts: list[list[int]], max_new_tokens: int | None = None) -> list[str]:
        head = self.head(max_new_tokens or self.params["max_new_tokens"])
        answers = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start:start + self.batch_size]
            answers += head.generate(self.net, _padded(chunk, self.tokenizer), len(chunk))
        return answers

    def predict(self, frame: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        params = {**self.params, **(params or {})}
        if int(params["max_new_tokens"]) < 1:
            raise ValueError(f"max_new_tokens must be at least 1, not {params['max_new_tokens']}")
        return pd.DataFrame({self.output: self.generate(self.prompt_ids(frame),
                                                        int(params["max_new_tokens"]))})


def classification_prompt(task: DictConfig, text: str) -> str:
    """The prompt a head=generate classifier trained on (GenerateClassificationData.prompt, which
    reads only the task config)."""
    return GenerateClassificationData.prompt(_TaskOnly(task), text)


@dataclass
class _TaskOnly:
    task: DictConfig


@dataclass
class LabelScorer(TextClassifier):
    """A decoder classifier (task.head=generate): each label's log-likelihood after the prompt,
    as GenerativeHead.score_labels computes it in validation; `score` is the predicted label's
    probability among the labels (softmax over their log-likelihoods)."""

    task: DictConfig | None = None
    objective: DictConfig | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.scorer = GenerativeHead(self.task, self.tokenizer, "decoder", self.objective,
                                     self.labels)
        self.room = self.max_length - max(len(c) for c in self.scorer.candidates)

    @torch.no_grad()
    def logits(self, texts: list[str], pairs: list[str] | None = None) -> torch.Tensor:
        if pairs is not None:
            texts = [f"{a}\n{b}" for a, b in zip(texts, pairs)]
        prompts = [render(self.tokenizer, classification_prompt(self.task, t), "")[0][-self.room:]
                   for t in texts]
        chunks = [self.scorer.score_labels(self.net, _padded(prompts[i:i + self.batch_size],
                                                             self.tokenizer))
                  for i in range(0, len(prompts), self.batch_size)]
        return torch.cat(chunks) if chunks else torch.empty(0, len(self.labels))
