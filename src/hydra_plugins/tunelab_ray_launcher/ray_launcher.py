"""A Hydra launcher that runs each job of a sweep as a Ray task on the cluster at `address`.

Hydra's own hydra-ray-launcher pins cloudpickle<3, which conflicts with the joblib that
hydra-joblib-launcher needs. This is the same idea in one file: each job is Hydra's `run_job`
inside `ray.remote`, exactly as the joblib launcher runs it in a process pool, so sweep callbacks,
output folders and return values behave as with any launcher.

Jobs run in the driver's working directory, so relative paths (./mlruns, ./multirun, the data
cache) resolve as they would locally: on a multi-node cluster, every node needs the same paths (a
shared filesystem) or runs go to a tracking server (tracking.uri=http://...); tunelab must be
installed on every node.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


def run_one_job(idx: int, overrides: Sequence[str], hydra_context: HydraContext,
                config: DictConfig, task_function: TaskFunction,
                singleton_state: dict[Any, Any], cwd: str) -> JobReturn:
    """One sweep job inside a Ray worker: restore Hydra's state, then `run_job` as locally."""
    os.chdir(cwd)
    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    HydraConfig.instance().set_config(sweep_config)
    return run_job(hydra_context=hydra_context, config=sweep_config, task_function=task_function,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


class RayLauncher(Launcher):
    def __init__(self, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0,
                 env_prefixes: Sequence[str] = ("TUNELAB_", "MLFLOW_", "HF_")) -> None:
        self.address, self.num_cpus, self.num_gpus = address, num_cpus, num_gpus
        # Ray workers do not inherit the driver's environment; these variables are passed on.
        self.env_prefixes = tuple(env_prefixes)
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        import ray

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k.startswith(self.env_prefixes)}
        connected_here = not ray.is_initialized()
        if connected_here:
            ray.init(address=self.address, runtime_env={"env_vars": env},
                     include_dashboard=False, log_to_driver=True)
        log.info("Ray (%s) is launching %d jobs, sweep output dir: %s",
                 self.address or "local", len(job_overrides), sweep_dir)
        job = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus)(run_one_job)
        state = Singleton.get_state()
        futures = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            futures.append(job.remote(idx, list(overrides), self.hydra_context, self.config,
                                      self.task_function, state, os.getcwd()))
        try:
            return ray.get(futures)
        finally:
            if connected_here:
                ray.shutdown()
