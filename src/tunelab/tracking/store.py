"""Which MLflow store a run goes to, and safe use of the embedded SQLite store by many processes.

Parallel jobs (joblib workers, several sweeps at once) share one SQLite file. MLflow already sets a
20 s busy timeout per session, but SQLite still answers "database is locked" at once when a reading
transaction needs to become a writing one while another process writes, and the first writers race
to create the schema and the experiment. So the first process creates the schema under a file lock,
the store runs in WAL mode (readers never block the writer), and every client tunelab hands out
retries lock errors with backoff.

Any store, a server's included, also loses one race of its own: `log_inputs` looks a dataset up and
inserts it when missing, so runs logging the same new dataset at once collide on its unique key
(seen in a parallel sweep against a server). The loser's transaction rolled back and the row now
exists, so tunelab's client simply logs again and links its run to the winner's dataset.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.utils.file_utils import ExclusiveFileLock
from sqlalchemy.exc import SQLAlchemyError

from tunelab.tracking import names

LOCK_RETRIES = 12


def embedded_uri(mlruns_dir: str = "mlruns") -> str:
    """The embedded store's URI: SQLite under ./mlruns/ (never the file store); creates nothing,
    so a reader (tunelab-compare) can tell a missing store from an empty one."""
    return f"sqlite:///{Path(mlruns_dir).resolve() / 'mlflow.db'}"


def tracking_uri(uri: str | None, mlruns_dir: str = "mlruns") -> str:
    """`uri` as given, or the embedded default, its folder created for the writer."""
    if uri:
        return uri
    Path(mlruns_dir).resolve().mkdir(parents=True, exist_ok=True)
    return embedded_uri(mlruns_dir)


def artifact_root(uri: str, mlruns_dir: str = "mlruns") -> str | None:
    """For the embedded store, artifacts sit beside the database; a server decides its own."""
    if uri.startswith("sqlite:///") and Path(uri.removeprefix("sqlite:///")).parent == \
            Path(mlruns_dir).resolve():
        return (Path(mlruns_dir).resolve() / "artifacts").as_uri()
    return None


def is_lock_error(err: Exception) -> bool:
    text = str(err).lower()
    return "database is locked" in text or "database table is locked" in text


def is_lost_insert_race(err: Exception) -> bool:
    """Another writer inserted the same unique row first (SQLite, PostgreSQL, MySQL wording)."""
    text = str(err).lower()
    return any(s in text for s in ("unique constraint failed", "violates unique constraint",
                                   "duplicate entry"))


def _retried(method: Callable, retry_on: Callable[[Exception], bool]) -> Callable:
    """`method`, retried with backoff while `retry_on` says its error was another writer's doing
    (its transaction rolled back, so a retry writes nothing twice)."""
    @functools.wraps(method)
    def call(*args, **kwargs):
        for attempt in range(LOCK_RETRIES):
            try:
                return method(*args, **kwargs)
            except (MlflowException, SQLAlchemyError) as err:
                if not retry_on(err) or attempt == LOCK_RETRIES - 1:
                    raise
                time.sleep(min(0.1 * 2 ** attempt, 3.0))
        raise AssertionError("unreachable")
    return call


class StoreClient(MlflowClient):
    """An MlflowClient whose store calls survive other processes writing the same SQLite file."""


for _name in ("create_experiment", "get_experiment_by_name", "search_experiments", "create_run",
              "get_run", "search_runs", "get_metric_history", "update_run", "set_terminated",
              "log_batch", "set_tag", "delete_tag", "set_experiment_tag"):
    setattr(StoreClient, _name, _retried(getattr(MlflowClient, _name), is_lock_error))
StoreClient.log_inputs = _retried(
    MlflowClient.log_inputs, lambda err: is_lock_error(err) or is_lost_insert_race(err))


def _use_wal(db: Path) -> None:
    """Switch the embedded SQLite file to write-ahead logging (persistent, so once per file is
    enough; a no-op when already on). Local disks only, which the embedded store is meant for."""
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def _ready_client(uri: str) -> MlflowClient:
    """A client whose store answers (a server may still be starting)."""
    for attempt in range(8):
        try:
            client = StoreClient(uri)
            client.search_experiments(max_results=1)
            return client
        except (MlflowException, SQLAlchemyError, sqlite3.OperationalError):
            if attempt == 7:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def client_for(uri: str) -> MlflowClient:
    """A client whose store exists. For the embedded store, the first process creates the schema
    while the others wait on a file lock: MLflow migrates a new SQLite file unguarded, and two
    processes migrating it at once lost a run (two sweeps starting together)."""
    if not uri.startswith("sqlite:///"):
        return _ready_client(uri)
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with ExclusiveFileLock(str(db.parent / f"{db.name}.lock")):
        _use_wal(db)
        return _ready_client(uri)


def experiment_id(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """Get or create `name`, tolerating another process creating it at the same moment. It opens
    in the MLflow UI's model-training view, also when it existed without a kind."""
    for _ in range(5):
        found = client.get_experiment_by_name(name)
        if found is not None:
            if names.EXPERIMENT_KIND_TAG not in found.tags:
                client.set_experiment_tag(found.experiment_id, names.EXPERIMENT_KIND_TAG,
                                          names.EXPERIMENT_KIND)
            return found.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifact_location,
                                            tags={names.EXPERIMENT_KIND_TAG: names.EXPERIMENT_KIND})
        except MlflowException:
            time.sleep(0.2)
    raise RuntimeError(f"could not get or create MLflow experiment {name!r}")


def sweep_parent(client: MlflowClient, experiment: str, sweep_id: str,
                 kind: str = names.SWEEP) -> str | None:
    """The run id of a sweep's parent run (the first one, if a rerun ever made two); `kind` is
    its tunelab.run_kind: `study` for hydra/sweeper=study."""
    runs = client.search_runs([experiment], f"tags.`{names.SWEEP_ID}` = '{sweep_id}' and "
                                            f"{names.kind_filter(kind)}",
                              order_by=["attributes.start_time ASC"], max_results=1)
    return runs[0].info.run_id if runs else None
