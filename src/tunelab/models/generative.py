"""Tasks a model answers by writing tokens: `instruct`, `lm`, and classification and qa with
`task.head=generate`. Their forward, validation loss and metrics, for the LightningModule.

- ppl: torchmetrics Perplexity over the target tokens of a split (response tokens for
  instruct, answer tokens for qa, every token for lm; masked tokens, with fixed masks, for
  encoders).
- em (instruct): greedy answers to the first `task.generate_eval_samples` prompts of a split, at
  most `task.max_new_tokens` long, against the reference answer, SQuAD-normalised.
- em and f1 (qa): greedy answers to the same first rows, each scored against every gold answer of
  its row (SquadAnswers). The validation loader does not shuffle, so every validation scores the
  same rows.
- acc/f1 with head=generate: the label whose words (and end-of-turn marker) are the most likely
  continuation of the prompt. Scoring every label is used instead of free generation because it
  always yields a valid label and its ranking is exactly what the training loss optimises.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.text import SQuAD
from transformers import PreTrainedTokenizerBase

from tunelab import tasks
from tunelab.data.generative import IGNORE, end_of_turn_id, label_words, render
from tunelab.models.objective import SelfSupervised, model_inputs


class ExactMatch(SQuAD):
    """SQuAD exact match (lower-cased, punctuation and articles dropped) as a fraction in [0, 1]."""

    def update(self, preds: list[str], target: list[str]) -> None:
        super().update([{"prediction_text": p, "id": str(i)} for i, p in enumerate(preds)],
                       [{"answers": {"answer_start": [0], "text": [t]}, "id": str(i)}
                        for i, t in enumerate(target)])

    def compute(self) -> torch.Tensor:
        return super().compute()["exact_match"] / 100


class GenerativeHead:
    def __init__(self, task: DictConfig, tokenizer: PreTrainedTokenizerBase, family: str,
                 objective: DictConfig, label_names: list[str] | None):
        self.task, self.tokenizer, self.family = task, tokenizer, family
        self.spec = tasks.spec_for(task, family)
        self.masked = SelfSupervised(tokenizer, family, objective.mlm_probability) \
            if self.spec.masked_lm else None
        # a plain text continues to its end; a rendered turn stops at the end-of-turn marker
        self.stop_id = end_of_turn_id(tokenizer) if self.spec.prompt != "text" else None
        self.candidates = [render(tokenizer, "x", label_words(name))[1]
                           for name in label_names or []]

    def forward(self, model: torch.nn.Module, batch: dict, deterministic: bool = False):
        """The task forward; its `.loss` is the mean over target tokens. The output carries the
        labels it was scored against (masked-LM labels are drawn here)."""
        inputs = model_inputs(batch)
        if self.masked is not None:
            inputs["input_ids"], inputs["labels"] = self.masked.mask(batch, deterministic)
        out = model(**inputs)
        out["targets"] = inputs["labels"]
        return out

    def eval_step(self, model: torch.nn.Module, batch: dict, metrics: MetricCollection,
                  mean: MeanMetric) -> None:
        out = self.forward(model, batch, deterministic=True)
        labels = out["targets"]
        if self.spec.prompt == "label":     # classification: the best-scoring label's words
            mean.update(out.loss, weight=labels.shape[0])
            predicted = self.score_labels(model, batch).argmax(-1)
            for metric in metrics.values():
                metric.update(predicted, batch["class_label"])
            return
        logits = out.logits.float()
        if self.masked is None:
            logits, labels = logits[:, :-1], labels[:, 1:]
        mean.update(out.loss, weight=(labels != IGNORE).sum())
        if "ppl" in metrics:
            metrics["ppl"].update(logits, labels)
        if "em" in metrics:         # against the reference answer
            em = metrics["em"]
            remaining = self.task.generate_eval_samples - int(em.total)
            if remaining > 0:
                em.update(self.generate(model, batch, remaining), self.references(batch, remaining))
        if "squad" in metrics:      # against every gold answer of the row
            squad = metrics["squad"]
            remaining = self.task.generate_eval_samples - int(squad.total)
            if remaining > 0:
                squad.update(self.generate(model, batch, remaining),
                             batch["example_id"][:remaining].tolist())

    def _prompts(self, batch: dict, rows: int) -> list[list[int]]:
        return [ids[:n].tolist() for ids, n in zip(batch["input_ids"][:rows],
                                                   batch["prompt_length"][:rows])]

    def _answer(self, ids: list[int]) -> str:
        """Text up to the end-of-turn marker, special tokens dropped."""
        if self.stop_id in ids:
            ids = ids[:ids.index(self.stop_id)]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def references(self, batch: dict, rows: int) -> list[str]:
        return [self._answer(row[row != IGNORE].tolist()) for row in batch["labels"][:rows]]

    @torch.no_grad()
    def generate(self, model: torch.nn.Module, batch: dict, rows: int) -> list[str]:
        """Greedy answers to the first `rows` prompts of the batch (left-padded together)."""
        prompts = self.tokenizer.pad({"input_ids": self._prompts(batch, rows)},
                                     padding_side="left", return_tensors="pt")
        prompts = prompts.to(batch["input_ids"].device)
        out = model.generate(input_ids=prompts["input_ids"],
                             attention_mask=prompts["attention_mask"], do_sample=False,
                             max_new_tokens=self.task.max_new_tokens, eos_token_id=self.stop_id,
                             pad_token_id=self.tokenizer.pad_token_id)
        width = prompts["input_ids"].shape[1]
        return [self._answer(row[width:].tolist()) for row in out]

    @torch.no_grad()
    def score_labels(self, model: torch.nn.Module, batch: dict) -> torch.Tensor:
        """[batch, classes] log-likelihood of each label's tokens after each prompt, computed in
        chunks of one batch's size of prompt+label rows."""
        prompts = self._prompts(batch, len(batch["input_ids"]))
        rows = [(p, c) for p in prompts for c in self.candidates]
        scores = []
        for start in range(0, len(rows), len(prompts)):
            part = rows[start:start + len(prompts)]
            enc = self.tokenizer.pad({"input_ids": [p + c for p, c in part]}, padding_side="right",
                                     return_tensors="pt").to(batch["input_ids"].device)
            logp = model(**enc).logits.float().log_softmax(-1)
            for i, (p, c) in enumerate(part):
                target = enc["input_ids"][i, len(p):len(p) + len(c)]
                scores.append(logp[i, len(p) - 1:len(p) + len(c) - 1].gather(
                    -1, target[:, None]).sum())
        return torch.stack(scores).view(len(prompts), len(self.candidates))
