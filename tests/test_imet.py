"""IMET: sample composition, iteration schedule, measurement split, resets and resume."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import make_dataset, without_timings
from focustune import params
from focustune.config import TrainConfig, resolve
from focustune.data import Split
from focustune.errors import ConfigError
from focustune.methods import EpochStats, RunContext, get_method
from focustune.methods.imet import (IMET, allocate, class_error_rates, equal_class_subsample, iteration_epochs,
                                    sample_composition)
from focustune.spaces import load_space
from focustune.training import Trainer

TRAIN_COUNTS = [60, 30, 10]
VAL_ERRORS = [2, 6, 12]  # of 20 per class: error rates 0.1, 0.3, 0.6


# ---------------------------------------------------------------- a run context with known errors

def labelled_split(counts: list[int], wrong: list[int]) -> Split:
    """Images whose first pixel is the class a fake model predicts: ``wrong[c]`` of class c are missed."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    predicted = labels.clone()
    for c, misses in enumerate(wrong):
        predicted[torch.nonzero(labels == c)[:misses, 0]] = (c + 1) % len(counts)
    images = torch.zeros(len(labels), 1, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 0] = predicted.to(torch.uint8)
    return Split(images, labels)


def fake_run(val_errors: list[int] = VAL_ERRORS, train_errors: list[int] = (0, 0, 0),
             probe_errors: list[int] = (0, 0, 0), **config: object) -> tuple[RunContext, list[int]]:
    """A run whose 'model' predicts the class stored in each image; counts its predict calls."""
    calls = []

    def predict(images: torch.Tensor) -> torch.Tensor:
        calls.append(len(images))
        return F.one_hot(images[:, 0, 0, 0].long(), len(TRAIN_COUNTS)).float()

    run = RunContext(config=params.build(TrainConfig, {"epochs": 4, "batch_size": 16, **config}),
                     num_classes=len(TRAIN_COUNTS), device=torch.device("cpu"),
                     generator=torch.Generator().manual_seed(0), seed=0,
                     train=labelled_split(TRAIN_COUNTS, list(train_errors)),
                     val=labelled_split([20] * len(TRAIN_COUNTS), list(val_errors)),
                     probe=labelled_split([10] * len(TRAIN_COUNTS), list(probe_errors)),
                     model=None, predict=predict)
    return run, calls


def started(run: RunContext, **overrides: object) -> tuple[IMET, list]:
    """IMET set up on ``run`` with iteration 0 started."""
    method = IMET(params.build(IMET.Params, {"iterations": 2, **overrides}))
    method.setup(run)
    phases = method.phases(run.config)
    method.start_phase(phases[0], 0, run)
    return method, phases


def finish_epoch(method: IMET, epoch: int, run: RunContext) -> dict:
    k = run.num_classes
    run.val_probs = None  # as the trainer does: the model changed during the epoch
    return method.end_epoch(EpochStats(epoch, "", torch.zeros(k), torch.zeros(k)), run)


def next_iteration(method: IMET, phases: list, run: RunContext) -> dict:
    """Finish iteration 0 (its last epoch measures the errors) and start iteration 1."""
    finish_epoch(method, phases[0].epochs - 1, run)
    method.start_phase(phases[1], 1, run)
    return finish_epoch(method, phases[0].epochs, run)


def sample_class_counts(method: IMET, run: RunContext) -> list[int]:
    return torch.bincount(run.train.labels[method.sample], minlength=run.num_classes).tolist()


# ---------------------------------------------------------------- allocation and composition

@pytest.mark.parametrize("total,weights", [(50, [1, 1, 1]), (50, [0.1, 0.3, 0.6]), (7, [0, 2, 5, 1]),
                                           (0, [1, 1]), (101, [0.0, 1e-9, 1.0])])
def test_allocate_is_proportional_and_exact(total, weights):
    counts = allocate(total, weights)
    assert sum(counts) == total
    for count, weight in zip(counts, weights):
        assert abs(count - total * weight / sum(weights)) < 1
        assert weight > 0 or count == 0


def test_later_iteration_is_half_equal_half_by_error_rate():
    run, _ = fake_run()
    method, phases = started(run)
    logged = next_iteration(method, phases, run)
    rates = [e / 20 for e in VAL_ERRORS]
    assert logged["error_rates"] == pytest.approx(rates)
    assert sum(logged["equal_counts"]) == sum(logged["error_counts"]) == 50
    assert max(logged["equal_counts"]) - min(logged["equal_counts"]) <= 1
    assert logged["error_counts"] == [round(50 * r / sum(rates)) for r in rates]  # exact: 5, 15, 30
    composed = [e + r for e, r in zip(logged["equal_counts"], logged["error_counts"])]
    assert logged["sample_counts"] == composed == sample_class_counts(method, run)


@pytest.mark.parametrize("share", [0.0, 0.25, 1.0])
def test_error_share_sets_the_split(share):
    run, _ = fake_run()
    method, phases = started(run, error_share=share)
    logged = next_iteration(method, phases, run)
    assert sum(logged["error_counts"]) == round(share * sum(TRAIN_COUNTS))
    assert sum(logged["sample_counts"]) == sum(TRAIN_COUNTS)


def test_iteration_zero_is_equal_class():
    run, _ = fake_run()
    method, _ = started(run)
    logged = finish_epoch(method, 0, run)
    assert logged["iteration"] == 0 and logged["error_rates"] is None
    assert logged["error_counts"] == [0, 0, 0]
    counts = sample_class_counts(method, run)
    assert sum(counts) == sum(TRAIN_COUNTS) and max(counts) - min(counts) <= 1


def test_classes_without_training_samples_get_none():
    equal, error = sample_composition(10, 0.5, [0.5, 0.5, 0.0], available=[5, 0, 5])
    assert equal == [3, 0, 2] and error == [5, 0, 0]


def test_sample_size_is_a_fraction_of_the_training_set():
    run, _ = fake_run()
    method, _ = started(run, sample_size=0.5)
    assert len(method.sample) == sum(TRAIN_COUNTS) // 2


def test_sample_size_can_be_a_count_that_wins_over_the_share():
    run, _ = fake_run()
    method, _ = started(run, sample_size=0.5, sample_count=37)
    assert len(method.sample) == 37
    method, phases = started(run, sample_count=37)
    assert sum(next_iteration(method, phases, run)["sample_counts"]) == 37


def test_a_class_asked_for_more_than_it_has_gives_each_sample_once_before_repeating():
    run, _ = fake_run()
    method, _ = started(run, sample_count=150)  # iteration 0: 50 per class; class 2 has 10, class 1 has 30
    labels = run.train.labels[method.sample]
    for c, available in enumerate(TRAIN_COUNTS):
        drawn = method.sample[labels == c]
        assert len(drawn) == 50
        assert len(drawn.unique()) == min(50, available)  # every image of a small class is in the sample


def test_replacement_only_for_classes_smaller_than_requested():
    run, _ = fake_run()
    method, phases = started(run)
    next_iteration(method, phases, run)  # asks 22 of class 0 (60), 32 of class 1 (30), 46 of class 2 (10)
    labels = run.train.labels[method.sample]
    for c, available in enumerate(TRAIN_COUNTS):
        drawn = method.sample[labels == c]
        if len(drawn) <= available:
            assert len(drawn.unique()) == len(drawn)
        else:
            assert len(drawn.unique()) < len(drawn)


def test_errors_are_measured_on_validation_by_default():
    run, _ = fake_run(val_errors=VAL_ERRORS, train_errors=[0, 0, 10])
    method, phases = started(run)
    assert next_iteration(method, phases, run)["error_rates"] == pytest.approx([0.1, 0.3, 0.6])
    method, phases = started(run, error_split="train")
    assert next_iteration(method, phases, run)["error_rates"] == pytest.approx([0.0, 0.0, 1.0])


def test_errors_can_be_measured_on_the_probe_split_and_the_split_is_logged():
    run, _ = fake_run(val_errors=VAL_ERRORS, probe_errors=[5, 0, 0])
    method, phases = started(run, error_split="probe")
    logged = next_iteration(method, phases, run)
    assert method.uses_probe() and logged["error_split"] == "probe"
    assert logged["error_rates"] == pytest.approx([0.5, 0.0, 0.0])
    method, phases = started(run)
    assert not method.uses_probe() and next_iteration(method, phases, run)["error_split"] == "val"


def test_equal_class_subsample_takes_the_smallest_class_count_of_each_class():
    labels = torch.tensor([0] * 7 + [1] * 3 + [2] * 5 + [1])
    keep = equal_class_subsample(labels, 4, torch.Generator().manual_seed(0))
    assert torch.bincount(labels[keep], minlength=4).tolist() == [4, 4, 4, 0]  # class 3 is absent
    assert len(keep.unique()) == len(keep)


def test_balanced_error_sample_measures_on_an_equal_class_subsample(monkeypatch):
    counts, wrong = [40, 10, 20], [0, 5, 10]  # validation errors are all in the first images of a class
    run, _ = fake_run()
    run.val = labelled_split(counts, wrong)
    method, phases = started(run)
    rates = next_iteration(method, phases, run)["error_rates"]
    assert rates == pytest.approx([0.0, 0.5, 0.5])
    measured = []
    original = class_error_rates

    def recording(probs, labels, num_classes):
        measured.append(torch.bincount(labels, minlength=num_classes).tolist())
        return original(probs, labels, num_classes)

    monkeypatch.setattr("focustune.methods.imet.class_error_rates", recording)
    method, phases = started(run, error_sample="balanced")
    logged = next_iteration(method, phases, run)
    assert measured == [[10, 10, 10]] and logged["error_sample"] == "balanced"
    assert logged["error_rates"][1] == 0.5 and 0.0 <= logged["error_rates"][2] <= 1.0


def test_no_errors_fall_back_to_equal_class():
    run, _ = fake_run(val_errors=[0, 0, 0])
    method, phases = started(run)
    logged = next_iteration(method, phases, run)
    assert max(logged["error_counts"]) - min(logged["error_counts"]) <= 1


def test_test_split_is_not_an_option():
    with pytest.raises(ConfigError):
        resolve(IMET, {"error_split": "test"})


def test_errors_measured_once_per_iteration_unless_early_stopping():
    run, calls = fake_run(epochs=6)
    method, _phases = started(run, iterations=3)  # iterations of 2 epochs: measured after epochs 2 and 4
    for epoch in range(6):
        finish_epoch(method, epoch, run)
    assert len(calls) == 2
    run, calls = fake_run(epochs=6, patience=2)
    method, _phases = started(run, iterations=3)
    for epoch in range(6):
        finish_epoch(method, epoch, run)
    assert len(calls) == 5  # after every epoch but the last: an iteration may be cut short


def test_class_error_rates():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.3, 0.7]])
    assert class_error_rates(probs, torch.tensor([0, 0, 1, 1]), 3) == [0.5, 0.0, 0.0]


# ---------------------------------------------------------------- phases

@pytest.mark.parametrize("epochs,iterations", [(20, 4), (20, 3), (7, 7), (3, 5), (10, 1), (11, 4)])
def test_phases_divide_the_epoch_budget(epochs, iterations):
    plan = iteration_epochs(epochs, iterations)
    assert sum(plan) == epochs and len(plan) == min(epochs, iterations)
    assert plan == sorted(plan) and plan[-1] - plan[0] <= 1  # the remainder goes to the last iterations
    config, method_params = resolve(IMET, {"epochs": epochs, "iterations": iterations})
    phases = IMET(method_params).phases(config)
    assert [p.epochs for p in phases] == plan


@pytest.mark.parametrize("warm_start", [True, False])
def test_reset_flags_follow_warm_start(warm_start):
    config, method_params = resolve(IMET, {"epochs": 6, "iterations": 3, "warm_start": warm_start})
    resets = [p.reset_model for p in IMET(method_params).phases(config)]
    assert resets == [False, not warm_start, not warm_start]


# ---------------------------------------------------------------- with the trainer

def trainer(dataset, checkpoint_dir=None, callback=None, **overrides) -> Trainer:
    settings = {"epochs": 4, "iterations": 2, "batch_size": 16, "lr": 1e-3, **overrides}
    config, method_params = resolve(get_method("imet"), settings)
    return Trainer(get_method("imet")(method_params), config, dataset, seed=0, device="cpu",
                   checkpoint_dir=checkpoint_dir, callback=callback)


@pytest.fixture(scope="module")
def dataset():
    return make_dataset()


def test_trains_end_to_end_on_an_imbalanced_set(dataset):
    result = trainer(dataset, epochs=6, iterations=3).fit()
    assert [r["phase"] for r in result.history] == [f"iteration_{i}" for i in (0, 0, 1, 1, 2, 2)]
    assert [r["method"]["iteration"] for r in result.history] == [0, 0, 1, 1, 2, 2]
    first = result.history[0]["method"]["sample_counts"]
    assert max(first) - min(first) <= 1  # equal-class from an imbalanced (40/12/6) training set
    for record in result.history:
        assert round(record["samples_per_s"] * record["seconds"]) == len(dataset.train)
    assert result.val["balanced_acc"] > 0.6


@pytest.mark.parametrize("warm_start", [True, False])
def test_iterations_continue_or_reinitialise_the_model(dataset, warm_start):
    ends, measured = {}, {}

    def at_epoch_end(t: Trainer, record: dict) -> None:
        ends[record["epoch"]] = {k: v.clone() for k, v in t.model.state_dict().items()}
        probs = t.predict_probs(t.data.val.images)
        measured[record["epoch"]] = class_error_rates(probs, t.data.val.labels, t.dataset.num_classes)

    run = trainer(dataset, epochs=2, iterations=2, warm_start=warm_start, callback=at_epoch_end)
    starts = []
    start_phase = run.method.start_phase

    def recording_start(phase, index, ctx):
        starts.append({k: v.clone() for k, v in ctx.model.state_dict().items()})
        start_phase(phase, index, ctx)

    run.method.start_phase = recording_start
    result = run.fit()
    same = all(torch.equal(starts[1][k], ends[1][k]) for k in ends[1])
    assert same == warm_start
    # errors that drive iteration 1 come from the model trained in iteration 0, even when re-initialised
    assert result.history[1]["method"]["error_rates"] == measured[1]


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def uninterrupted(dataset):
    """Uninterrupted 4-epoch, 2-iteration runs, by warm_start (computed once)."""
    runs = {}

    def get(warm_start: bool):
        if warm_start not in runs:
            runs[warm_start] = trainer(dataset, warm_start=warm_start).fit()
        return runs[warm_start]
    return get


@pytest.mark.parametrize("warm_start", [True, False])
@pytest.mark.parametrize("stop_after", [2, 3], ids=["iteration-boundary", "mid-iteration"])
def test_resume_continues_identically(dataset, uninterrupted, tmp_path, warm_start, stop_after):
    full = uninterrupted(warm_start)

    def interrupt(t: Trainer, record: dict) -> None:
        if record["epoch"] == stop_after:
            raise Interrupt

    with pytest.raises(Interrupt):
        trainer(dataset, tmp_path, interrupt, warm_start=warm_start).fit()
    resumed = trainer(dataset, tmp_path, warm_start=warm_start)
    assert resumed.load_checkpoint(tmp_path) and resumed.epoch == stop_after
    result = resumed.fit()
    assert without_timings(result.history) == without_timings(full.history)
    assert result.test == full.test


def test_search_space_loads():
    space = load_space(IMET)
    assert {"iterations", "error_share", "sample_size", "warm_start"} <= set(space.dimensions)


def test_help_names_the_papers_settings():
    rows = {row["name"]: row["help"] for row in params.describe(IMET.Params)}
    assert "2800" in rows["sample_count"] and "paper" in rows["sample_count"]
    assert "balanced" in rows["error_sample"] and "paper" in rows["error_sample"]
    assert "model=imet_cnn head=sigmoid" in IMET.summary
