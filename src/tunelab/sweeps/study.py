"""Studies: tune every arm of a comparison on the same budget, then confirm each arm's best on
fresh seeds. Also the plain Optuna search of `hparams_search=` presets (one arm, no confirm).

A comparison of methods at each method's default learning rate measures the defaults, not the
methods. So a study (`-m hydra/sweeper=study adapter=full,lora`) makes each combination of the
swept values an arm, and runs two phases through the ordinary launcher, one MLflow run per job:

- search: per arm, an Optuna study over the arm's own space (the `search:` nodes its config
  carries, e.g. beside the adapter in conf/adapter/lora.yaml, and the fresh task head's own rate
  beside the optimizer in conf/optim/adamw.yaml where the arm trains one), the same number of
  trials and the same budget for every arm, scored on validation (the value tunelab-train
  returns);
- confirm: each arm's best trial re-run on fresh seeds; these runs score the test split.

Resuming: every Optuna study lives in a database (default: optuna.db beside the tracking store).
Trials a killed invocation left RUNNING (or that failed) are marked failed and their parameters
asked again, so the same config comes back: tunelab skips it when its MLflow run FINISHED (a
trial killed after its run ended costs nothing) and resumes it from its checkpoint otherwise.
Completed trials count toward `trials_per_arm`; nothing finished is trained twice.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.core.utils import JobReturn, JobStatus
from mlflow import MlflowClient
from omegaconf import DictConfig, OmegaConf

from tunelab.budget import budget_kind, budget_limits
from tunelab.config import ConfigError, check_config
from tunelab.config.schema import SEARCH_KEY, rates_its_head
from tunelab.sweeps.callbacks import SWEEP_ENV, sweep_key
from tunelab.tracking import names
from tunelab.tracking.masking import mask_text
from tunelab.tracking.store import (
    artifact_root,
    client_for,
    experiment_id,
    sweep_parent,
    tracking_uri,
)
from tunelab.tracking.writer import RunWriter

log = logging.getLogger("tunelab.sweeps.study")
Launch = Callable[[Sequence[Sequence[str]]], Sequence[JobReturn]]


@dataclass
class Settings:
    """What the sweeper config asks for; `study` is False for a plain hparams_search search."""
    study: bool
    trials: int
    seeds: int
    n_jobs: int
    direction: str | None
    storage: str | None
    study_name: str | None
    sampler: Callable[..., Any]
    params: dict[str, str] = field(default_factory=dict)
    max_failure_rate: float = 0.0

    def check(self) -> None:
        name = "trials_per_arm" if self.study else "n_trials"
        if self.trials < 1:
            raise ConfigError(f"hydra.sweeper.{name}", self.trials,
                              "an integer >= 1: trials per arm in the search phase")
        if self.study and self.seeds < 1:
            raise ConfigError("hydra.sweeper.seeds", self.seeds,
                              "an integer >= 1: fresh seeds each arm's best is confirmed on")
        if self.n_jobs < 1:
            raise ConfigError("hydra.sweeper.n_jobs", self.n_jobs, "an integer >= 1")
        if self.direction not in (None, "maximize", "minimize"):
            raise ConfigError("hydra.sweeper.direction", self.direction,
                              "maximize, minimize or null (from task.mode)")
        if not 0 <= self.max_failure_rate <= 1:
            raise ConfigError("hydra.sweeper.max_failure_rate", self.max_failure_rate, "in [0, 1]")


@dataclass
class Arm:
    """One combination of the swept values, with the search space and budget its config gives."""
    label: str                      # "adapter=lora model=tiny-bert": tag tunelab.arm
    overrides: list[str]
    space: dict[str, Any]           # dotted key -> optuna distribution
    spec: dict[str, str]            # dotted key -> the search expression it came from
    direction: str
    seed: int
    budget: dict[str, float]
    monitor: str

    @property
    def slug(self) -> str:
        return arm_slug(self.label)


def arm_slug(label: str) -> str:
    """An arm's label in a form MLflow accepts in param and metric keys (no `=`)."""
    return label.replace("=", ":")


# ---- search spaces ------------------------------------------------------------------------------
def distribution(override: Override) -> Any:
    """Optuna's distribution for a sweep expression, with hydra-optuna-sweeper's reading of it:
    choice/a,b -> categorical, range -> int or float steps, interval -> uniform, tag(log, ...) ->
    log-uniform."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(Transformer.encode)))
    if override.is_range_sweep():
        if any(isinstance(v, float) for v in (value.start, value.stop, value.step)):
            return FloatDistribution(float(value.start), float(value.stop), step=float(value.step))
        # hydra's range excludes its stop, Optuna's int range includes its high
        return IntDistribution(int(value.start), int(value.stop) - int(value.step),
                               step=int(value.step))
    log_scale = "log" in value.tags
    if isinstance(value.start, int) and isinstance(value.end, int):
        return IntDistribution(value.start, value.end, log=log_scale)
    return FloatDistribution(float(value.start), float(value.end), log=log_scale)


def parse(lines: Sequence[str]) -> list[Override]:
    return OverridesParser.create().parse_overrides(list(lines))


def declared_space(cfg: DictConfig) -> dict[str, str]:
    """The `search:` nodes of the arm's groups (adapter, optim, model, ...), merged in config
    order."""
    space: dict[str, str] = {}
    for group, node in cfg.items():
        if group != "hydra" and isinstance(node, DictConfig) and node.get(SEARCH_KEY):
            space.update({str(k): str(v) for k, v in node[SEARCH_KEY].items()})
    return space


def arm_space(cfg: DictConfig, spec: dict[str, str], fixed: set[str],
              label: str) -> dict[str, Any]:
    """Distributions for `spec`, refusing keys this arm's config does not have; a key in `fixed`
    (optim.lr=1e-3 on the command line) is not searched."""
    space = {}
    for key, expression in spec.items():
        if OmegaConf.select(cfg, key, default=KeyError) is KeyError:
            raise ConfigError(f"search.{key}", expression,
                              f"names no config key of arm {label}; a search space tunes keys "
                              "the run has (optim.lr, adapter.r, ...)")
        if key in fixed:
            continue
        [override] = parse([f"{key}={expression}"])
        if not override.is_sweep_override():
            raise ConfigError(f"search.{key}", expression, "a sweep: interval(a, b), "
                              "tag(log, interval(a, b)), choice(a, b, ...) or range(a, b[, step])")
        space[key] = distribution(override)
    return space


# ---- arms ---------------------------------------------------------------------------------------
HEAD_LR = "optim.head_lr"


def split_arguments(lines: Sequence[str], study: bool
                    ) -> tuple[dict[str, list[str]], dict[str, str], list[str]]:
    """(arm axes, searched expressions, fixed overrides). In a study, value lists and choices are
    arm axes and intervals are searched in every arm; in a plain search every sweep is searched."""
    axes: dict[str, list[str]] = {}
    searched: dict[str, str] = {}
    fixed: list[str] = []
    for override in parse(lines):
        key = override.get_key_element()
        if not override.is_sweep_override():
            fixed.append(override.input_line)
        elif study and not override.is_interval_sweep():
            axes[key] = list(override.sweep_string_iterator())
        else:
            searched[key.lstrip("+~")] = override.input_line.split("=", 1)[1]
    return axes, searched, fixed


def arm_combinations(axes: dict[str, list[str]]) -> list[list[str]]:
    return [[f"{key}={value}" for key, value in zip(axes, values)]
            for values in itertools.product(*axes.values())]


def make_arm(load: Callable[[list[str]], DictConfig], overrides: list[str], fixed: list[str],
             searched: dict[str, str], settings: Settings) -> Arm:
    """Compose the arm's job config and check it before anything runs."""
    label = " ".join(o.lstrip("+") for o in overrides) or "search"
    cfg = load([*fixed, *overrides])
    checked = check_config(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))
    declared = declared_space(cfg) if settings.study else {}
    if not rates_its_head(checked):
        if HEAD_LR in searched:
            raise ConfigError(f"search.{HEAD_LR}", searched[HEAD_LR],
                              f"not searched in arm {label}: its run trains no fresh task head "
                              "beside a pretrained body (head_lr rates a classifier or span head)")
        declared.pop(HEAD_LR, None)
    spec = {**declared, **searched}
    # a key set on the command line, or the arm's own axis (adapter.r=4,8), is not searched
    fixed_keys = {o.get_key_element().lstrip("+~") for o in parse([*fixed, *overrides])}
    space = arm_space(cfg, spec, fixed_keys, label)
    if not space:
        raise ConfigError("search", spec, f"arm {label} has nothing to search: declare a "
                          "search: node beside its method or model, or pass key=interval(a, b)")
    mode = settings.direction or f"{checked.task.mode}imize"
    return Arm(label, list(overrides), space, {k: spec[k] for k in space}, mode, checked.seed,
               budget_limits(checked.budget, checked.trainer.max_steps)
               | {"epochs": checked.trainer.max_epochs}, checked.task.monitor)


def check_arms(arms: list[Arm], axes: dict[str, list[str]], study: bool) -> None:
    if study and len(arms) < 2:
        raise ConfigError("hydra/sweeper=study", axes,
                          f"at least two arms; these swept keys make {len(arms)}: sweep a key "
                          "over two or more values "
                          "(adapter=full,lora or model=minilm,smollm2-135m)")
    budgets = {json.dumps(a.budget, sort_keys=True) for a in arms}
    if len(budgets) > 1:
        raise ConfigError("budget", {a.label: a.budget for a in arms},
                          "one budget for every arm (trainer.max_steps, trainer.max_epochs, "
                          "budget.*): a study compares arms on equal data or equal compute")


# ---- Optuna --------------------------------------------------------------------------------------
def default_storage(mlruns_dir: str | Path) -> str:
    """A SQLite file beside the embedded tracking store (paths.mlruns_dir): mlruns/optuna.db."""
    root = Path(str(mlruns_dir)).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'optuna.db'}"


def optuna_study_name(study_id: str, arm_label: str | None, study_name: str | None = None) -> str:
    """The Optuna study an arm's trials live in (arm_label None: a plain search's one study).
    The sweeper and bench/seed_trials.py, which seeds a study before its sweep starts, both name
    it here, so the two cannot drift apart."""
    base = study_name or f"tunelab-{study_id}"
    return base if arm_label is None else f"{base}:{arm_slug(arm_label)}"


def open_study(name: str, storage: str, arm: Arm, sampler: Callable[..., Any]):
    """Create or load the arm's Optuna study and make it resumable (see the module docstring).
    The sampler's seed moves on by the trials already stored, so a resumed search does not
    propose its first points again."""
    import optuna

    study = optuna.create_study(study_name=name, storage=storage, direction=arm.direction,
                                load_if_exists=True)
    seed = sampler.keywords.get("seed") if isinstance(sampler, functools.partial) else None
    study.sampler = sampler(seed=seed + len(study.trials)) if seed is not None else sampler()
    state = optuna.trial.TrialState
    for trial in study.trials:
        if trial.state == state.RUNNING:
            study.tell(trial.number, state=state.FAIL)
    trials = study.get_trials(deepcopy=False)
    taken = {_key(t.params) for t in trials if t.state in (state.COMPLETE, state.WAITING)}
    for trial in trials:
        if trial.state == state.FAIL and _key(trial.params) not in taken:
            study.enqueue_trial(trial.params)
            taken.add(_key(trial.params))
    return study


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def completed(study) -> list:
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def tell(study, trial, ret: JobReturn) -> bool:
    """Report a job's value to Optuna; False when it failed or returned no finite value."""
    import optuna

    value = ret._return_value if ret.status == JobStatus.COMPLETED else None
    if value is None or not math.isfinite(float(value)):
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return False
    study.tell(trial, float(value))
    return True


# ---- the sweep -----------------------------------------------------------------------------------
class Study:
    """Runs a study or a plain search through `launch`, recording it in the sweep's parent run."""

    def __init__(self, settings: Settings, config: DictConfig,
                 load: Callable[[list[str]], DictConfig], launch: Launch) -> None:
        settings.check()
        self.settings, self.config, self.load, self.launch = settings, config, load, launch
        self.study_id = os.environ.get(SWEEP_ENV) or sweep_key(config)
        self.storage = settings.storage or default_storage(config.paths.mlruns_dir)
        self.uri = tracking_uri(config.tracking.uri, config.paths.mlruns_dir)

    def run(self, arguments: list[str]) -> dict[str, Any]:
        given = {o.get_key_element().lstrip("+~") for o in parse(arguments)}
        params = [f"{k}={v}" for k, v in self.settings.params.items()
                  if k.lstrip("+~") not in given]     # the command line wins, as in Hydra
        axes, searched, fixed = split_arguments([*params, *arguments], self.settings.study)
        arms = [make_arm(self.load, overrides, fixed, searched, self.settings)
                for overrides in (arm_combinations(axes) if self.settings.study else [[]])]
        check_arms(arms, axes, self.settings.study)
        log.info("%s %s: %d arm(s) x %d trials, Optuna storage %s",
                 "study" if self.settings.study else "search", self.study_id, len(arms),
                 self.settings.trials, mask_text(self.storage))
        self._record_plan(arms)
        results = self._search(arms, fixed)
        if self.settings.study:
            self._confirm(arms, fixed, results)
        self._record_results(arms, results)
        return results

    def _job(self, arm: Arm, fixed: list[str], params: dict[str, Any], phase: str,
             seed: int | None = None) -> list[str]:
        job = [*fixed, *arm.overrides, *(f"{k}={v}" for k, v in params.items())]
        if seed is not None:
            job.append(f"seed={seed}")
        if self.settings.study:
            job += [f"+study.id={self.study_id}", f"+study.arm='{arm.label}'",
                    f"+study.phase={phase}"]
        return job

    def _search(self, arms: list[Arm], fixed: list[str]) -> dict[str, Any]:
        """The search phase: batches of n_jobs trials, the arms taking turns, so parallel
        workers stay busy however few trials each arm has left."""
        optuna_names = {arm.label: optuna_study_name(
            self.study_id, arm.label if self.settings.study else None, self.settings.study_name)
            for arm in arms}
        studies = {arm.label: open_study(optuna_names[arm.label], self.storage, arm,
                                         self.settings.sampler) for arm in arms}
        todo = {arm.label: self.settings.trials - len(completed(studies[arm.label]))
                for arm in arms}
        for arm in arms:
            if todo[arm.label] < self.settings.trials:
                log.info("arm %s: %d of %d trials already complete", arm.label,
                         self.settings.trials - max(todo[arm.label], 0), self.settings.trials)
        turns = [arm for turn in range(max(todo.values())) for arm in arms
                 if turn < todo[arm.label]]
        for start in range(0, len(turns), self.settings.n_jobs):
            batch = turns[start:start + self.settings.n_jobs]
            trials = [studies[arm.label].ask(arm.space) for arm in batch]
            returns = self.launch([self._job(arm, fixed, trial.params, "search")
                                   for arm, trial in zip(batch, trials)])
            failed = [ret for arm, trial, ret in zip(batch, trials, returns)
                      if not tell(studies[arm.label], trial, ret)]
            if len(failed) > self.settings.max_failure_rate * len(returns):
                for ret in failed:
                    ret.return_value    # raises the job's own error, traceback and all
                raise RuntimeError(f"{len(failed)} trial(s) returned no finite value")
        results = {}
        for arm in arms:
            best = studies[arm.label].best_trial
            log.info("arm %s: best val/%s %.4g at %s", arm.label, arm.monitor, best.value,
                     best.params)
            results[arm.label] = {"best_params": dict(best.params), "best_value": best.value,
                                  "trials": len(completed(studies[arm.label])),
                                  "optuna_study": optuna_names[arm.label]}
        return results

    def _confirm(self, arms: list[Arm], fixed: list[str], results: dict[str, Any]) -> None:
        """Each arm's best on `seeds` seeds the search never used: search seed + 1, + 2, ..."""
        jobs, owners = [], []
        for arm in arms:
            seeds = [arm.seed + i for i in range(1, self.settings.seeds + 1)]
            results[arm.label]["confirm_seeds"] = seeds
            for seed in seeds:
                jobs.append(self._job(arm, fixed, results[arm.label]["best_params"], "confirm",
                                      seed))
                owners.append(arm)
        returns = self.launch(jobs)
        bad = [ret for ret in returns if ret.status != JobStatus.COMPLETED]
        for ret in bad:
            ret.return_value
        for arm in arms:
            results[arm.label]["confirm"] = self._confirm_metrics(arm)

    # ---- the parent run ---------------------------------------------------------------------
    def _parent(self) -> tuple[MlflowClient, str, RunWriter | None]:
        """The store, the experiment and the parent run SweepCallback opened (if it did)."""
        client = client_for(self.uri)
        exp = experiment_id(client, self.config.tracking.experiment,
                            artifact_root(self.uri, self.config.paths.mlruns_dir))
        kind = names.STUDY if self.settings.study else names.SWEEP
        parent = sweep_parent(client, exp, self.study_id, kind)
        return client, exp, None if parent is None else RunWriter(client, parent)

    def _record_plan(self, arms: list[Arm]) -> None:
        _, _, parent = self._parent()
        if parent is None or not self.settings.study:
            return
        limits = arms[0].budget
        plan = {"arms": json.dumps([a.label for a in arms]),
                "trials_per_arm": str(self.settings.trials), "seeds": str(self.settings.seeds),
                "budget": json.dumps(limits), "budget_kind": budget_kind(limits),
                "storage": self.storage}
        parent.tag({names.STUDY_ID: self.study_id,
                    **{f"{names.STUDY_PLAN_PREFIX}{k}": v for k, v in plan.items()}})
        parent.log_dict({a.label: a.spec for a in arms}, "study/spaces.json")

    def _confirm_metrics(self, arm: Arm) -> dict[str, dict[str, float]]:
        client, exp, _ = self._parent()
        runs = client.search_runs(
            [exp], f"tags.`{names.STUDY_ID}` = '{self.study_id}' and "
                   f"tags.`{names.PHASE}` = 'confirm' and tags.`{names.ARM}` = '{arm.label}'")
        return {r.data.params["seed"]: {k: v for k, v in r.data.metrics.items()
                                        if k.startswith(("val/", "test/"))} for r in runs}

    def _record_results(self, arms: list[Arm], results: dict[str, Any]) -> None:
        out = Path(str(self.config.hydra.sweep.dir))
        out.mkdir(parents=True, exist_ok=True)
        if not self.settings.study:    # hydra-optuna-sweeper's file, for scripts that read it
            [only] = results.values()
            OmegaConf.save(OmegaConf.create({"name": "optuna", "best_params": only["best_params"],
                                             "best_value": only["best_value"]}),
                           out / "optimization_results.yaml")
            return
        OmegaConf.save(OmegaConf.create(results), out / "study_results.yaml")
        _, _, parent = self._parent()
        if parent is None:
            return
        params, metrics = {}, {}
        for arm in arms:
            found = results[arm.label]
            params.update({f"tuned/{arm.slug}/{k}": v for k, v in found["best_params"].items()})
            metrics[f"search/{arm.slug}/val_{arm.monitor}_best"] = found["best_value"]
            tests = [m[f"test/{arm.monitor}"] for m in found["confirm"].values()
                     if f"test/{arm.monitor}" in m]
            if tests:
                metrics[f"confirm/{arm.slug}/test_{arm.monitor}_mean"] = sum(tests) / len(tests)
        parent.log_params(params)
        parent.log_metrics(metrics)
        parent.log_dict(results, "study/results.json")
