"""The MLflow pyfunc model an export logs: a text classifier over the run's own artifacts.

Artifacts: `weights` (a full transformers folder, merged or fully fine-tuned, or an adapter
folder whose base is rebuilt from the recorded config), `config` (the run's config.yaml) and
`labels` (labels.json). Input: a DataFrame with the run's text column (and text-pair column when
it had one); output: `label` and `score` per row. Loading needs tunelab installed, which
`mlflow models serve --env-manager local` in tunelab's environment provides.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
from omegaconf import OmegaConf

from tunelab.deploy.classifier import TextClassifier, build_net, load_trained_tokenizer


class TunelabTextClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        cfg = OmegaConf.load(context.artifacts["config"])
        labels = json.loads(Path(context.artifacts["labels"]).read_text())["labels"]
        weights = Path(context.artifacts["weights"])
        tokenizer = load_trained_tokenizer(weights)
        self.text_column = cfg.data.text_column
        self.pair_column = cfg.data.text_pair_column
        self.classifier = TextClassifier(build_net(cfg, labels, weights, tokenizer), tokenizer,
                                         labels, cfg.data.max_length)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = pd.DataFrame(model_input)
        pairs = frame[self.pair_column].astype(str).tolist() if self.pair_column else None
        return self.classifier.predict(frame[self.text_column].astype(str).tolist(), pairs)
