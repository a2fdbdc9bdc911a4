"""Config schemas of tunelab's sweepers, registered in Hydra's ConfigStore when Hydra discovers
its plugins: `hydra/sweeper=study`, `hydra/sweeper=optuna` and `hydra/sweeper/sampler=tpe|random`.

The Optuna sweeper keeps hydra-optuna-sweeper's keys (direction, study_name, storage, n_trials,
n_jobs, sampler with seed, params), so a search config written for it runs unchanged.
"""


from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

PLUGIN = "hydra_plugins.tunelab_study_sweeper.study_sweeper"


@dataclass
class TPESamplerConf:
    """Optuna's default sampler; its first trials (n_startup_trials) are random."""
    _target_: str = "optuna.samplers.TPESampler"
    _partial_: bool = True       # the sweeper makes one per arm, seeded alike: a fair start
    seed: int | None = 0         # null: a different search each time, and not resumable alike
    n_startup_trials: int = 10


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    _partial_: bool = True
    seed: int | None = 0


@dataclass
class StudySweeperConf:
    """`-m hydra/sweeper=study adapter=full,lora`: each combination of swept values is an arm."""
    _target_: str = f"{PLUGIN}.StudySweeper"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    trials_per_arm: int = 8      # search-phase trials, the same for every arm
    seeds: int = 3               # fresh seeds each arm's best is confirmed on (test split scored)
    storage: str | None = None   # Optuna database URL; null: sqlite:///<paths.mlruns_dir>/optuna.db
    direction: str | None = None  # maximize | minimize; null: from task.mode
    n_jobs: int = 1              # trials launched at once; match hydra.launcher.n_jobs
    max_failure_rate: float = 0.0  # share of a batch's trials that may fail before the study stops
    sampler: Any = MISSING
    params: dict[str, str] | None = None   # more arms (a,b) or searched keys (interval(a, b))


@dataclass
class OptunaSweeperConf:
    """`-m hparams_search=lr_rank`: one Optuna search over `params`, resumable from `storage`."""
    _target_: str = f"{PLUGIN}.OptunaSweeper"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    direction: str | None = None  # maximize | minimize; null: from task.mode
    study_name: str | None = None  # null: one study per command (tunelab-<sweep id>)
    storage: str | None = None   # Optuna database URL; null: sqlite:///<paths.mlruns_dir>/optuna.db
    n_trials: int = 20
    n_jobs: int = 1
    max_failure_rate: float = 0.0
    sampler: Any = MISSING
    params: dict[str, str] | None = None


store = ConfigStore.instance()
store.store(group="hydra/sweeper", name="study", node=StudySweeperConf, provider="tunelab")
store.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="tunelab")
store.store(group="hydra/sweeper/sampler", name="tpe", node=TPESamplerConf, provider="tunelab")
store.store(group="hydra/sweeper/sampler", name="random", node=RandomSamplerConf,
            provider="tunelab")
