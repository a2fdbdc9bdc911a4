#!/usr/bin/env bash
# bash bench/gpu_costs.sh            (about a minute on one GPU; needs no network)
# On a CUDA machine: the cost figures of issue #15 on the GPU path. One basic multirun (one process)
# runs the same tiny-bert config twice per precision (bf16-mixed, 32-true), then prints per run the
# peak memory (the two of a pair must agree within 5%: the CUDA peak is reset per run), the peak
# FLOP/s and its source (a rated figure for that GPU model and dtype), MFU, and energy (NVML, with
# nvidia-ml-py installed). Exit status 1 when a pair's peak memory differs by more than 5%.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HYDRA_FULL_ERROR=1
STORE="$OUT/mlruns"
python -m tunelab.train -m hardware=gpu model=tiny-bert adapter=full trainer.max_steps=40 \
  trainer.max_epochs=null trainer.enable_progress_bar=false data.batch_size=32 data.max_length=64 \
  "trainer.precision=bf16-mixed,32-true" "tracking.run_name=first,second" tracking.on_finished=rerun \
  tracking.experiment=gpu-costs "tracking.uri=sqlite:///$STORE/mlflow.db" "paths.mlruns_dir=$STORE" \
  "paths.cache_dir=$OUT/cache" "paths.checkpoint_dir=$OUT/checkpoints" "hydra.sweep.dir=$OUT/multirun" \
  > "$OUT/train.log" 2>&1 || { tail -30 "$OUT/train.log"; exit 1; }

python - "$STORE" <<'PY'
import sys
from mlflow import MlflowClient
client = MlflowClient(f"sqlite:///{sys.argv[1]}/mlflow.db")
exp = client.get_experiment_by_name("gpu-costs")
runs = client.search_runs([exp.experiment_id], "tags.`tunelab.run_kind` = 'train'")
pairs = {}
for r in sorted(runs, key=lambda r: r.info.start_time):
    p, m, t = r.data.params, r.data.metrics, r.data.tags
    pairs.setdefault(p["hardware.resolved.precision"], []).append(m["perf/peak_mem_mb"])
    print(f"{r.info.run_name:7} {p['hardware.resolved.precision']:10} {p['hardware.resolved.device_model']}"
          f" | peak {m['perf/peak_mem_mb']:.1f} MB | {m.get('perf/peak_flops', float('nan')):.3g} FLOP/s"
          f" ({t.get('perf.peak_source')}) | mfu {m.get('perf/mfu', float('nan')):.4f}"
          f" | energy {m.get('perf/energy_j', float('nan')):.1f} J ({t.get('perf.energy_source')})"
          f" | {m['perf/train_samples_per_sec']:.0f} samples/s")
bad = {k: v for k, v in pairs.items() if len(v) == 2 and abs(v[0] - v[1]) > 0.05 * max(v)}
print("peak memory of identical jobs:", "differs " + str(bad) if bad else "agrees within 5%")
sys.exit(1 if bad else 0)
PY
