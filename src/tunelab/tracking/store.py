"""Which MLflow store a run goes to, and safe creation of experiments in it."""

from __future__ import annotations

import time
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException


def tracking_uri(uri: str | None, mlruns_dir: str = "mlruns") -> str:
    """`uri` as given, or the embedded default: SQLite under ./mlruns/ (never the file store)."""
    if uri:
        return uri
    root = Path(mlruns_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def artifact_root(uri: str, mlruns_dir: str = "mlruns") -> str | None:
    """For the embedded store, artifacts sit beside the database; a server decides its own."""
    if uri.startswith("sqlite:///") and Path(uri.removeprefix("sqlite:///")).parent == \
            Path(mlruns_dir).resolve():
        return (Path(mlruns_dir).resolve() / "artifacts").as_uri()
    return None


def client_for(uri: str) -> MlflowClient:
    """A client whose store exists: parallel first writers race to create the SQLite schema."""
    for attempt in range(5):
        try:
            client = MlflowClient(uri)
            client.search_experiments(max_results=1)
            return client
        except MlflowException:
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def experiment_id(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """Get or create `name`, tolerating another process creating it at the same moment."""
    for _ in range(5):
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException:
            time.sleep(0.2)
    raise RuntimeError(f"could not get or create MLflow experiment {name!r}")
