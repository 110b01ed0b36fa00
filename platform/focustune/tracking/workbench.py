"""What the MLflow UI shows of a sweep besides its runs, so the UI works as a comparison workbench:
the experiment opens in MLflow's model-training view, every run names its dataset as an MLflow
dataset input (the runs table's Dataset column and filters), and every study run gets a description
(best configuration, seed re-runs' test metrics, trial counts), its summary and figures drawn by
``focustune_analysis`` (the same figures as ``focustune compare``'s report).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import statistics
from pathlib import Path
from typing import Any

from focustune.data import ImageDataset
from focustune.records import StudyRecord
from focustune.data.dataset import SPLITS
from focustune.tracking_schema import (DATASET_CONTEXT, DATASET_CONTEXT_TAG, DEFAULT_SELECTION_METRIC,
                                       EXPERIMENT_KIND_TAG, EXPERIMENT_KIND_TRAINING, METRIC_NAMES, NOTE_TAG,
                                       STUDY_FIGURE_FILES, STUDY_FIGURES, STUDY_SUMMARY_FILE, split_study_key)

log = logging.getLogger(__name__)

DIGEST_IMAGES = 10_000  # images per split read for the digest (MLflow's own datasets hash at most 10,000 rows)
#: Test metrics of a study description: the default selection metric first, then the others.
REPORTED = (DEFAULT_SELECTION_METRIC, *(m for m in METRIC_NAMES if m != DEFAULT_SELECTION_METRIC))


# ---------------------------------------------------------------- the experiment

def mark_training_experiment(client: Any, experiment_id: str) -> None:
    """Open the experiment in MLflow's model-training view (its runs table), not the GenAI overview."""
    client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND_TRAINING)


def describe_experiment(client: Any, experiment_id: str, datasets: list[str], methods: list[str]) -> None:
    """The experiment's description (shown above its runs): what the sweep compared and how it is laid out."""
    client.set_experiment_tag(experiment_id, NOTE_TAG, (
        f"focustune sweep of {', '.join(methods)} on {', '.join(datasets)}. One parent run per (dataset, method) "
        "study, with its description, dataset and figures; expand it for its search trials and seed re-runs. "
        "`focustune compare` adds the comparison report as the `summary` run."))


# ---------------------------------------------------------------- datasets

def dataset_digest(dataset: ImageDataset) -> str:
    """8 hex digits identifying the data: shapes and labels of every split, and up to
    ``DIGEST_IMAGES`` images per split."""
    digest = hashlib.sha256()
    for name in SPLITS:
        part = dataset.split(name)
        digest.update(f"{name}{tuple(part.images.shape)}".encode())
        digest.update(part.labels.cpu().numpy().tobytes())
        digest.update(part.images[:DIGEST_IMAGES].cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:8]


def dataset_record(label: str, dataset: ImageDataset) -> dict[str, str]:
    """The dataset as MLflow describes a dataset input (plain strings, so it pickles with Tune's
    state): its study label, digest, source and a profile of split sizes and class counts."""
    path = Path(dataset.source)
    local = bool(dataset.source) and path.exists()
    source = {"uri": str(path.resolve())} if local else {"description": dataset.source or dataset.name}
    profile = {"name": dataset.name, "task": dataset.task, "classes": dataset.class_names,
               "image": [dataset.channels, dataset.image_size, dataset.image_size], "imbalance": dataset.imbalance,
               "sizes": {s: len(dataset.split(s)) for s in SPLITS},
               "class_counts": {s: dataset.split(s).class_counts(dataset.num_classes).tolist() for s in SPLITS}}
    return {"name": label, "digest": dataset_digest(dataset), "source_type": "local" if local else "external",
            "source": json.dumps(source), "profile": json.dumps(profile)}


def dataset_input(record: dict[str, str]) -> Any:
    """An MLflow ``DatasetInput`` of a :func:`dataset_record`."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    return DatasetInput(Dataset(**record), tags=[InputTag(DATASET_CONTEXT_TAG, DATASET_CONTEXT)])


# ---------------------------------------------------------------- a study run's description

def _mean_se(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values) / math.sqrt(len(values)):.3f}"


def _short(value: Any) -> Any:
    """A float to 4 significant digits (the description is for reading; ``study.json`` keeps every digit)."""
    return f"{value:.4g}" if isinstance(value, float) else value


def study_description(key: str, study: StudyRecord, fixed: dict[str, Any], selection_metric: str) -> str:
    """Markdown for the study run: trial counts, best configuration, the seed re-runs' test metrics."""
    dataset, method = split_study_key(key)
    lines = [f"**{method}** on **{dataset}**: {study.finished} of {study.total} search trials "
             f"finished their budget, {study.stopped_early} stopped early, {study.failed} failed."]
    config = study.best_config
    if not config:
        lines.append("No search trial finished its full budget, so there is no best configuration and no re-runs.")
        return "\n\n".join(lines)
    tuned = {k: v for k, v in config.items() if k not in fixed and k != "epochs"}
    lines.append(f"Best configuration (by validation {selection_metric}, "
                 f"{math.nan if study.best_objective is None else study.best_objective:.4f}; never test): "
                 + (", ".join(f"`{k}={_short(v)}`" for k, v in tuned.items()) or "the defaults") + ".")
    reruns = [r.scores for r in study.completed_reruns]
    if reruns:
        cells = [f"{name} {_mean_se(values)}" for name in REPORTED
                 if (values := [float(v) for r in reruns if (v := r.get(f"test_{name}")) is not None])]
        lines.append(f"Seed re-runs of that configuration (n={len(reruns)} of {len(study.reruns)}), "
                     "test mean ± SE: " + "; ".join(cells) + ".")
    else:
        lines.append("No finished seed re-runs.")
    lines.append(f"Figures under `{STUDY_FIGURES}/`; the study's summary in `{STUDY_SUMMARY_FILE}`.")
    return "\n\n".join(lines)


# ---------------------------------------------------------------- a study run's figures

def study_figures(collection: Any, dataset: str, method: str, selection_metric: str) -> dict[str, Any]:
    """The figures of one study (artifact file -> matplotlib figure), drawn by ``focustune_analysis``
    from the experiment's runs: validation curves of the seed re-runs, per-class test recall, the
    search's best-so-far. A figure without data is left out."""
    from focustune_analysis import plots
    from focustune_analysis.convergence import mean_curves
    from focustune_analysis.results import per_class_recall
    from focustune_analysis.search import search_progress

    palette = plots.Palette(sorted(collection.runs["method"].dropna().unique()))
    own = lambda frame: frame[frame["method"] == method]  # noqa: E731
    series = f"val_{selection_metric}"
    drawn = {"curves": plots.convergence_figure(own(mean_curves(collection, series)),
                                                own(mean_curves(collection, "train_loss")), dataset, series, palette),
             "per_class": plots.per_class_figure(own(per_class_recall(collection)), dataset, palette),
             "search": plots.search_figure(own(search_progress(collection)), dataset, palette)}
    return {f"{STUDY_FIGURES}/{STUDY_FIGURE_FILES[name]}": fig for name, fig in drawn.items() if fig is not None}


def log_study_views(client: Any, experiment: str, tracking_uri: str, parents: dict[str, str],
                    studies: dict[str, StudyRecord], fixed: dict[str, Any]) -> None:
    """Each study run's description, ``study.json`` and figures (read back from the experiment)."""
    from focustune_analysis.collect import HISTORY_METRICS, collect_runs

    selection_metric = str(fixed.get("selection_metric", DEFAULT_SELECTION_METRIC))
    for key, parent in parents.items():
        client.set_tag(parent, NOTE_TAG, study_description(key, studies[key], fixed, selection_metric))
        client.log_dict(parent, studies[key].to_json(), STUDY_SUMMARY_FILE)
    history = tuple(dict.fromkeys((*HISTORY_METRICS, f"val_{selection_metric}")))
    collection = collect_runs(experiment, tracking_uri, history_metrics=history)
    for key, parent in parents.items():
        for name, fig in study_figures(collection, *split_study_key(key), selection_metric).items():
            client.log_figure(parent, fig, name)
