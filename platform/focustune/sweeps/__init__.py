"""The tuning layer: Ray Tune trainables, Optuna search, MLflow tracking. The only place that
imports Ray, Optuna or MLflow; the trainer and methods run without them."""
