"""The MLflow pyfunc model an export logs: the run's task pipeline (tunelab.deploy.pipeline) over
the run's own artifacts.

Artifacts: `weights` (a full transformers folder, merged or fully fine-tuned, or an adapter
folder whose base is rebuilt from the recorded config), `config` (the run's config.yaml) and
`labels` (labels.json); the model config carries `allow_null` and `token_types` (extractive QA,
see tunelab.deploy.qa). Input: a DataFrame
with the pipeline's columns; output: its columns (`label`/`score`, `answer`/`score`, `answer` or
`response`); params (generation: `max_new_tokens`) come per request. Loading needs tunelab
installed, which `mlflow models serve --env-manager local` in tunelab's environment provides.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException
from omegaconf import OmegaConf

from tunelab.deploy.pipeline import load_pipeline


class TunelabModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        cfg = OmegaConf.load(context.artifacts["config"])
        labels = json.loads(Path(context.artifacts["labels"]).read_text())["labels"]
        options = context.model_config or {}
        self.pipeline = load_pipeline(cfg, labels, Path(context.artifacts["weights"]),
                                      allow_null=bool(options.get("allow_null", False)),
                                      token_types=bool(options.get("token_types", True)))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = pd.DataFrame(model_input)
        missing = [c for c in self.pipeline.inputs if c not in frame.columns]
        if missing:
            raise MlflowException(f"the input lacks the column(s) {missing}; the model takes "
                                  f"{self.pipeline.inputs}", INVALID_PARAMETER_VALUE)
        try:
            return self.pipeline.predict(frame, params)
        except ValueError as err:
            raise MlflowException(str(err), INVALID_PARAMETER_VALUE) from None


# Models exported before the task pipelines existed pickled this name; it loads them unchanged.
TunelabTextClassifier = TunelabModel
