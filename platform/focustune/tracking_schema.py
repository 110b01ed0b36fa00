"""Names shared by two layers, defined once: what a run records in MLflow (the sweep layer and
``train --log-model`` write them, ``focustune_analysis`` reads them), the metric names, the default
tracking store and how to open a store in the UI. Plain constants and functions, so importing this
needs no MLflow."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

# The metric names, derived from the table of metrics (``metric_table``): the scalar metrics in
# report order, a ``train --output-json`` record's metrics, the default selection metric.
from focustune.metric_table import DEFAULT_SELECTION_METRIC, METRIC_NAMES, RECORD_METRICS  # noqa: F401

#: The MLflow store a command uses when given no ``--tracking-uri``: ``mlflow.db`` in the working folder.
DEFAULT_STORE_FILE = "mlflow.db"
TRACKING_URI_HELP = (f"MLflow store for tracking and the model registry: a server (http://HOST:PORT) or a "
                     f"database URL (default: sqlite:///./{DEFAULT_STORE_FILE})")

#: Prefix of every focustune tag (``focustune.kind``, ``focustune.method``, ...).
TAG = "focustune."
#: MLflow's own tag that nests a run under its parent.
PARENT_TAG = "mlflow.parentRunId"
#: MLflow's own tag holding a run's description (Markdown).
NOTE_TAG = "mlflow.note.content"

#: ``focustune.kind`` values: a (dataset, method) study's parent run, a search trial, a seed re-run of
#: the selected configuration, the report run written by ``focustune compare``.
KIND_STUDY, KIND_TRIAL, KIND_RERUN, KIND_SUMMARY = "study", "trial", "seed_rerun", "summary"

#: Tag (after ``TAG``) of a trial's run ended before its full budget (by ASHA): "true"/"false".
STOPPED_EARLY = "stopped_early"
#: Tag (after ``TAG``) of a run whose work a killed driver's last Tune snapshot never recorded.
LOST_ON_RESTART = "lost_on_restart"
#: Tags (after ``TAG``) that every trial and re-run carries, so the UI can group and filter by them.
RUN_TAGS = ("sweep_id", "study", "kind", "dataset", "method")

#: Tags (after ``TAG``) of an mdgan run, per augmented class: ``gan.class_<c>.<field>``, the fields
#: being the GAN's store address, whether the run "trained" it or "reused" it, and its quality check
#: (the share of its generated images, and of the class's real training images, that the pretrained
#: classifier labels as the class).
GAN_TAG_FIELDS = ("address", "source", "generated_as_class", "real_as_class")


def gan_tag(class_index: int, field: str) -> str:
    """The tag (after ``TAG``) of ``field`` (one of :data:`GAN_TAG_FIELDS`) of class ``class_index``'s GAN."""
    if field not in GAN_TAG_FIELDS:
        raise ValueError(f"unknown GAN tag field {field!r}; known: {', '.join(GAN_TAG_FIELDS)}")
    return f"gan.class_{class_index}.{field}"


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

#: ``focustune.kind`` of a ``focustune train --log-model`` run.
KIND_TRAIN = "train"
#: Artifacts of a study run (and of a logged ``train`` run): the chosen configuration, as ``train
#: --config`` reads it, and the selected model (an MLflow model).
CONFIG_ARTIFACT, MODEL_ARTIFACT = "run_config.yaml", "model"
#: Artifact of a trial or re-run: its test confusion matrix, ``{"test": [[...], ...]}``.
CONFUSION_ARTIFACT = "confusion_matrix.json"
#: The registry alias of a registered model's best version, and the prefix of its versions' tags
#: ``focustune.val_<metric>`` (validation metrics, compared on the run's selection metric).
CHAMPION_ALIAS, VAL_TAG_PREFIX = "champion", "val_"

#: MLflow's experiment tag that picks the experiment page's view, and the value of its model-training
#: view (runs table first) rather than the GenAI overview.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND_TRAINING = "mlflow.experimentKind", "custom_model_development"

#: MLflow's dataset-input tag naming what a run used the dataset for.
DATASET_CONTEXT_TAG, DATASET_CONTEXT = "mlflow.data.context", "training"
#: Prefix of the per-epoch resource metrics of ``--system-metrics`` (MLflow's UI lists ``system/``
#: metrics under a run's "System metrics" tab); the names after it are the trial's own.
SYSTEM_PREFIX = "system/"
TRIAL_CPU_CORES = SYSTEM_PREFIX + "trial_cpu_cores"
TRIAL_CPU_PERCENT = SYSTEM_PREFIX + "trial_cpu_utilization_percentage"
TRIAL_MEMORY_MB = SYSTEM_PREFIX + "trial_memory_rss_megabytes"
GPU_MEMORY_MB = SYSTEM_PREFIX + "gpu_memory_peak_megabytes"
GPU_PERCENT = SYSTEM_PREFIX + "gpu_utilization_percentage"
#: Artifact folder of a study run's figures, and the file names of its figures and summary.
STUDY_FIGURES = "figures"
STUDY_FIGURE_FILES = {"curves": "validation_curves.png", "per_class": "per_class_recall.png",
                      "search": "search_best_so_far.png"}
STUDY_SUMMARY_FILE = "study.json"
#: The summary run's leaderboard, as an MLflow table (``log_table``) beside the report.
LEADERBOARD_TABLE = "leaderboard_table.json"


def study_key(dataset: str, method: str) -> str:
    """The name of a (dataset, method) study: MLflow tag ``focustune.study`` and Optuna study name."""
    return f"{dataset}/{method}"


def split_study_key(key: str) -> tuple[str, str]:
    """(dataset, method) of a study key; dataset names may contain '/', method names do not."""
    dataset, _, method = key.rpartition("/")
    return dataset, method


def source_tags(command: str) -> dict[str, str]:
    """MLflow's tags of a run's source (the runs table's Source column): ``focustune COMMAND``."""
    return {"mlflow.source.name": f"focustune {command}", "mlflow.source.type": "LOCAL"}


def default_tracking_uri() -> str:
    """The default store: ``sqlite:///<working folder>/mlflow.db``."""
    return f"sqlite:///{Path.cwd() / DEFAULT_STORE_FILE}"


def ui_hint(uri: str) -> str:
    """How to see ``uri`` in MLflow's UI: ``focustune ui`` (with its URI unless it is the default
    store), or the server's own address."""
    if urlparse(uri).scheme in ("http", "https"):
        return f"open {uri} in a browser"
    return "focustune ui" if uri == default_tracking_uri() else f"focustune ui --tracking-uri {uri}"
