"""The self-supervised objective of a model family, used as the `lm` task's loss and as the study's
auxiliary loss (objective.aux_weight): masked LM for encoders, next token for decoders.

On a model without a language-model head (a classifier), the vocabulary logits come from a decoder
tied to the input embeddings: it adds no parameters, so adapter accounting, saved weights and
reloads stay exactly those of the task model, and it works for every checkpoint, including the
sentence-embedding MiniLM that ships no MLM head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase

IGNORE = -100
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels")


def model_inputs(batch: dict) -> dict:
    """The keys a transformers forward takes; task bookkeeping (prompt_length, ...) stays out."""
    return {k: v for k, v in batch.items() if k in MODEL_INPUTS}


def next_token_labels(batch: dict) -> torch.Tensor:
    """Every real token that follows a real token is its target; padding is not, and neither is a
    left-padded row's first token (a pad comes before it), so either padding side scores alike."""
    real = batch["attention_mask"] != 0
    after_real = torch.zeros_like(real)
    after_real[:, 1:] = real[:, :-1]
    return batch["input_ids"].masked_fill(~(real & after_real), IGNORE)


def shifted_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of position t's logits against label t+1 (the causal LM convention)."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                           ignore_index=IGNORE)


class SelfSupervised:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, family: str, mlm_probability: float):
        self.family = family
        self.masker = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability) \
            if family == "encoder" else None
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)))

    def mask(self, batch: dict, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """BERT's 80/10/10 masking of non-special tokens -> (masked input_ids, MLM labels).
        `deterministic` seeds it from the batch itself, so every validation sees the same masks."""
        ids, attention = batch["input_ids"].cpu(), batch["attention_mask"].cpu()
        special = torch.isin(ids, self.special_ids) | (attention == 0)
        with torch.random.fork_rng(devices=[]):
            if deterministic:
                torch.manual_seed(int(ids.sum()))
            masked, labels = self.masker.torch_mask_tokens(ids.clone(), special_tokens_mask=special)
        device = batch["input_ids"].device
        return masked.to(device), labels.to(device)

    def loss(self, model: torch.nn.Module, batch: dict, out) -> torch.Tensor:
        """The self-supervised loss on the batch's text. `out` is the task forward of this batch
        (run with output_hidden_states=True); decoders reuse it, encoders need a masked pass."""
        if self.family == "encoder":
            masked, labels = self.mask(batch)
            inputs = {**model_inputs(batch), "input_ids": masked}
            inputs.pop("labels", None)
            hidden = model(**inputs, output_hidden_states=True).hidden_states[-1]
            return F.cross_entropy(self._vocab_logits(model, hidden, labels).flatten(0, 1).float(),
                                   labels.flatten(), ignore_index=IGNORE)
        labels = next_token_labels(batch)
        vocab = model.get_input_embeddings().num_embeddings
        logits = out.logits if out.logits.shape[-1] == vocab else \
            self._vocab_logits(model, out.hidden_states[-1], labels)
        return shifted_loss(logits[:, -labels.shape[1]:], labels)

    @staticmethod
    def _vocab_logits(model: torch.nn.Module, hidden: torch.Tensor,
                      labels: torch.Tensor) -> torch.Tensor:
        """Hidden states of the real tokens (virtual prompt tokens dropped) through the decoder
        tied to the input embeddings."""
        return hidden[:, -labels.shape[1]:] @ model.get_input_embeddings().weight.T
