"""Starting a distributed job's ranks so that ranks > 0 re-enter THIS job, not the command line.

Lightning's DDP/FSDP launcher starts ranks > 0 by re-running `sys.argv` (for a Hydra app, plus
`hydra.run.dir`). Under `tunelab-train -m` that re-enters the whole sweep and writes into the run
folder pattern instead of the job's (Lightning #11300, lightning-hydra-template #90 and #393); under
the joblib, Ray or submitit launchers `sys.argv` is the worker's, not tunelab's. Here rank 0 writes
the job's resolved config into the job's folder and starts each extra local rank as
`python -m tunelab.train` on that one file, in run mode: one job, the same config, whoever launched
rank 0. Under torchrun or Slurm the ranks exist already and nothing is started.

Processes are started by Lightning's `popen` launcher, not `ddp_spawn`, so every rank runs the
whole job function (fit, validate, test) and nothing has to pickle or come back from a child.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from omegaconf import DictConfig, OmegaConf

from tunelab.startup import environment

# Rank 0's resume decision, for the local ranks it starts (tracking.checkpoints.resume_point).
RESUME_ENV = "TUNELAB_RESUME_FROM"
# What Lightning's launcher (and tunelab's rank 0) sets in rank 0's environment, for good.
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE",
              "OMP_NUM_THREADS", RESUME_ENV)
RANK_CONFIG = "rank_config.yaml"


@dataclass(frozen=True)
class RankCommand:
    """The command line of local rank r > 0: tunelab's CLI on the job's frozen, resolved config."""

    config: DictConfig
    run_dir: Path

    def write(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.run_dir / RANK_CONFIG, resolve=True)

    def argv(self, local_rank: int) -> list[str]:
        return [sys.executable, "-m", "tunelab.train",
                f"--config-path={self.run_dir.resolve()}",
                f"--config-name={Path(RANK_CONFIG).stem}",
                f"hydra.run.dir='{self.run_dir.resolve()}'", "hydra.output_subdir=null",
                f"hydra.job.name=rank{local_rank}"]


class JobRankLauncher(_SubprocessScriptLauncher):
    """Lightning's subprocess launcher with `RankCommand` in place of `sys.argv`."""

    def __init__(self, cluster_environment, num_processes: int, num_nodes: int,
                 command: RankCommand):
        super().__init__(cluster_environment, num_processes, num_nodes)
        self.command = command

    def _call_children_scripts(self) -> None:
        self._check_can_spawn_children()
        env = self.cluster_environment
        os.environ.update(MASTER_ADDR=env.main_address, MASTER_PORT=str(env.main_port),
                          NODE_RANK=str(env.node_rank()), LOCAL_RANK=str(env.local_rank()),
                          WORLD_SIZE=str(self.num_processes * self.num_nodes))
        self.command.write()
        for local_rank in range(1, self.num_processes):
            self.procs.append(subprocess.Popen(
                self.command.argv(local_rank), cwd=os.getcwd(),
                env={**environment(), "LOCAL_RANK": str(local_rank)}))


class _RelaunchThisJob:
    command: RankCommand

    def _configure_launcher(self) -> None:
        self._launcher = JobRankLauncher(self.cluster_environment, self.num_processes,
                                         self.num_nodes, self.command)


class JobDDPStrategy(_RelaunchThisJob, DDPStrategy):
    def __init__(self, command: RankCommand, **kwargs):
        DDPStrategy.__init__(self, **kwargs)
        self.command = command


class JobFSDPStrategy(_RelaunchThisJob, FSDPStrategy):
    def __init__(self, command: RankCommand, **kwargs):
        FSDPStrategy.__init__(self, **kwargs)
        self.command = command


@contextmanager
def distributed_job() -> Iterator[None]:
    """Leave the process as the job found it. Lightning's launcher sets rank variables and the
    thread count for good, and the process group lives until exit: the next job of a sequential
    sweep would take the stale LOCAL_RANK as 'ranks started externally' and wait for peers that
    are gone, and torchmetrics would try to sync over the dead group."""
    saved = {key: os.environ.get(key) for key in LAUNCH_ENV}
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.set_num_threads(threads)
