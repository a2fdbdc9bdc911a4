"""A Lightning logger that writes into a run tunelab already owns (Lightning's own MLFlowLogger
starts a new run on resume and ends the run when fit ends, before test)."""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only
from mlflow import MlflowClient
from mlflow.entities import Metric


class RunLogger(Logger):
    def __init__(self, client: MlflowClient, run_id: str,
                 logged_steps: dict[str, set[int]] | None = None):
        super().__init__()
        self.client, self.run_id = client, run_id
        # On resume: the steps already recorded per metric, so replayed steps are not logged twice.
        # The set, not the last step: MLflow writes asynchronous batches from a thread pool, so a
        # killed process can leave step 60 recorded and step 50 lost.
        self.logged_steps = {k: set(v) for k, v in (logged_steps or {}).items()}
        self._pending = []
        self.trainer = None       # set by StepClock: steps are then optimizer steps completed

    @property
    def name(self) -> str:
        return "mlflow"

    @property
    def version(self) -> str:
        return self.run_id

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        """Params are logged once, from the resolved config, by TrackedRun."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        step = self.trainer.global_step if self.trainer is not None else (step or 0)
        batch = self.unrecorded(metrics, step)
        if batch:
            self._pending.append(self.client.log_batch(self.run_id, metrics=batch,
                                                       synchronous=False))

    def unrecorded(self, metrics: dict[str, float], step: int) -> list[Metric]:
        """`metrics` at `step` as MLflow metrics, less those this run already recorded there."""
        now = int(time.time() * 1000)
        return [Metric(key, float(value), now, step) for key, value in metrics.items()
                if key != "epoch" and step not in self.logged_steps.get(key, ())]

    @rank_zero_only
    def save(self) -> None:
        """Wait until every metric logged so far is in the store."""
        self.flush()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.flush()

    def flush(self) -> None:
        for operation in self._pending:
            if operation is not None:
                operation.wait()
        self._pending.clear()


class StepClock(Callback):
    """Lets RunLogger record every metric at `trainer.global_step` (optimizer steps completed),
    where Lightning passes a batch counter that lags by one inside the epoch; and records the last
    step's `train/*` values when `trainer.log_every_n_steps` did not fall on it, so a run shorter
    than that interval still has its `train/loss`."""

    def __init__(self, logger: RunLogger):
        self.logger = logger

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.logger.trainer = trainer

    def on_train_end(self, trainer, pl_module) -> None:
        every, step = trainer.log_every_n_steps, trainer.global_step
        if step == 0 or (every > 0 and step % every == 0):
            return      # nothing trained, or Lightning logged this step itself
        last = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
        if last:
            self.logger.log_metrics(last, step=step)
