#!/usr/bin/env bash
# Issue #16 item 4: the study (hydra/sweeper=study) on banking77 intents, the evidence behind each
# adapter's default `lr:` and `search:` range in conf/adapter/. Equal data: every arm trains
# STEPS optimizer steps of BATCH rows. Validation is 10% of train.csv held out (seed 0); test is
# test.csv shuffled once (seed 0), so data.max_eval_samples keeps every intent.
#
#   OMP_NUM_THREADS=1 bench/study_banking77.sh model=minilm adapter=full,lora adapter.r=8
#   SEARCH=1 STEPS=40 BATCH=8 bench/study_banking77.sh model=smollm2-135m adapter=lora \
#       'optim.lr=tag(log, interval(1e-4, 5e-3))'     one arm: a plain Optuna search, no confirm
#
# Extra arguments are tunelab-train overrides (the arms among them). Runs land in $WORK/mlruns.
#
# SEED_TRIALS=<file.json> seeds each adapter arm's Optuna study before the sweep starts, under the
# study id this very command gets (tunelab.sweeps.callbacks.sweep_key): {"adapter=lora":
# {"enqueue": [{"optim.lr": 2e-3, "adapter.r": 8}], "completed": [[{"optim.lr": 4.3e-3,
# "adapter.r": 8}, 0.446]]}}. Enqueued points are the arm's next trials (a designed grid instead of
# TPE's random start); completed ones are earlier trials with their val score, which count toward
# TRIALS, so TRIALS = their number runs the confirm phase alone on the best of them.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
DATA=${DATA:-$HERE/../shared/data/banking77}
WORK=${WORK:-$PWD}
STEPS=${STEPS:-100}
BATCH=${BATCH:-32}
TRIALS=${TRIALS:-4}
SEEDS=${SEEDS:-2}
EVAL=${EVAL:-1000}
if [[ -n ${SEARCH:-} ]]; then
  SWEEP=(hydra/sweeper=optuna hydra.sweeper.n_trials="$TRIALS")
else
  SWEEP=(hydra/sweeper=study hydra.sweeper.trials_per_arm="$TRIALS" hydra.sweeper.seeds="$SEEDS")
fi
mkdir -p "$WORK/data"
python - "$DATA/test.csv" "$WORK/data/banking77_test_shuffled.csv" <<'EOF'
import csv, random, sys
rows = list(csv.DictReader(open(sys.argv[1])))
random.Random(0).shuffle(rows)
with open(sys.argv[2], "w", newline="") as out:
    writer = csv.DictWriter(out, fieldnames=["text", "category"])
    writer.writeheader()
    writer.writerows(rows)
EOF
ARGS=(task=intent \
  data.train_file="$DATA/train.csv" data.test_file="$WORK/data/banking77_test_shuffled.csv" \
  data.label_column=category data.max_length=64 data.batch_size="$BATCH" \
  data.max_eval_samples="$EVAL" \
  trainer.max_steps="$STEPS" trainer.max_epochs=null trainer.val_check_interval="$STEPS" \
  trainer.checkpoint_every_n_steps=100000 trainer.enable_progress_bar=false \
  paths.mlruns_dir="$WORK/mlruns" paths.checkpoint_dir="$WORK/checkpoints" \
  paths.cache_dir="$WORK/.cache/tunelab" "$@")
if [[ -n ${SEED_TRIALS:-} ]]; then
  python - "$SEED_TRIALS" "$WORK/mlruns" "$HERE/conf/adapter" "${SWEEP[@]}" "${ARGS[@]}" <<'EOF'
import json, sys
from pathlib import Path
import optuna
from omegaconf import OmegaConf
from tunelab.sweeps.callbacks import sweep_key
from tunelab.sweeps.study import distribution, parse
spec, mlruns, adapters = json.load(open(sys.argv[1])), Path(sys.argv[2]), Path(sys.argv[3])
task = [a for a in sys.argv[4:] if not a.startswith("hydra")]    # Hydra's hydra.overrides.task
experiment = next((a.split("=", 1)[1] for a in task if a.startswith("tracking.experiment=")),
                  "tunelab")
study_id = sweep_key(OmegaConf.create({"hydra": {"overrides": {"task": task}, "sweeper": {}},
                                       "tracking": {"experiment": experiment}}))
mlruns.mkdir(parents=True, exist_ok=True)
for arm, points in spec.items():
    space = OmegaConf.load(adapters / f"{arm.split('=', 1)[1]}.yaml").search
    dists = {k: distribution(parse([f"{k}={v}"])[0]) for k, v in space.items()}
    study = optuna.create_study(study_name=f"tunelab-{study_id}:{arm.replace('=', ':')}",
                                storage=f"sqlite:///{mlruns.resolve() / 'optuna.db'}",
                                direction="maximize", load_if_exists=True)
    if study.trials:
        print(f"seed: {arm} already has {len(study.trials)} trials, left as stored")
        continue
    for params in points.get("enqueue", []):
        study.enqueue_trial(params)
    for params, value in points.get("completed", []):
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: dists[k] for k in params}, value=value))
    print(f"seed: study {study_id} arm {arm}: {len(study.trials)} trials stored")
EOF
fi
exec tunelab-train -m "${SWEEP[@]}" "${ARGS[@]}"
