"""The from-scratch baseline: token embedding -> LSTM -> linear head.

It is a `PreTrainedModel` with its own config class, registered with the Auto classes, so it loads,
saves (safetensors) and reloads through exactly the same `from_config` / `from_pretrained` calls as
every transformer in `loading.py`, and returns the same `.loss` / `.logits` outputs.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (AutoConfig, AutoModelForSequenceClassification, PretrainedConfig,
                          PreTrainedModel)
from transformers.modeling_outputs import SequenceClassifierOutput


class LstmConfig(PretrainedConfig):
    model_type = "tunelab-lstm"

    def __init__(self, vocab_size: int = 30522, embedding_dim: int = 128, hidden_size: int = 128,
                 num_layers: int = 1, bidirectional: bool = True, dropout: float = 0.1,
                 pad_token_id: int = 0, **kwargs):
        self.vocab_size, self.embedding_dim = vocab_size, embedding_dim
        self.hidden_size = hidden_size
        self.num_layers, self.bidirectional, self.dropout = num_layers, bidirectional, dropout
        super().__init__(pad_token_id=pad_token_id, **kwargs)


class LstmForSequenceClassification(PreTrainedModel):
    """Classifies from the LSTM's final hidden state (both directions), reading only the real
    tokens of each padded row (packed sequences), so padding never changes a prediction."""

    config_class = LstmConfig
    base_model_prefix = "lstm"
    main_input_name = "input_ids"

    def __init__(self, config: LstmConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_dim,
                                       padding_idx=config.pad_token_id)
        self.lstm = nn.LSTM(config.embedding_dim, config.hidden_size, num_layers=config.num_layers,
                            bidirectional=config.bidirectional, batch_first=True,
                            dropout=config.dropout if config.num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(config.dropout)
        directions = 2 if config.bidirectional else 1
        self.classifier = nn.Linear(directions * config.hidden_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.1)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **_unused) -> SequenceClassifierOutput:
        """`**_unused` takes the tokenizer's other outputs (token_type_ids) that BERT-style
        batches carry, so the same collator serves every model."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        lengths = attention_mask.sum(-1).clamp(min=1).cpu()
        embedded = self.dropout(self.embeddings(input_ids))
        packed = nn.utils.rnn.pack_padded_sequence(embedded, lengths, batch_first=True,
                                                   enforce_sorted=False)
        _, (hidden, _) = self.lstm(packed)
        directions = 2 if self.config.bidirectional else 1
        final = hidden[-directions:].transpose(0, 1).reshape(input_ids.shape[0], -1)
        logits = self.classifier(self.dropout(final))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


AutoConfig.register(LstmConfig.model_type, LstmConfig, exist_ok=True)
AutoModelForSequenceClassification.register(LstmConfig, LstmForSequenceClassification,
                                            exist_ok=True)
