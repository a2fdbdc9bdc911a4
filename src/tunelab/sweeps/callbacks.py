"""Hydra callbacks for multiruns: one sweep id and one parent MLflow run per multirun, a line as
each job starts, and a closing summary (its runs ranked, the failed jobs) that works whichever
launcher ran them.

Hydra 1.3's BasicSweeper raises the first failed job's error only after the whole batch ran, and
then never calls `on_multirun_end`. So each job writes its outcome into the shared sweep folder
from `on_job_end` (which runs in the job's own process: in-process for the basic launcher, in a
loky worker for joblib), and the main process reads those records either in `on_multirun_end` or,
when Hydra is exiting on a job's error, from an `atexit` hook.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import pickle
import traceback
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from mlflow.entities import Run
from omegaconf import DictConfig, OmegaConf

from tunelab.tracking import names
from tunelab.tracking.masking import mask_text
from tunelab.tracking.store import (
    artifact_root,
    client_for,
    experiment_id,
    sweep_parent,
    tracking_uri,
)
from tunelab.tracking.summary import FailedJob, sweep_summary
from tunelab.tracking.writer import RunWriter

SWEEP_ENV = "TUNELAB_SWEEP_ID"
STATE_DIR = ".tunelab"          # inside the sweep folder: the sweep id and one record per job
log = logging.getLogger("tunelab.sweeps")


def sweep_id_for(sweep_dir: str) -> str:
    """The sweep id for a job whose launcher did not pass SWEEP_ENV on: the one the sweep's
    callback wrote into the shared sweep folder, else a hash of that folder."""
    marker = Path(sweep_dir) / STATE_DIR / "sweep_id"
    if marker.is_file():
        return marker.read_text().strip()
    return hashlib.sha1(str(Path(sweep_dir).resolve()).encode()).hexdigest()[:12]


def sweep_key(config: DictConfig) -> str:
    """What makes two invocations the same multirun: its task overrides, the sweeper's own params
    (presets and searches put their sweep there) and the experiment. Rerunning a killed sweep thus
    rejoins its parent run, so one parent holds every run of the sweep however often it resumed."""
    params = config.hydra.sweeper.get("params") or {}
    spec = {"overrides": sorted(config.hydra.overrides.task),
            "params": OmegaConf.to_container(params) if isinstance(params, DictConfig) else params,
            "experiment": config.tracking.experiment}
    return hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]


def parent_kind(config: DictConfig) -> str:
    """The parent run's tunelab.run_kind: `study` under hydra/sweeper=study (it also records each
    arm's tuned values), `sweep` for any other multirun."""
    return names.STUDY if "trials_per_arm" in config.hydra.sweeper else names.SWEEP


def picklable(error: BaseException) -> BaseException:
    """`error`, or a RuntimeError with its text when it cannot make the trip back from a joblib
    worker: an exception whose __init__ takes other arguments than its message fails to unpickle,
    and loky then breaks the whole pool, killing the jobs still running."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        return RuntimeError(f"{type(error).__name__}: {error}\n{text}")


def job_records(sweep_dir: Path) -> list[dict]:
    """Outcomes the jobs of this invocation wrote, in job order."""
    found = [json.loads(p.read_text()) for p in (sweep_dir / STATE_DIR / "jobs").glob("*.json")]
    return sorted(found, key=lambda r: r["num"])


def failed_jobs(failed: list[dict], unfinished: list[Run]) -> list[FailedJob]:
    """The failed jobs of this invocation with their errors, then the sweep's runs left
    unfinished by an earlier one (or by a job killed with the sweep) that no failed job names."""
    jobs = [FailedJob(f"job {r['num']}", mask_text(" ".join(r["overrides"])), r["error"])
            for r in failed]
    named = {job.overrides for job in jobs}
    return jobs + [FailedJob(f"run {r.info.run_name} ({r.info.run_id})",
                             r.data.tags.get(names.OVERRIDES, ""), r.info.status)
                   for r in unfinished if r.data.tags.get(names.OVERRIDES) not in named]


def planned_jobs(config: DictConfig) -> int | None:
    """How many jobs the sweep launches, where the sweeper says so up front: its trial count,
    or the product of the swept values for Hydra's basic sweeper; None when unknown."""
    sweeper = config.hydra.sweeper
    if sweeper.get("n_trials") is not None:
        return int(sweeper.n_trials)
    if not str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return None
    params = sweeper.get("params") or {}
    args = [*config.hydra.overrides.task, *(f"{k}={v}" for k, v in params.items())]
    last = {o.get_key_element(): o for o in OverridesParser.create().parse_overrides(args)}
    total = 1
    for override in last.values():          # a later override of the same key wins
        if override.is_sweep_override():
            total *= len(list(override.sweep_string_iterator()))
    return total


class SweepCallback(Callback):
    """Creates (or rejoins) the parent run at multirun start; jobs find it by sweep id; the end of
    the multirun closes it and names every failed job."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        sweep_id = sweep_key(config)
        os.environ[SWEEP_ENV] = sweep_id
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        (sweep_dir / STATE_DIR / "jobs").mkdir(parents=True, exist_ok=True)
        for stale in (sweep_dir / STATE_DIR / "jobs").glob("*.json"):   # a reused sweep dir
            stale.unlink()
        (sweep_dir / STATE_DIR / "sweep_id").write_text(sweep_id)
        self._uri = tracking_uri(config.tracking.uri, config.paths.mlruns_dir)
        client = client_for(self._uri)
        self._exp = experiment_id(client, config.tracking.experiment,
                                  artifact_root(self._uri, config.paths.mlruns_dir))
        kind = parent_kind(config)
        tags = {names.SWEEP_ID: sweep_id, names.OVERRIDES: " ".join(config.hydra.overrides.task),
                names.SWEEP_DIR: str(sweep_dir), names.SWEEP_STATUS: "running"}
        earlier = sweep_parent(client, self._exp, sweep_id, kind)
        if earlier:
            self._run_id = RunWriter.reopen(client, earlier, {names.RUN_KIND: kind, **tags}).run_id
            log.info("sweep %s: rejoining parent run %s", sweep_id, self._run_id)
        else:
            self._run_id = RunWriter.create(client, self._exp, kind, f"{kind}-{sweep_id}",
                                            tags).run_id
        self._sweep_id, self._sweep_dir, self._closed = sweep_id, sweep_dir, False
        self._metric, self._mode = f"val/{config.task.monitor}", str(config.task.mode)
        planned = planned_jobs(config)
        (sweep_dir / STATE_DIR / "planned").write_text("" if planned is None else str(planned))
        atexit.register(self._close_after_error)

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        """Between jobs the console would go quiet: say which job starts, n of N."""
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        planned = Path(str(config.hydra.sweep.dir)) / STATE_DIR / "planned"
        total = planned.read_text().strip() if planned.is_file() else ""
        num = int(config.hydra.job.num)     # Hydra's job number, as in its "#N" and the summary
        log.info("sweep %s: job %d (%d%s) starting: %s", sweep_id_for(str(config.hydra.sweep.dir)),
                 num, num + 1, f" of {total}" if total else "",
                 mask_text(" ".join(config.hydra.overrides.task)))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        # the failed job's exception; reading `.return_value` would raise and print it again
        error = job_return._return_value if job_return.status == JobStatus.FAILED else None
        if error is not None:
            job_return._return_value = picklable(error)
        record = {"num": int(config.hydra.job.num), "overrides": list(job_return.overrides or []),
                  "status": job_return.status.name,
                  "error": None if error is None else f"{type(error).__name__}: {error}"[:500]}
        folder = Path(str(config.hydra.sweep.dir)) / STATE_DIR / "jobs"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{record['num']}.json").write_text(json.dumps(record))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if getattr(self, "_run_id", None) and self._close(stopped=False):
            raise SystemExit(1)

    def _close_after_error(self) -> None:
        """Hydra is exiting on a job's error (or an interrupt): on_multirun_end never ran."""
        if not self._closed:
            self._close(stopped=True)

    def _close(self, stopped: bool) -> bool:
        """Print the summary, close the parent run; True when a job failed."""
        self._closed = True
        records = job_records(self._sweep_dir)
        failed = [r for r in records if r["status"] == "FAILED"]
        client = client_for(self._uri)
        runs = client.search_runs([self._exp], f"tags.`{names.SWEEP_ID}` = '{self._sweep_id}' "
                                               f"and {names.kind_filter(names.TRAIN)}")
        unfinished = [r for r in runs if r.info.status != "FINISHED"]
        status = "FAILED" if failed or (unfinished and not stopped) else \
            "KILLED" if stopped else "FINISHED"
        log.info("sweep %s: %d jobs ran, %d failed", self._sweep_id, len(records), len(failed))
        print(sweep_summary(client, self._uri, self._run_id, runs, self._metric, self._mode,
                            failed_jobs(failed, unfinished)), flush=True)
        parent = RunWriter(client, self._run_id)
        tags = {names.SWEEP_STATUS: status.lower()}
        if failed:
            tags[names.FAILED_JOBS] = ",".join(str(r["num"]) for r in failed)
        parent.tag(tags)
        parent.finish(status)
        return bool(failed or unfinished)
