"""The Ray Tune trainable: the shared trainer for any method, reporting and checkpointing every epoch."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import tempfile
import time
import warnings
from dataclasses import fields, replace
from typing import Any

import numpy as np
import torch

from focustune.data import ImageDataset, Split
from focustune.data.dataset import SPLITS
from focustune.errors import TrainingDiverged
from focustune.records import BEST_EPOCH, TrialReport
from focustune.shared_store import SharedStore
from focustune.tracking_schema import (CALIBRATION_ARTIFACT, GPU_MEMORY_MB, GPU_PERCENT, RELIABILITY_ARTIFACT,
                                      TRIAL_CPU_CORES, TRIAL_CPU_PERCENT, TRIAL_MEMORY_MB, calibration_metrics,
                                      tracked_metrics, train_count_metrics)
from focustune.training import Trainer

from focustune.sweeps.trial_config import resolve_trial


def dataset_to_arrays(dataset: ImageDataset) -> dict[str, Any]:
    """What goes into Ray's object store once per sweep: every field of the dataset as it is, its
    splits as numpy arrays (which workers read zero-copy)."""
    stored = {f.name: getattr(dataset, f.name) for f in fields(dataset)}
    stored.update({s: (stored[s].images.numpy(), stored[s].labels.numpy()) for s in SPLITS})
    return stored


def dataset_from_arrays(stored: dict[str, Any]) -> ImageDataset:
    """The dataset again, its tensors sharing the object store's read-only memory (the trainer never
    writes them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "The given NumPy array is not writable"
        splits = {s: Split(*(torch.from_numpy(a) for a in stored[s])) for s in SPLITS}
    return ImageDataset(**{**stored, **splits})


def epoch_report(trainer: Trainer, record: dict[str, Any], **attempt: Any) -> TrialReport:
    """What a trial reports after an epoch: progress, objective, phase, flat scalars, the method's
    diagnostics; ``attempt``: the node, start epoch and busy times of this trial attempt."""
    best = trainer.best_score[0]
    scalars = {"train_loss": record["train_loss"], "samples_per_s": record["samples_per_s"],
               "epoch_seconds": record["seconds"], "lr": record["lr"],
               **tracked_metrics("val", record["val"], trainer.dataset.class_names)}
    return TrialReport(epoch=record["epoch"], total_epochs=trainer.total_epochs, phase=record["phase"],
                       objective=best if math.isfinite(best) else 0.0, mechanism_epoch=trainer.mechanism_epoch,
                       precision=trainer.precision, diagnostics=record.get("method") or None, scalars=scalars,
                       **attempt)


def with_final(report: TrialReport, trainer: Trainer) -> TrialReport:
    """``report`` of the last epoch plus the best epoch's validation and test scores (per stage for
    phased methods), its temperature scaling (calibrated test scores, ``calibration.json`` and the
    reliability diagram), the test confusion matrix and the method's images."""
    from focustune.calibration import reliability_png

    result = trainer.result()
    names = trainer.dataset.class_names
    scalars = {**report.scalars, **tracked_metrics("best_val", result.val, names),
               **tracked_metrics("test", result.test, names), **calibration_metrics(result.calibration)}
    for stage, best in result.stages.items():  # phased methods: the best epoch before / after the mechanism acted
        scalars.update({f"{stage}_{BEST_EPOCH}": best.best_epoch,
                        **tracked_metrics(f"{stage}_best_val", best.val, names),
                        **tracked_metrics(f"{stage}_test", best.test, names)})
    scalars.update(train_count_metrics(result.data["train_class_counts"], names))  # for compare's per-class audit
    artifacts = {path: png_base64(image) for path, image in trainer.method.images().items()}
    artifacts[CALIBRATION_ARTIFACT] = json.dumps(result.calibration)
    artifacts[RELIABILITY_ARTIFACT] = base64.b64encode(reliability_png(result.calibration)).decode("ascii")
    return replace(report, full_budget=True, best_epoch=result.best_epoch, best_phase=result.best_phase,
                   train_seconds=result.seconds, test_confusion_matrix=result.test["confusion_matrix"],
                   artifacts=artifacts, scalars=scalars,
                   method_tags=trainer.method.tags() or None)


def png_base64(grid: torch.Tensor) -> str:
    """uint8 [C, H, W] image -> base64 PNG (small enough to travel inside a result)."""
    from PIL import Image

    array = grid.cpu().numpy()
    image = Image.fromarray(array[0] if array.shape[0] == 1 else np.transpose(array, (1, 2, 0)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class ResourceUse:
    """What a trial used since the previous sample (``--system-metrics``): its process's CPU time per
    wall-clock second (cores, and % of the trial's CPUs), resident memory, and on CUDA the peak GPU
    memory and the GPU's utilisation at the sample (the latter where NVML's Python module is installed)."""

    def __init__(self, cpus: float, cuda: bool):
        self.cpus, self.cuda = cpus, cuda
        self._wall, self._cpu = time.monotonic(), time.process_time()

    def sample(self) -> dict[str, float]:
        wall, cpu = time.monotonic(), time.process_time()
        cores = (cpu - self._cpu) / max(wall - self._wall, 1e-9)
        self._wall, self._cpu = wall, cpu
        out = {TRIAL_CPU_CORES: cores, TRIAL_CPU_PERCENT: 100.0 * cores / self.cpus}
        statm = "/proc/self/statm"
        if os.path.exists(statm):  # Linux; elsewhere no memory figure
            with open(statm) as f:
                out[TRIAL_MEMORY_MB] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        if self.cuda:
            out[GPU_MEMORY_MB] = torch.cuda.max_memory_allocated() / 2**20
            torch.cuda.reset_peak_memory_stats()
            try:
                out[GPU_PERCENT] = float(torch.cuda.utilization())
            except ModuleNotFoundError:  # torch reads utilisation through pynvml, an optional package
                pass
        return out


def prepare_process(cpus: float, device: str | None) -> None:
    """A trial process's torch threads (its CPUs) and, for trials sharing a GPU, its share of the GPU's memory."""
    import ray

    torch.set_num_threads(max(1, int(cpus)))
    gpu_share = ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0)
    if device == "cuda" and 0 < gpu_share < 1:  # trials sharing a GPU each keep to their share of its memory
        torch.cuda.set_per_process_memory_fraction(gpu_share)


def trial_dataset(dataset: str, dataset_refs: dict[str, Any]) -> ImageDataset:
    """The study's dataset from the sweep's object refs (only this one is read)."""
    import ray

    ref = dataset_refs[dataset]
    return dataset_from_arrays(ray.get(ref) if isinstance(ref, ray.ObjectRef) else ref)


def trial_report(trainer: Trainer, record: dict[str, Any], extra: dict[str, float] | None = None,
                 **attempt: Any) -> TrialReport:
    """The report of ``record``'s epoch (:func:`epoch_report`) with ``extra`` scalars, and on the last
    epoch the final scores (:func:`with_final`)."""
    sent = epoch_report(trainer, record, **attempt)
    if extra:
        sent = replace(sent, scalars={**sent.scalars, **extra})
    if trainer.finished:  # the best epoch's test scores: still the trial's work
        sent = with_final(sent, trainer)
    return sent


def diverged_report(trainer: Trainer, error: TrainingDiverged, **attempt: Any) -> TrialReport:
    """The last report of a configuration whose loss diverged (a property of it: never retried)."""
    return TrialReport(epoch=trainer.epoch, total_epochs=trainer.total_epochs, objective=0.0, diverged=True,
                       failed_reason=str(error), **attempt)


def run_trial(config: dict[str, Any], *, dataset_refs: dict[str, Any], cpus: float = 1.0,
              device: str | None = None, system_metrics: bool = False, gan_store: str | None = None) -> None:
    """Train one configuration of its study (dataset and method from ``config[STUDY_KEY]``); report
    every epoch with a checkpoint (and with ``system_metrics`` its :class:`ResourceUse`); resume from
    Tune's checkpoint. Only this study's dataset is read. ``gan_store``: the sweep's GAN store (a folder
    or URI), where every trial finds the GANs another trial trained."""
    import ray
    from ray import tune

    began = time.time()
    prepare_process(cpus, device)
    trial = resolve_trial(config)
    dataset = trial_dataset(trial.dataset, dataset_refs)
    node_id = ray.get_runtime_context().get_node_id()
    started_at = {"epoch": 0}  # > 0 when this attempt resumed from a checkpoint
    usage = ResourceUse(cpus, device == "cuda") if system_metrics else None

    def report(trainer: Trainer, record: dict[str, Any]) -> None:
        sent = trial_report(trainer, record, usage.sample() if usage else None, node_id=node_id,
                            start_epoch=started_at["epoch"], busy_since=began, busy_until=math.nan)
        with tempfile.TemporaryDirectory() as folder:
            trainer.save_checkpoint(folder)
            sent = replace(sent, busy_until=time.time())
            tune.report(sent.to_result(), checkpoint=tune.Checkpoint.from_directory(folder))

    store = SharedStore(gan_store, log=print) if gan_store else None
    trainer = Trainer(trial.build_method(), trial.train_config, dataset, seed=trial.seed, device=device,
                      callback=report, gan_store=store)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            trainer.load_checkpoint(folder)
        started_at["epoch"] = trainer.epoch
    try:
        trainer.fit()
    except TrainingDiverged as exc:  # a property of the configuration: retrying would diverge again
        tune.report(diverged_report(trainer, exc, node_id=node_id, busy_since=began,
                                    busy_until=time.time()).to_result())
