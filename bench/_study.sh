# Sourced by bench/study_*.sh: the study sweep they share. The caller sets HERE (the repository)
# and WORK, then calls `study <its task and data overrides> "$@"`, which runs
#   tunelab-train -m hydra/sweeper=study ... trainer.max_steps=$STEPS data.batch_size=$BATCH ...
# Environment: STEPS, BATCH (the budget, equal data in every arm: STEPS optimizer steps of BATCH
# rows), TRIALS (search trials per arm), SEEDS (confirm seeds per arm), SEARCH=1 (one arm: a plain
# Optuna search of TRIALS trials, no confirm), SEED_TRIALS=<file.json> (designed or earlier trials
# stored in each adapter arm's Optuna study first: bench/seed_trials.py).
study() {
  local sweep
  if [[ -n ${SEARCH:-} ]]; then
    sweep=(hydra/sweeper=optuna hydra.sweeper.n_trials="$TRIALS")
  else
    sweep=(hydra/sweeper=study hydra.sweeper.trials_per_arm="$TRIALS" hydra.sweeper.seeds="$SEEDS")
  fi
  local args=(data.batch_size="$BATCH" \
    trainer.max_steps="$STEPS" trainer.max_epochs=null trainer.val_check_interval="$STEPS" \
    trainer.checkpoint_every_n_steps=100000 trainer.enable_progress_bar=false \
    paths.mlruns_dir="$WORK/mlruns" paths.checkpoint_dir="$WORK/checkpoints" \
    paths.cache_dir="$WORK/.cache/tunelab" "$@")     # the caller's last: the command line wins
  if [[ -n ${SEED_TRIALS:-} ]]; then
    python "$HERE/bench/seed_trials.py" "$SEED_TRIALS" "$WORK/mlruns" "$HERE/conf/adapter" \
      "${sweep[@]}" "${args[@]}"
  fi
  exec tunelab-train -m "${sweep[@]}" "${args[@]}"
}
