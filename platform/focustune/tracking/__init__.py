"""Tracking: everything that talks to MLflow. Trial and study runs of a sweep, the operation queue
that sends them, the comparison's summary run, the study views, the logged and registered model, the
UI and the checks of a store. Used by ``train``, ``tune``/``sweep``, ``predict`` and ``compare``; the
only package importing ``mlflow`` (no Ray, no Optuna here: the tuning layer hands Tune's events over)."""
