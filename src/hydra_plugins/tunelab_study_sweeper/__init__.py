"""tunelab's Hydra sweepers: `hydra/sweeper=study` (fair comparisons) and `hydra/sweeper=optuna`
(the `hparams_search=` presets), both on current Optuna with database storage; see study_sweeper."""
