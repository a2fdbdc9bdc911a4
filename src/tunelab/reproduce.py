"""`tunelab-reproduce RUN_ID`: re-run a training run from its MLflow record alone and say whether
the metrics match.

The record holds everything needed: `config/config.yaml` (the resolved, checked config),
`config/overrides.yaml`, the package versions as `tunelab.version.*` tags and the code that ran as
`tunelab.code.*` (version, commit and dirty state of tunelab's checkout). The re-run is a new
run tagged `tunelab.run_kind=reproduce` and `tunelab.source_run=<id>`, so it never stands in for
(or resumes) the training run of the same config hash.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import mlflow
import yaml
from mlflow.entities import Run
from omegaconf import DictConfig, OmegaConf

from tunelab.tracking import names
from tunelab.tracking.identity import code_drift, installed_versions
from tunelab.tracking.store import client_for, tracking_uri
from tunelab.train import train

# Same machine and thread count: CPU float32 kernels run in the same order, so the numbers are
# bit-identical; the tolerance only absorbs the float64 <-> float32 round trip of the store.
ATOL = 1e-6
COMPARED = ("train/", "val/", "test/", "params/trainable", "params/total")


def version_drift(run: Run) -> dict[str, tuple[str, str | None]]:
    """Packages whose installed version differs from the one the run recorded."""
    installed = installed_versions()
    recorded = {k.removeprefix(names.VERSION_PREFIX): v for k, v in run.data.tags.items()
                if k.startswith(names.VERSION_PREFIX)}
    return {name: (was, installed.get(name)) for name, was in recorded.items()
            if installed.get(name) != was}


def recorded_config(run: Run, uri: str, scratch: Path) -> tuple[DictConfig, list[str]]:
    """The run's resolved config and overrides, pointed at `uri` and a private checkpoint folder
    (so a re-run never touches the resume checkpoints of the run it reproduces)."""
    folder = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="config",
                                                      dst_path=str(scratch), tracking_uri=uri))
    cfg = OmegaConf.create(yaml.safe_load((folder / "config.yaml").read_text()))
    overrides_file = folder / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
    cfg.tracking.uri = uri
    cfg.tracking.run_name = f"{run.info.run_name}-reproduce"
    cfg.paths.checkpoint_dir = str(scratch / "checkpoints")
    return cfg, list(overrides or [])


def compare(source: dict[str, float], rerun: dict[str, float],
            atol: float = ATOL) -> list[tuple[str, float, float | None, bool]]:
    """(metric, recorded, reproduced, matches) for every compared metric the source recorded."""
    rows = []
    for key in sorted(k for k in source if k.startswith(COMPARED)):
        again = rerun.get(key)
        same = again is not None and math.isclose(source[key], again, rel_tol=0, abs_tol=atol)
        rows.append((key, source[key], again, same))
    return rows


def reproduce(run_id: str, uri: str) -> tuple[str, list[tuple[str, float, float | None, bool]]]:
    """Re-run `run_id` into a new reproduce run; return its id and the metric comparison."""
    client = client_for(uri)
    source = client.get_run(run_id)
    kind = source.data.tags.get(names.RUN_KIND)
    if kind != names.TRAIN:
        raise SystemExit(f"run {run_id} is not a training run ({names.RUN_KIND}={kind!r})")
    for name, (was, now) in version_drift(source).items():
        print(f"warning: {name} was {was} when the run was recorded, {now} is installed; "
              "metrics may differ", file=sys.stderr)
    for key, (was, now) in code_drift(source.data.tags).items():
        print(f"warning: {key} was {was or 'not recorded'} when the run was recorded, "
              f"{now or 'unknown'} now; the code that re-runs differs", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="tunelab-reproduce-") as scratch:
        cfg, overrides = recorded_config(source, uri, Path(scratch))
        train(cfg, overrides, run_kind=names.REPRODUCE, source_run=run_id)
    [rerun] = client.search_runs([source.info.experiment_id],
                                 f"tags.`{names.SOURCE_RUN}` = '{run_id}' and "
                                 f"{names.kind_filter(names.REPRODUCE)}",
                                 order_by=["attributes.start_time DESC"], max_results=1)
    if rerun.data.tags.get(names.CONFIG_HASH) != source.data.tags.get(names.CONFIG_HASH):
        print("warning: the config hash differs from the source run's: the data read has changed",
              file=sys.stderr)
    return rerun.info.run_id, compare(source.data.metrics, rerun.data.metrics)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tunelab-reproduce",
        description="Re-run a training run from its MLflow record and check its metrics match "
                    f"(absolute tolerance {ATOL}).")
    parser.add_argument("run_id", help="the MLflow run id of a training run")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: the embedded store under ./mlruns/)")
    args = parser.parse_args(argv)
    uri = tracking_uri(args.tracking_uri)
    new_id, rows = reproduce(args.run_id, uri)
    width = max((len(key) for key, *_ in rows), default=10)
    for key, was, again, same in rows:
        print(f"{key:<{width}}  {was:.6g}  {'-' if again is None else f'{again:.6g}'}  "
              f"{'ok' if same else 'DIFFERS'}")
    matched = bool(rows) and all(same for *_, same in rows)
    print(f"reproduce run {new_id} of {args.run_id}: metrics "
          f"{'match' if matched else 'differ'} (atol {ATOL})")
    return 0 if matched else 1


if __name__ == "__main__":
    sys.exit(main())
