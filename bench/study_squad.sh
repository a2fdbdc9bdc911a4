#!/usr/bin/env bash
# Issue #16 item 4 on extractive QA: the study (hydra/sweeper=study) on the SQuAD articles in
# ../shared/data/squad_v1.1_part, split by article so no scored context is seen in training and
# the confirm phase's test questions never chose a rate: train = the first TRAIN questions of
# articles 0-29 (as bench/qa_quality.py), validation = the first EVAL of articles 30-34, test =
# the first EVAL of articles 35-39. task=qa defaults (128-token windows, doc_stride 48).
#
#   SEED_TRIALS=grid.json OMP_NUM_THREADS=1 taskset -c 1 bench/study_squad.sh model=minilm \
#       adapter=full,lora data.num_workers=0        # STEPS=200 BATCH=16 TRIALS=3 SEEDS=2
#   grid.json: {"adapter=full": {"enqueue": [{"optim.lr": 1e-4}, ...]}, "adapter=lora":
#       {"enqueue": [{"optim.lr": 2e-3, "adapter.r": 8}, ...]}}     (r in the grid: full has no r)
#
# Extra arguments are tunelab-train overrides (the arms among them). Runs land in $WORK/mlruns.
# Budget, trials, seeds and SEED_TRIALS (designed or earlier trials stored first): bench/_study.sh.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
DATA=${DATA:-$HERE/../shared/data/squad_v1.1_part/articles_00-39.json}
WORK=${WORK:-$PWD}
STEPS=${STEPS:-200}
BATCH=${BATCH:-16}
TRIALS=${TRIALS:-3}
SEEDS=${SEEDS:-2}
TRAIN=${TRAIN:-2000}
EVAL=${EVAL:-400}
ARTICLES=${ARTICLES:-0:30 30:35 35:40}    # train, validation, test: first:end article
read -r train validation test <<<"$ARTICLES"
python "$HERE/bench/squad_split.py" "$DATA" "$WORK/data" train="$train:$TRAIN" \
  validation="$validation:$EVAL" test="$test:$EVAL"
. "$HERE/bench/_study.sh"
study task=qa data.train_file="$WORK/data/train.json" \
  data.validation_file="$WORK/data/validation.json" data.test_file="$WORK/data/test.json" "$@"
