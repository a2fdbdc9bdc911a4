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
# Budget, trials, seeds and SEED_TRIALS (designed or earlier trials stored first): bench/_study.sh.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
DATA=${DATA:-$HERE/../shared/data/banking77}
WORK=${WORK:-$PWD}
STEPS=${STEPS:-100}
BATCH=${BATCH:-32}
TRIALS=${TRIALS:-4}
SEEDS=${SEEDS:-2}
EVAL=${EVAL:-1000}
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
. "$HERE/bench/_study.sh"
study task=intent \
  data.train_file="$DATA/train.csv" data.test_file="$WORK/data/banking77_test_shuffled.csv" \
  data.label_column=category data.max_length=64 data.max_eval_samples="$EVAL" "$@"
