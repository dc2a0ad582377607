"""Training: data, the trainer, one trial, the runners, the Optuna study and a run folder's records."""
