"""`model.init_from`: the weights an earlier run produced, as a local folder models/ can load."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from tunelab.config import ConfigError
from tunelab.tracking.store import client_for

WEIGHTS = "weights"


def run_weights(ref: str, uri: str, cache_dir: Path) -> Path:
    """A folder as given, or the `weights/` artifact of the MLflow run `ref` in the store at
    `uri`, downloaded once under `cache_dir` (a finished run's artifacts do not change)."""
    folder = Path(ref).expanduser()
    if folder.is_dir():
        return folder.resolve()
    allowed = (f"a folder of saved weights, or the id of a run in {uri} that logged a "
               f"{WEIGHTS}/ artifact")
    try:
        run = client_for(uri).get_run(ref)
    except MlflowException:
        raise ConfigError("model.init_from", ref, allowed) from None
    target = Path(cache_dir).resolve() / "init_from" / run.info.run_id
    if not (target / WEIGHTS).is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent))
        try:
            mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=WEIGHTS,
                                                dst_path=str(staging), tracking_uri=uri)
        except (MlflowException, OSError):
            shutil.rmtree(staging, ignore_errors=True)
            raise ConfigError("model.init_from", ref, allowed + f"; run {ref} has none") from None
        if not (target / WEIGHTS).is_dir():
            staging.replace(target)
        else:
            shutil.rmtree(staging, ignore_errors=True)
    return target / WEIGHTS
