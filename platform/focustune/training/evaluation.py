"""Judging a model: class probabilities, a split's metrics, and the choice of the best epoch."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch

from focustune.data import Split
from focustune.errors import TrainingDiverged
from focustune.metric_table import Metric, metric_row
from focustune.metrics import classification_metrics
from focustune.tracking_schema import STAGES
from focustune.training.checkpoints import to_device
from focustune.transforms import normalise

#: (selection metric, its tie-breaker) of an epoch's validation metrics, each times its row's ``sign``:
#: higher is better.
Score = tuple[float, float]
Weights = dict[str, torch.Tensor]
#: The two stages of a phased method's run: epochs before its mechanism first acted, and after.
BEFORE_MECHANISM, AFTER_MECHANISM = STAGES


@dataclass(frozen=True)
class EpochEvaluation:
    """One epoch's weights evaluated: the (1-based) epoch, its phase, its val and test metrics."""

    best_epoch: int
    best_phase: str
    val: dict[str, Any]
    test: dict[str, Any]


@dataclass
class RunResult:
    """The outcome of a run, in the shape ``focustune train --output-json`` writes."""

    method: str
    dataset: str
    seed: int
    epochs: int
    seconds: float
    params: dict[str, Any]
    val: dict[str, Any]
    test: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = -1
    #: The phase of the best (selected) epoch, e.g. ``finetune`` for mdgan.
    best_phase: str = ""
    #: What the run trained on: ``imbalance`` profile, ``train_class_counts`` (training split, after the
    #: profile), ``probe_class_counts`` (held out of those as the probe split; None without one).
    data: dict[str, Any] = field(default_factory=dict)
    status: str = "finished"
    #: Phased methods only (a phase before the mechanism acts): per stage (``before_mechanism``,
    #: ``after_mechanism``) the best epoch within that stage, its phase and its val and test metrics.
    stages: dict[str, EpochEvaluation] = field(default_factory=dict)
    #: Temperature scaling of the best epoch: ``calibration.json``
    #: (:func:`focustune.calibration.calibration_record`; fitted on validation, measured on test).
    calibration: dict[str, Any] = field(default_factory=dict)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, chunks: Iterable[torch.Tensor],
                   autocast: Callable[[], AbstractContextManager]) -> torch.Tensor:
    """float32 logits of ``model`` (in eval mode meanwhile) for uint8 image ``chunks`` on its device."""
    was_training = model.training
    model.eval()
    out = []
    for chunk in chunks:
        with autocast():
            out.append(model(normalise(chunk)).float())
    model.train(was_training)
    return torch.cat(out)


def finite(probs: torch.Tensor, epoch: int) -> torch.Tensor:
    """``probs``, refused (TrainingDiverged) when any is NaN/inf after (0-based) ``epoch``."""
    if not bool(torch.isfinite(probs).all()):
        raise TrainingDiverged(f"the model's outputs became NaN/inf after epoch {epoch + 1}; "
                               "the run is stopped (last good checkpoint kept)")
    return probs


def split_metrics(split: Split, probs: torch.Tensor) -> dict[str, Any]:
    """Classification metrics of ``probs`` against ``split``'s labels."""
    return classification_metrics(split.labels.cpu().numpy(), probs.cpu().numpy())


def selection_score(val: dict[str, Any], metric: Metric) -> Score:
    """(selection metric, tie-breaker) of validation metrics ``val``, each oriented by its row's
    direction: ties, common with few validation samples, go to the row's ``tie_breaker``."""
    return _oriented(val, metric), _oriented(val, metric_row(metric.tie_breaker))


def _oriented(val: dict[str, Any], metric: Metric) -> float:
    """``metric``'s value in ``val`` times its sign (higher is better); NaN ranks lowest."""
    value = val[metric.name]
    return -math.inf if math.isnan(value) else metric.sign * value


class BestEpochs:
    """The best epoch on validation so far (its score and weights) and, for a phased method (its
    mechanism first acts after epoch ``mechanism_epoch`` > 1), the best epoch of each stage."""

    def __init__(self, selection_metric: Metric, mechanism_epoch: int):
        self.selection_metric, self.mechanism_epoch = selection_metric, mechanism_epoch
        self.score: Score = (-math.inf, -math.inf)
        self.epoch = -1  # 0-based; -1 before any epoch
        self.state: Weights | None = None
        #: stage -> (score, epoch, weights) of the best epoch within that stage.
        self.stages: dict[str, tuple[Score, int, Weights]] = {}

    def update(self, epoch: int, val: dict[str, Any], weights: Callable[[], Weights]) -> bool:
        """Judge (0-based) ``epoch`` by its validation metrics ``val``, keeping ``weights()`` of a
        best; returns whether it is the best so far."""
        score = selection_score(val, self.selection_metric)
        if score > self.score:
            self.score, self.epoch = score, epoch
            self.state = weights()
        self._update_stage(epoch, score, weights)
        return epoch == self.epoch

    def _update_stage(self, epoch: int, score: Score, weights: Callable[[], Weights]) -> None:
        """Keep the best epoch before and the best after the mechanism acted (sharing the overall
        best's weights when they are the same epoch)."""
        if self.mechanism_epoch <= 1:
            return
        stage = AFTER_MECHANISM if epoch + 1 >= self.mechanism_epoch else BEFORE_MECHANISM
        if stage not in self.stages or score > self.stages[stage][0]:
            state = self.state if epoch == self.epoch and self.state is not None else weights()
            self.stages[stage] = (score, epoch, state)

    def evaluated(self, evaluate: Callable[[Weights | None, int], EpochEvaluation]
                  ) -> tuple[EpochEvaluation, dict[str, EpochEvaluation]]:
        """(the best epoch's evaluation, stage -> its best epoch's) by ``evaluate(weights, epoch)``; the
        overall best is evaluated last (a stage whose best it is shares its evaluation)."""
        others = {stage: evaluate(state, epoch) for stage, (_, epoch, state) in self.stages.items()
                  if epoch != self.epoch}
        best = evaluate(self.state, self.epoch)
        return best, {stage: others.get(stage, best) for stage in sorted(self.stages)}

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint entries ``best`` and ``stage_best``."""
        return {"best": {"score": self.score, "epoch": self.epoch, "state": self.state},
                "stage_best": {stage: {"score": score, "epoch": epoch, "state": state}
                               for stage, (score, epoch, state) in self.stages.items()}}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        """Restore :meth:`state_dict`'s entries (within a checkpoint's ``state``), weights onto ``device``."""
        best = state["best"]
        self.score, self.epoch = tuple(best["score"]), best["epoch"]
        self.state = to_device(best["state"], device)
        self.stages = {stage: (tuple(b["score"]), b["epoch"], to_device(b["state"], device))
                       for stage, b in state.get("stage_best", {}).items()}
