"""The names tunelab writes into MLflow and reads back: tag keys, run kinds, and which way a
metric is better. One module, importing nothing, so compare/ (which reads runs made anywhere and
never imports training code) and the training side spell every name the same way.
"""

from __future__ import annotations

PREFIX = "tunelab."                         # of every tag tunelab writes

# ---- tags on every tunelab run -----------------------------------------------------------------
RUN_KIND = "tunelab.run_kind"
CONFIG_HASH = "tunelab.config_hash"
OVERRIDES = "tunelab.overrides"
SOURCE_RUN = "tunelab.source_run"           # the run an eval or reproduce run is about
SOURCE_CONFIG_HASH = "tunelab.source_config_hash"
ERROR = "tunelab.error"
RESUMED = "tunelab.resumed"
CHECKPOINT_DIR = "tunelab.checkpoint_dir"
VERSION_PREFIX = "tunelab.version."         # + package name: its installed version
CODE_PREFIX = "tunelab.code."
CODE_VERSION = "tunelab.code.version"
CODE_COMMIT = "tunelab.code.commit"
CODE_DIRTY = "tunelab.code.dirty"
# ---- sweeps and studies ------------------------------------------------------------------------
SWEEP_ID = "tunelab.sweep_id"
SWEEP_DIR = "tunelab.sweep_dir"
SWEEP_STATUS = "tunelab.sweep_status"
FAILED_JOBS = "tunelab.failed_jobs"
STUDY_ID = "tunelab.study_id"
ARM = "tunelab.arm"
PHASE = "tunelab.phase"                     # search | confirm
STUDY_PLAN_PREFIX = "tunelab.study."        # the study parent's plan: arms, trials_per_arm, ...
# ---- exported models (LoggedModel and registry version tags) -----------------------------------
MERGED = "tunelab.merged"
MODEL = "tunelab.model"
ADAPTER = "tunelab.adapter"
TASK = "tunelab.task"
BASE = "tunelab.base"
# ---- comparison runs ---------------------------------------------------------------------------
COMPARE_METRIC = "tunelab.compare.metric"
COMPARE_BY = "tunelab.compare.by"
COMPARE_BASELINE = "tunelab.compare.baseline"
# ---- MLflow's own ------------------------------------------------------------------------------
PARENT_RUN = "mlflow.parentRunId"
GIT_COMMIT = "mlflow.source.git.commit"     # the UI's commit column
RUN_NAME = "mlflow.runName"
DATA_CONTEXT = "mlflow.data.context"        # a dataset input's role: train, validation, eval, ...
# An experiment tag: MLflow 3's UI opens an experiment in the view its kind names; without it,
# it guesses and shows the GenAI view (traces). "custom_model_development" is "Machine learning".
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"

# ---- run kinds (values of RUN_KIND; user-facing, fixed) ----------------------------------------
TRAIN, SWEEP, STUDY, EVAL, COMPARE, REPRODUCE = ("train", "sweep", "study", "eval", "compare",
                                                 "reproduce")

# ---- metric direction --------------------------------------------------------------------------
LOWER_IS_BETTER = ("loss", "ppl")


def kind_filter(kind: str) -> str:
    """An MLflow search filter for runs of `kind`."""
    return f"tags.`{RUN_KIND}` = '{kind}'"


def metric_name(key: str) -> str:
    """The task metric a logged key reports: `val/f1_best` and `search/lora/val_f1` name `f1`'s
    kin by their last segment, without the `_best` suffix (`f1`, `val_f1`)."""
    return key.rsplit("/", 1)[-1].removesuffix("_best")


def lower_is_better(key: str) -> bool:
    """The one direction rule: loss and perplexity keys (`val/loss`, `train/aux_loss`, `val/ppl`,
    with or without `_best`) are minimised, every other task metric (acc, f1, em) maximised."""
    return metric_name(key).endswith(LOWER_IS_BETTER)
