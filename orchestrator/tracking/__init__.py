"""W&B on the orchestrator side: read runs (local files or the W&B API), turn them into
imported baselines, upload offline runs. `wandb` is imported inside functions only."""
