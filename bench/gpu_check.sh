#!/usr/bin/env bash
# bash bench/gpu_check.sh [--cpu-dry-run]          (OUT=folder for its store, logs and results)
# On a lent GPU machine, as it is: installs what the image lacks (mlflow-skinny, hydra, datasets,
# torchdata...) offline from bench/gpu/wheelhouse/ (built beforehand by
# bench/gpu/build_wheelhouse.sh and carried with the run) into $OUT/site, checks every import,
# then runs bench/gpu/check.py: precision x clipping x adapter, fsdp and multi-gpu at one device,
# a sweep in one process (GPU memory back to zero between jobs), resume after SIGKILL, and the
# cost figures against CUDA-event timing, the allocator's peaks and a measured matmul peak.
# Tiny random-init models only (their configs are in conf/model, the tokenizer in
# bench/gpu/tokenizer), so nothing is downloaded. Exits non-zero on any FAILED row; the table is
# in $OUT/gpu_check.md. --cpu-dry-run runs the same on the CPU (CUDA-only rows SKIP).
# PYTHON picks the interpreter (default: ./.venv's when present, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
MISSING=$("$PYTHON" -c "import importlib.util as u; print(' '.join(m for m in ('mlflow', 'hydra',
  'omegaconf', 'datasets', 'torchdata', 'sqlalchemy', 'alembic') if u.find_spec(m) is None))")
if [ -n "$MISSING" ]; then
  echo "gpu_check: installing offline what this environment lacks ($MISSING)"
  if ! ls bench/gpu/wheelhouse/*.whl > /dev/null 2>&1; then
    echo "gpu_check: bench/gpu/wheelhouse/ is empty: run bench/gpu/build_wheelhouse.sh where" \
         "PyPI is reachable and carry the folder with the run" >&2
    exit 1
  fi
  "$PYTHON" -m pip install --quiet --no-index --no-deps --find-links bench/gpu/wheelhouse \
    --target "$OUT/site" -r bench/gpu/requirements.txt
  export PYTHONPATH="$OUT/site"
fi
export PYTHONPATH="$PWD/src:$PWD/bench/gpu${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" - <<'PY'
import importlib
import sys

failed = []
for name in ("torch", "lightning", "transformers", "peft", "torchmetrics", "pyarrow", "mlflow",
             "hydra", "omegaconf", "datasets", "torchdata", "sqlalchemy", "alembic",
             "tunelab.train", "probes"):
    try:
        module = importlib.import_module(name)
        print(f"import ok     {name} {getattr(module, '__version__', '')}")
    except Exception as err:  # every failure is a row, then the check stops
        print(f"import FAILED {name}: {err!r}")
        failed.append(name)
sys.exit(f"gpu_check: {len(failed)} imports FAILED: {failed}" if failed else 0)
PY
"$PYTHON" bench/gpu/check.py "$OUT" "$@"
