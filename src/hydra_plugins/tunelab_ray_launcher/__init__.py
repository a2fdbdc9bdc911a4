"""tunelab's Hydra launcher for Ray (`+launcher=ray`); see ray_launcher."""
