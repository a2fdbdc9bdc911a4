"""Hydra's side of tunelab's sweepers: set up the launcher, compose job configs, launch batches.
What to launch (arms, trials, confirm runs) and what to record is tunelab.sweeps.study."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.tunelab_study_sweeper import config as _config  # noqa: F401  (registers)
from tunelab.sweeps.study import Settings, Study


class _StudyLauncher(Sweeper):
    settings: Settings

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config, self.hydra_context, self.job_idx = config, hydra_context, 0
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)

    def sweep(self, arguments: list[str]) -> dict[str, Any]:
        return Study(self.settings, self.config, self._load, self._launch).run(arguments)

    def _load(self, overrides: list[str]) -> DictConfig:
        return self.hydra_context.config_loader.load_sweep_config(self.config, overrides)

    def _launch(self, jobs: Sequence[Sequence[str]]) -> Sequence[JobReturn]:
        returns = self.launcher.launch(jobs, initial_job_idx=self.job_idx)
        self.job_idx += len(returns)
        return returns


def _plain(params: DictConfig | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in (params or {}).items()}


class StudySweeper(_StudyLauncher):
    """hydra/sweeper=study: search every arm, then confirm each arm's best on fresh seeds."""

    def __init__(self, trials_per_arm: int, seeds: int, storage: str | None,
                 direction: str | None, n_jobs: int, sampler: Callable[..., Any],
                 max_failure_rate: float = 0.0, params: DictConfig | None = None) -> None:
        self.settings = Settings(True, trials_per_arm, seeds, n_jobs, direction, storage, None,
                                 sampler, _plain(params), max_failure_rate)


class OptunaSweeper(_StudyLauncher):
    """hydra/sweeper=optuna: one search over `params` (hparams_search presets)."""

    def __init__(self, direction: str | None, study_name: str | None, storage: str | None,
                 n_trials: int, n_jobs: int, sampler: Callable[..., Any],
                 max_failure_rate: float = 0.0, params: DictConfig | None = None) -> None:
        self.settings = Settings(False, n_trials, 0, n_jobs, direction, storage, study_name,
                                 sampler, _plain(params), max_failure_rate)
