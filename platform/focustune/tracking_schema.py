"""Names of what a sweep records in MLflow, defined once: the sweep layer writes them and
``focustune_analysis`` reads them. Plain constants, so importing this needs no MLflow."""

from __future__ import annotations

#: Prefix of every focustune tag (``focustune.kind``, ``focustune.method``, ...).
TAG = "focustune."
#: MLflow's own tag that nests a run under its parent.
PARENT_TAG = "mlflow.parentRunId"
#: MLflow's own tag holding a run's description (Markdown).
NOTE_TAG = "mlflow.note.content"

#: ``focustune.kind`` values: a (dataset, method) study's parent run, a search trial, a seed re-run of
#: the selected configuration, the report run written by ``focustune compare``.
KIND_STUDY, KIND_TRIAL, KIND_RERUN, KIND_SUMMARY = "study", "trial", "seed_rerun", "summary"

#: Tags (after ``TAG``) that every trial and re-run carries, so the UI can group and filter by them.
RUN_TAGS = ("sweep_id", "study", "kind", "dataset", "method")

#: Final metrics of a run: its best validation epoch's scores and that epoch's test scores.
#: Phased methods (IMET, mdgan) also log, per stage of the run (before and after the method's
#: mechanism first acted), the best epoch within that stage: ``<stage>_best_epoch``,
#: ``<stage>_best_val_<metric>`` and ``<stage>_test_<metric>``.
STAGES = ("before_mechanism", "after_mechanism")
FINAL_PREFIXES = ("best_val_", "test_", *(f"{stage}_" for stage in STAGES))
#: A study run's params ``best.<name>``: the selected configuration.
BEST_PARAM_PREFIX = "best."
#: A study run's metrics ``seeds_mean_test_<metric>``: the mean over its seed re-runs.
SEEDS_MEAN_PREFIX = "seeds_mean_"
BEST_OBJECTIVE, FINISHED_TRIALS = "best_objective", "finished_trials"
#: Busy over available trial-slot time, overall (metric on every study run) and per node.
UTILISATION = "utilisation"


def study_key(dataset: str, method: str) -> str:
    """The name of a (dataset, method) study: MLflow tag ``focustune.study`` and Optuna study name."""
    return f"{dataset}/{method}"


def split_study_key(key: str) -> tuple[str, str]:
    """(dataset, method) of a study key; dataset names may contain '/', method names do not."""
    dataset, _, method = key.rpartition("/")
    return dataset, method
