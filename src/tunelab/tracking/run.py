"""The one owner of a training run's MLflow record.

A logical run is identified by its config hash. Opening it finds the run of that hash in the
experiment: a FINISHED one is skipped (unless tracking.on_finished=rerun), a FAILED, KILLED or
abandoned RUNNING one is resumed (same run id, from its last checkpoint), else a new run starts.
Only rank 0 opens runs; other ranks get a TrackedRun that logs nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from omegaconf import DictConfig

from tunelab.tracking import names
from tunelab.tracking import params as P
from tunelab.tracking.identity import code_identity, installed_versions
from tunelab.tracking.interrupts import CtrlC
from tunelab.tracking.logger import RunLogger, StepClock
from tunelab.tracking.masking import mask_text
from tunelab.tracking.perf import CostMeter
from tunelab.tracking.store import (
    artifact_root,
    client_for,
    experiment_id,
    sweep_parent,
    tracking_uri,
)
from tunelab.tracking.writer import RunWriter

RESUMABLE = ("FAILED", "KILLED", "RUNNING", "SCHEDULED")


def is_rank_zero() -> bool:
    """Rank 0 unless a launcher says otherwise: torchrun (RANK), Lightning's launcher (LOCAL_RANK,
    NODE_RANK) or Slurm/submitit, which sets only SLURM_PROCID on each task."""
    return all(int(os.environ.get(key, "0")) == 0
               for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def default_run_name(cfg: DictConfig) -> str:
    return (f"{cfg.model.name}-{cfg.adapter.name}-{cfg.task.name}-{cfg.hardware.name}"
            f"-s{cfg.seed}")


@dataclass
class TrackedRun:
    cfg: DictConfig
    overrides: list[str]
    data_digest: str
    sweep_id: str | None = None
    uri: str = ""
    run_id: str | None = None
    status: str = "new"                 # new | resumed | skipped
    plain: dict = field(default_factory=dict)
    config_hash: str = ""
    run_kind: str = names.TRAIN         # train | reproduce: only train runs are found by hash
    source_run: str | None = None       # the run a reproduce re-runs (tag tunelab.source_run)

    def __post_init__(self) -> None:
        self.plain = P.plain_config(self.cfg)
        self.config_hash = P.config_hash(self.plain, self.data_digest)
        self.hardware = P.resolved_hardware(self.plain["hardware"],
                                            self.plain["trainer"]["precision"])
        self.uri = tracking_uri(self.cfg.tracking.uri, self.cfg.paths.mlruns_dir)
        self.active = is_rank_zero()
        self.client = client_for(self.uri) if self.active else None
        self.writer: RunWriter | None = None      # set once a run is created or resumed
        self._logger: RunLogger | None = None
        self.ctrl_c = CtrlC()
        self.system_metrics: SystemMetricsMonitor | None = None

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.cfg.paths.checkpoint_dir).resolve() / self.config_hash

    # ---- opening ---------------------------------------------------------------------------
    def open(self) -> TrackedRun:
        if not self.active:
            return self
        exp = experiment_id(self.client, self.cfg.tracking.experiment,
                            artifact_root(self.uri, self.cfg.paths.mlruns_dir))
        previous = self.client.search_runs(
            [exp], f"tags.`{names.CONFIG_HASH}` = '{self.config_hash}' "
                   f"and {names.kind_filter(names.TRAIN)}",
            order_by=["attributes.start_time DESC"], max_results=1) \
            if self.run_kind == names.TRAIN else []
        if previous and previous[0].info.status == "FINISHED" and \
                self.cfg.tracking.on_finished == "skip":
            self.run_id, self.status = previous[0].info.run_id, "skipped"
            return self
        if previous and previous[0].info.status in RESUMABLE:
            self.run_id, self.status = previous[0].info.run_id, "resumed"
            self.writer = RunWriter.reopen(self.client, self.run_id, {names.RESUMED: "true"})
            if names.ERROR in previous[0].data.tags:
                self.writer.untag(names.ERROR)
            return self
        self.writer = RunWriter.create(self.client, exp, self.run_kind,
                                       self.cfg.tracking.run_name or default_run_name(self.cfg),
                                       self._tags(exp))
        self.run_id = self.writer.run_id
        self._log_config()
        return self

    def _tags(self, exp: str) -> dict[str, str]:
        tags = {names.CONFIG_HASH: self.config_hash, names.OVERRIDES: " ".join(self.overrides),
                names.CHECKPOINT_DIR: str(self.checkpoint_dir),
                **{f"{names.VERSION_PREFIX}{k}": v for k, v in installed_versions().items()},
                **code_identity()}
        if names.CODE_COMMIT in tags:     # the UI's commit column: tunelab's, not the cwd's
            tags[names.GIT_COMMIT] = tags[names.CODE_COMMIT]
        if self.source_run:
            tags[names.SOURCE_RUN] = self.source_run
        study = self.cfg.get("study")
        if study is not None:       # hydra/sweeper=study sets these on each of its runs
            tags.update({names.STUDY_ID: study.id, names.ARM: study.arm,
                         names.PHASE: study.phase})
        if self.sweep_id:
            tags[names.SWEEP_ID] = self.sweep_id
            parent = sweep_parent(self.client, exp, self.sweep_id,
                                  names.STUDY if study is not None else names.SWEEP)
            if parent:
                tags[names.PARENT_RUN] = parent
        return tags

    def tag(self, tags: dict[str, str]) -> None:
        """Set tags on the run from rank 0 (other ranks log nothing)."""
        if self.writer is not None:
            self.writer.tag(tags)

    def _log_config(self) -> None:
        if self.run_kind == names.TRAIN:    # only train runs carry the training params
            device = {"hardware.resolved.device_model": self.hardware["device_model"]}
            self.writer.log_params({**P.flatten(self.plain), **device})
        self.writer.log_text(yaml.safe_dump(self.plain, sort_keys=False), "config/config.yaml")
        self.writer.log_text(yaml.safe_dump([mask_text(o) for o in self.overrides]),
                             "config/overrides.yaml")

    # ---- during the run ----------------------------------------------------------------------
    def logger(self) -> RunLogger | None:
        if not self.active:
            return None
        if self._logger is None:
            self._logger = RunLogger(self.client, self.run_id, self._logged_steps())
        return self._logger

    def callbacks(self) -> list:
        """Lightning callbacks that measure costs and keep metric steps in optimizer steps."""
        meter = CostMeter(self.cfg.adapter.method, self.cfg.hardware.usd_per_hour, self.tag)
        logger = self.logger()
        return [meter, self.ctrl_c] + ([StepClock(logger)] if logger is not None else [])

    def _logged_steps(self) -> dict[str, set[int]]:
        if self.status != "resumed":
            return {}
        run = self.client.get_run(self.run_id)
        return {key: {m.step for m in self.client.get_metric_history(self.run_id, key)}
                for key in run.data.metrics}

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        if self.writer is not None:     # a resumed run: no step twice
            self.writer.log_metrics(self.logger().unrecorded(metrics, step))

    def log_params(self, params: dict[str, object]) -> None:
        if self.writer is not None and self.status != "resumed" and self.run_kind == names.TRAIN:
            self.writer.log_params(params)

    def log_dict(self, data: dict, path: str) -> None:
        if self.writer is not None:
            self.writer.log_dict(data, path)

    def log_artifacts(self, folder: Path, path: str) -> None:
        if self.writer is not None:
            self.writer.log_artifacts(folder, path)

    def log_input(self, dataset, path: str, data_files: str | None, digest: str,
                  context: str) -> None:
        """Record the split `context` as a dataset input, once (a resumed run has it)."""
        if self.writer is not None and self.status != "resumed":
            self.writer.log_input(dataset, path, data_files, digest,
                                  f"{self.cfg.task.name}-{context}", context)

    def final_metric(self, key: str) -> float | None:
        if not self.active or self.run_id is None:
            return None
        return self.client.get_run(self.run_id).data.metrics.get(key)

    # ---- closing -----------------------------------------------------------------------------
    def __enter__(self) -> TrackedRun:
        self.ctrl_c.install()
        if self.active and self.run_id is not None and self.cfg.tracking.system_metrics:
            # MLflow's CPU, memory, disk, network (and, with nvidia-ml-py, GPU) sampler;
            # MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL sets its period (10 s by default)
            self.system_metrics = SystemMetricsMonitor(
                self.run_id, resume_logging=self.status == "resumed", tracking_uri=self.uri)
            self.system_metrics.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.ctrl_c.restore()
        late = exc is None and self.ctrl_c.pressed
        if late:    # Ctrl-C after the last batch boundary still ends the run KILLED, non-zero
            exc_type, exc, tb = KeyboardInterrupt, KeyboardInterrupt("after the last step"), None
        if self.writer is not None:
            self._close(exc_type, exc, tb)
        if late:
            raise exc
        return False

    def _stop_system_metrics(self) -> None:
        """Stop MLflow's sampler and publish the samples of its last, unfinished interval, which
        it drops: a run shorter than one interval would otherwise record no system metric."""
        monitor = self.system_metrics
        monitor.finish()
        last = monitor.aggregate_metrics()
        if last:
            monitor.publish_metrics(last)
            monitor.mlflow_logger.flush()

    def _close(self, exc_type, exc, tb) -> None:
        if self.system_metrics is not None:
            self._stop_system_metrics()
        if self._logger is not None:
            self._logger.flush()
        if exc is None:
            self.writer.finish()
        else:
            self.writer.fail(exc_type, exc, tb)
