"""Names shared by two layers, defined once: what a run records in MLflow (the sweep layer and
``train --log-model`` write them, ``focustune_analysis`` reads them), the metric names, the default
tracking store and how to open a store in the UI. Plain constants and functions, so importing this
needs no MLflow."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from focustune.errors import ConfigError

# The metric names, derived from the table of metrics (``metric_table``): the scalar metrics in
# report order, a ``train --output-json`` record's metrics, the default selection metric.
from focustune.metric_table import (CALIBRATED_SUFFIX, CALIBRATION_METRICS, DEFAULT_SELECTION_METRIC,  # noqa: F401
                                    METRIC_NAMES, METRICS, RECORD_METRICS)

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
#: A run's training split per class (images, after a probe split was held out), one metric per class
#: ``train_count/<class name>`` (:func:`train_count_metrics`): the class frequencies of ``compare``'s audit.
TRAIN_COUNT_PREFIX = "train_count/"
FINAL_PREFIXES = ("best_val_", "test_", *(f"{stage}_" for stage in STAGES), TRAIN_COUNT_PREFIX)
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
#: A study run with a selection rule (several objectives or ``--select``): its params ``objectives``
#: (comma-separated metrics), ``selection_rule`` and ``chosen_trial`` (the selected point's trial id),
#: and its Pareto front as artifacts: every point (JSON), the table (Markdown) and the figure.
OBJECTIVES_PARAM, SELECTION_RULE_PARAM, CHOSEN_TRIAL_PARAM = "objectives", "selection_rule", "chosen_trial"
STUDY_SELECTION_PARAMS = (OBJECTIVES_PARAM, SELECTION_RULE_PARAM, CHOSEN_TRIAL_PARAM)
PARETO_POINTS_FILE, PARETO_TABLE_FILE, PARETO_FIGURE_FILE = "pareto/points.json", "pareto/front.md", "pareto/front.png"
#: The summary run's leaderboard, as an MLflow table (``log_table``) beside the report.
LEADERBOARD_TABLE = "leaderboard_table.json"
#: The summary run's per-class audit against the baseline, as an MLflow table beside the report.
AUDIT_TABLE = "per_class_audit_table.json"

#: Artifacts of a training run (``train --log-model``, a trial, a seed re-run): temperature scaling on the
#: test split, ``{"bins": 15, "temperature": T, "before": {"ece", "brier", "nll", "confidence": [...],
#: "accuracy": [...], "count": [...]}, "after": {...}}`` (the temperature fitted on validation), and its
#: reliability diagram before and after.
CALIBRATION_ARTIFACT, RELIABILITY_ARTIFACT = "calibration.json", "reliability_diagram.png"
#: Metric of a training run: the temperature its logits are divided by (fitted on validation).
TEMPERATURE = "temperature"
#: Longest class name kept in a metric name (MLflow allows 250 characters for the whole name).
CLASS_NAME_LIMIT = 120


def class_metric_name(split: str, metric: str, class_name: str) -> str:
    """The MLflow name of a per-class metric of one class, e.g. ``test_recall/pneumonia`` (pass a name from
    :func:`tracked_class_names`)."""
    return f"{split}_{metric}/{class_name}"


def tracked_class_names(class_names: Sequence[Any]) -> list[str]:
    """Class names as they appear in MLflow metric names: each character MLflow (on every platform) refuses,
    and '/', becomes '_' (letters, digits, '_', '-', '.' and spaces stay), outer spaces dropped, at most
    :data:`CLASS_NAME_LIMIT` characters; an empty, '.' or '..' result becomes ``class_<i>``, and a
    name another class already took gets ``_<i>`` appended (``i``: the class index)."""
    out: list[str] = []
    for index, name in enumerate(class_names):
        clean = re.sub(r"[^\w.\- ]", "_", str(name)).strip()[:CLASS_NAME_LIMIT]
        if clean in ("", ".", ".."):
            clean = f"class_{index}"
        out.append(f"{clean}_{index}" if clean in out else clean)
    return out


def tracked_metrics(split: str, metrics: Mapping[str, Any], class_names: Sequence[Any]) -> dict[str, float]:
    """An evaluation's ``metrics`` as MLflow metrics of ``split`` (``val``, ``test``, ``best_val``,
    ``<stage>_test`` ...): each scalar as ``<split>_<name>``, each per-class value by index
    (``<split>_recall_class_<i>``, which ``focustune_analysis`` reads) and by class name
    (:func:`class_metric_name`)."""
    out: dict[str, float] = {}
    names = tracked_class_names(class_names)
    for row in METRICS:
        if row.name not in metrics:
            continue
        if not row.per_class:
            out[f"{split}_{row.name}"] = float(metrics[row.name])
            continue
        for index, value in enumerate(metrics[row.name]):
            out[f"{split}_{row.class_prefix}{index}"] = float(value)
            if row.class_metric and index < len(names):
                out[class_metric_name(split, row.class_metric, names[index])] = float(value)
    return out


def train_count_metrics(counts: Sequence[int], class_names: Sequence[Any]) -> dict[str, float]:
    """A run's training-class counts as MLflow metrics, ``train_count/<class name>`` (names as
    :func:`tracked_class_names` makes them, so they match the run's ``test_recall/<class name>``)."""
    return {f"{TRAIN_COUNT_PREFIX}{name}": float(n) for name, n in zip(tracked_class_names(class_names), counts)}


def calibration_metrics(calibration: Mapping[str, Any]) -> dict[str, float]:
    """The MLflow metrics of a ``calibration.json`` record: the temperature and the test calibration metrics
    after scaling (``test_ece_calibrated`` ...; the ones before are ``test_ece`` ...)."""
    if not calibration:
        return {}
    after = calibration["after"]
    return {TEMPERATURE: float(calibration["temperature"]),
            **{f"test_{name}{CALIBRATED_SUFFIX}": float(after[name]) for name in CALIBRATION_METRICS}}


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


def check_experiment_name(name: str, folder: bool) -> None:
    """Refuse an empty ``--experiment``; with ``folder`` (a sweep's experiment is also its folder under
    ``--storage``), also one that is not a single folder name inside the store (``..``, ``a/b``, an
    absolute path)."""
    if not name or not name.strip():
        raise ConfigError("--experiment: the name is empty; give one (default focustune)")
    if name != name.strip():
        raise ConfigError(f"--experiment {name!r}: remove the leading or trailing spaces")
    if folder and (name in (".", "..") or any(c in name for c in "/\\\0")):
        raise ConfigError(f"--experiment {name!r}: a sweep's experiment names its folder inside --storage, so it "
                          "must be one folder name (no '/', '\\' or '..')")
