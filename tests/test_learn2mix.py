"""Learn2Mix: batches follow the mixing proportions alpha, which move towards the class-wise losses."""

import math

import pytest
import torch

from conftest import make_dataset, without_timings
from focustune.config import resolve
from focustune.data import Split
from focustune.errors import ConfigError
from focustune.methods import EpochStats, get_method
from focustune.methods.learn2mix import batch_class_counts, class_counts, cyclic_draws, updated_loss_share
from focustune.training import Trainer


def build(dataset, **overrides):
    cls = get_method("learn2mix")
    config, params = resolve(cls, {"batch_size": 16, "lr": 3e-3, **overrides})
    method = cls(params)
    return method, Trainer(method, config, dataset, device="cpu")


def random_alphas(k, n, seed):
    """Rows on the simplex, from near-uniform to very peaked."""
    logits = torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (logits * torch.linspace(0.1, 6, n, dtype=torch.float64)[:, None]).softmax(1)


@pytest.mark.parametrize("batch_size", [7, 16, 64, 128])
def test_counts_sum_to_the_batch_and_round_alpha_within_one(batch_size):
    available = torch.ones(5, dtype=torch.bool)
    for alpha in random_alphas(5, 200, seed=batch_size):
        counts = batch_class_counts(alpha, batch_size, 0, available)
        assert counts.sum().item() == batch_size
        assert ((counts - alpha * batch_size).abs() < 1).all()
        if (alpha * batch_size >= 1).all():  # the minimum of one sample does not bind
            assert torch.equal(batch_class_counts(alpha, batch_size, 1, available), counts)


def test_minimum_per_class_is_kept_and_absent_classes_get_nothing():
    alpha = torch.tensor([0.97, 0.01, 0.01, 0.01], dtype=torch.float64)
    counts = batch_class_counts(alpha, 16, 2, torch.tensor([True, True, True, False]))
    assert counts.tolist() == [12, 2, 2, 0]
    with pytest.raises(ConfigError, match="min_per_class"):
        batch_class_counts(alpha, 16, 5, torch.ones(4, dtype=torch.bool))
    for alpha in random_alphas(5, 200, seed=1):
        counts = batch_class_counts(alpha, 16, 2, torch.ones(5, dtype=torch.bool))
        assert counts.sum().item() == 16 and (counts >= 2).all()
        by_alpha = counts[alpha.argsort()]
        assert (by_alpha.diff() >= 0).all()  # a larger share never gets fewer samples


def test_epoch_batches_follow_alpha():
    dataset = make_dataset((40, 12, 6))
    method, trainer = build(dataset)
    method.alpha = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    batches = method.epoch_batches(0, trainer.run.train, trainer.run)
    assert len(batches) == math.ceil(58 / 16)
    labels = trainer.run.train.labels
    for index in batches:
        counts = torch.bincount(labels[index], minlength=3)
        assert counts.sum().item() == 16
        assert ((counts.double() - method.alpha * 16).abs() <= 1).all()


def stats_with(class_loss, class_count):
    class_count = torch.tensor(class_count, dtype=torch.float32)
    return EpochStats(0, "train", torch.tensor(class_loss) * class_count, class_count)


def test_alpha_moves_towards_the_high_loss_class():
    method, trainer = build(make_dataset((40, 12, 6)), mixing_rate=0.5)
    before = method.alpha.clone()
    diagnostics = method.end_epoch(stats_with([0.1, 0.1, 0.8], [40, 12, 6]), trainer.run)
    loss_share = torch.tensor([0.1, 0.1, 0.8], dtype=torch.float64)
    torch.testing.assert_close(method.alpha, before + 0.5 * (loss_share - before))
    assert method.alpha[2] > before[2] and method.alpha[0] < before[0]
    assert diagnostics["alpha"] == pytest.approx(method.alpha.tolist())


def test_alpha_stays_on_the_simplex():
    method, trainer = build(make_dataset((40, 12, 6)), mixing_rate=0.7)
    gen = torch.Generator().manual_seed(0)
    for _ in range(100):
        loss = torch.rand(3, generator=gen) * torch.randint(0, 2, (3,), generator=gen)  # some zero losses
        count = torch.randint(0, 3, (3,), generator=gen).float()  # some classes unseen
        method.end_epoch(stats_with(loss.tolist(), count.tolist()), trainer.run)
        assert (method.alpha >= 0).all() and method.alpha.sum().item() == pytest.approx(1.0, abs=1e-12)
        assert method.loss_share.sum().item() == pytest.approx(1.0, abs=1e-12)


def test_no_class_starves_when_its_share_rounds_to_zero():
    dataset = make_dataset((200, 3, 3))
    method, trainer = build(dataset)
    assert (method.alpha[1:] * 16 < 0.5).all()
    labels = trainer.run.train.labels
    for index in method.epoch_batches(0, trainer.run.train, trainer.run):
        assert (torch.bincount(labels[index], minlength=3) >= 1).all()
    unguarded, _ = build(dataset, min_per_class=0)
    assert unguarded.counts[1:].tolist() == [0, 0]  # what the guard prevents


def test_a_class_without_samples_keeps_its_previous_loss_share():
    previous = torch.tensor([0.5, 0.2, 0.3], dtype=torch.float64)
    share = updated_loss_share(previous, torch.tensor([1.0, 3.0, 0.0]), torch.tensor([True, True, False]))
    torch.testing.assert_close(share, torch.tensor([0.7 * 0.25, 0.7 * 0.75, 0.3], dtype=torch.float64))


def test_cyclic_draws_use_every_sample_before_repeating():
    draws = cyclic_draws(5, 23, torch.Generator().manual_seed(0))
    laps = draws.split(5)
    for lap in laps[:-1]:
        assert sorted(lap.tolist()) == list(range(5))
    assert len(set(laps[-1].tolist())) == len(laps[-1]) == 3
    assert not all(torch.equal(laps[0], lap) for lap in laps[1:-1])  # a fresh permutation each lap


def test_cyclic_wrap_covers_every_sample_of_a_small_class():
    dataset = make_dataset((60, 5, 3))
    method, trainer = build(dataset, min_per_class=2)
    train = trainer.run.train
    batches = method.epoch_batches(0, train, trainer.run)
    used = torch.cat(batches)
    for c in (1, 2):
        members = set(torch.nonzero(train.labels == c).flatten().tolist())
        drawn = used[train.labels[used] == c].tolist()
        assert len(drawn) > len(members) and set(drawn) == members


def test_trains_end_to_end_and_logs_alpha():
    method, trainer = build(make_dataset(), epochs=4)
    initial = method.alpha.clone()
    result = trainer.fit()
    losses = [record["train_loss"] for record in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.test["balanced_acc"] > 0.6
    for record in result.history:
        alpha = record["method"]["alpha"]
        assert len(alpha) == 3 and sum(alpha) == pytest.approx(1.0)
        assert sum(record["method"]["batch_counts"]) == 16
    assert not torch.allclose(torch.tensor(result.history[-1]["method"]["alpha"], dtype=torch.float64), initial)


class StopAfter(Exception):
    pass


def test_checkpoint_restore_continues_identically(tmp_path):
    dataset = make_dataset()
    _, straight = build(dataset, epochs=3, mixing_rate=0.3)
    full = straight.fit()

    def stop_after_one(trainer, record):
        if record["epoch"] == 1:
            raise StopAfter

    cls = get_method("learn2mix")
    config, params = resolve(cls, {"batch_size": 16, "lr": 3e-3, "epochs": 3, "mixing_rate": 0.3})
    first = Trainer(cls(params), config, dataset, device="cpu", checkpoint_dir=tmp_path, callback=stop_after_one)
    with pytest.raises(StopAfter):
        first.fit()
    method = cls(params)
    resumed = Trainer(method, config, dataset, device="cpu")
    assert resumed.load_checkpoint(tmp_path)
    assert method.alpha.tolist() == pytest.approx(full.history[0]["method"]["alpha"])
    rest = resumed.fit()
    assert without_timings(rest.history) == without_timings(full.history)
    assert rest.test == full.test


def record_batches(method):
    """Wrap ``method``'s per-batch hooks: per batch, its targets, per-sample losses and alpha before and after."""
    seen = []
    own_losses, own_end_step = method.sample_losses, method.end_step

    def sample_losses(logits, targets):
        losses = own_losses(logits, targets)
        seen.append({"targets": targets.clone(), "losses": losses.detach().clone()})
        return losses

    def end_step(targets, losses):
        seen[-1]["alpha_before"] = method.alpha.clone()
        own_end_step(targets, losses)
        seen[-1]["alpha_after"] = method.alpha.clone()

    method.sample_losses, method.end_step = sample_losses, end_step
    return seen


def class_means(batches, k):
    targets = torch.cat([b["targets"] for b in batches])
    losses = torch.cat([b["losses"] for b in batches]).double()
    count = torch.bincount(targets, minlength=k).double()
    return torch.zeros(k, dtype=torch.float64).index_add_(0, targets, losses) / count.clamp_min(1), count > 0


def test_alpha_moves_once_per_epoch_from_the_whole_epochs_losses_not_its_last_batch():
    method, trainer = build(make_dataset((40, 12, 6)), epochs=1, mixing_rate=0.5)
    initial = method.alpha.clone()
    batches = record_batches(method)
    trainer.fit()
    assert all(torch.equal(b["alpha_before"], initial) and torch.equal(b["alpha_after"], initial) for b in batches)
    epoch_mean, seen = class_means(batches, 3)
    expected = initial + 0.5 * (updated_loss_share(initial, epoch_mean, seen) - initial)
    torch.testing.assert_close(method.alpha, expected)
    last_mean, last_seen = class_means(batches[-1:], 3)
    last_batch = initial + 0.5 * (updated_loss_share(initial, last_mean, last_seen) - initial)
    assert (method.alpha - last_batch).abs().max() > 1e-3  # what last-batch use would give instead


def test_per_batch_update_moves_alpha_after_every_batch_and_composes_the_next_from_it():
    method, trainer = build(make_dataset((40, 12, 6)), epochs=2, mixing_rate=0.5, update_every="batch")
    batches = record_batches(method)
    result = trainer.fit()
    assert len(batches) == 2 * math.ceil(58 / 16)
    share = torch.tensor([40, 12, 6], dtype=torch.float64) / 58
    for b in batches:
        counts = class_counts(b["alpha_before"], 16, 1, torch.ones(3, dtype=torch.bool))
        assert torch.equal(torch.bincount(b["targets"], minlength=3), counts)  # composed from the latest alpha
        mean, seen = class_means([b], 3)
        share = updated_loss_share(share, mean, seen)
        torch.testing.assert_close(b["alpha_after"], b["alpha_before"] + 0.5 * (share - b["alpha_before"]))
    assert len({tuple(torch.bincount(b["targets"], minlength=3).tolist()) for b in batches}) > 1
    assert result.history[-1]["method"]["alpha"] == pytest.approx(batches[-1]["alpha_after"].tolist())


def test_per_batch_update_moves_alpha_once_per_batch_under_sam():
    method, trainer = build(make_dataset((40, 12, 6)), epochs=1, update_every="batch", optimizer="sam", lr=0.05)
    moves = []
    own = method._move_alpha
    method._move_alpha = lambda targets, losses: moves.append(1) or own(targets, losses)
    trainer.fit()
    assert len(moves) == math.ceil(58 / 16)


def test_per_batch_update_under_sam_moves_alpha_from_each_steps_first_pass_only():
    method, trainer = build(make_dataset((40, 12, 6)), epochs=1, mixing_rate=0.5, update_every="batch",
                            optimizer="sam", lr=0.05)
    alpha = method.alpha.clone()
    passes = record_batches(method)
    trainer.fit()
    assert len(passes) == 2 * math.ceil(58 / 16)
    share = alpha.clone()
    for first, second in zip(passes[::2], passes[1::2]):
        assert torch.equal(first["targets"], second["targets"])
        assert not torch.equal(first["losses"], second["losses"])  # the perturbed weights' losses differ
        assert torch.equal(second["alpha_before"], alpha)  # nothing moved alpha between steps
        mean, seen = class_means([first], 3)
        share = updated_loss_share(share, mean, seen)
        alpha = alpha + 0.5 * (share - alpha)
        torch.testing.assert_close(second["alpha_after"], alpha)
        alpha = second["alpha_after"]


def test_per_batch_update_refuses_images_streamed_from_host_memory():
    method, trainer = build(make_dataset(), update_every="batch")
    run = trainer.run
    run.train = Split(run.train.images.to("meta"), run.train.labels)  # images elsewhere than the device
    with pytest.raises(ConfigError, match="update_every=epoch"):
        method.setup(run)


def test_per_batch_update_restores_from_a_checkpoint_identically(tmp_path):
    overrides = {"batch_size": 16, "lr": 3e-3, "epochs": 3, "mixing_rate": 0.3, "update_every": "batch"}
    cls = get_method("learn2mix")
    config, params = resolve(cls, overrides)
    full = Trainer(cls(params), config, make_dataset(), device="cpu").fit()

    def stop_after_one(trainer, record):
        if record["epoch"] == 1:
            raise StopAfter

    first = Trainer(cls(params), config, make_dataset(), device="cpu", checkpoint_dir=tmp_path,
                    callback=stop_after_one)
    with pytest.raises(StopAfter):
        first.fit()
    resumed = Trainer(cls(params), config, make_dataset(), device="cpu")
    assert resumed.load_checkpoint(tmp_path)
    rest = resumed.fit()
    assert without_timings(rest.history) == without_timings(full.history)
    assert rest.test == full.test
