"""LOW: exact per-batch weights (projection onto the scaled simplex) and the method in the trainer."""

import numpy as np
import pytest
import qpsolvers
import torch
import torch.nn.functional as F

from conftest import make_dataset, without_timings
from focustune.config import resolve
from focustune.losses import class_balanced_weights, focal_loss
from focustune.methods import get_method
from focustune.methods.low import (cross_entropy_gradient_norms, logit_gradient_norms, low_deviations,
                                   project_to_scaled_simplex)
from focustune.training import Trainer

LAMBDAS = [1e-3, 1e-2, 0.1, 0.5, 1.0, 3.0, 10.0]
BATCH_SIZES = [1, 2, 5, 17, 64]


def qp_weights(g: np.ndarray, lam: float) -> np.ndarray:
    """max w.g - lam ||w - 1||^2 s.t. w >= 0, sum w = M, by a general QP solver (objective / lam)."""
    m = len(g)
    return qpsolvers.solve_qp(2 * np.eye(m), -(g / lam + 2), A=np.ones((1, m)), b=np.array([float(m)]),
                              lb=np.zeros(m), solver="cvxopt", abstol=1e-12, reltol=1e-12, feastol=1e-12,
                              maxiters=200)


def random_g(m: int, seed: int) -> torch.Tensor:
    return torch.rand(m, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2


@pytest.mark.parametrize("lam", LAMBDAS)
@pytest.mark.parametrize("m", BATCH_SIZES)
def test_weights_match_a_general_qp_solver(lam, m):
    for seed in range(3):
        g = random_g(m, seed)
        np.testing.assert_allclose((1 + low_deviations(g, lam)).numpy(), qp_weights(g.numpy(), lam), atol=1e-5)


@pytest.mark.parametrize("lam", LAMBDAS)
def test_kkt_conditions_hold(lam):
    g = random_g(40, seed=7)
    w = 1 + low_deviations(g, lam)
    assert (w >= 0).all()
    assert w.sum().item() == pytest.approx(40, abs=1e-9)
    stationarity = g - 2 * lam * (w - 1)
    positive = w > 0
    nu = stationarity[positive]
    assert nu.max() - nu.min() < 1e-9
    assert (stationarity[~positive] <= nu.mean() + 1e-9).all()


def test_projection_is_batched_row_by_row():
    v = torch.randn(6, 9, dtype=torch.float64) * 3
    together = project_to_scaled_simplex(v, 4.0)
    one_by_one = torch.stack([project_to_scaled_simplex(row, 4.0) for row in v])
    torch.testing.assert_close(together, one_by_one)
    torch.testing.assert_close(together.sum(1), torch.full((6,), 4.0, dtype=torch.float64))


def test_weights_approach_uniform_as_lambda_grows():
    g = random_g(32, seed=3)
    deviations = [low_deviations(g, lam).abs().max().item() for lam in (0.01, 0.1, 1.0, 10.0, 1000.0)]
    assert deviations == sorted(deviations, reverse=True)
    assert deviations[-1] < 1e-3
    lam = 10.0  # no weight clipped: the closed form w = 1 + (g - mean g) / (2 lam)
    torch.testing.assert_close(1 + low_deviations(g, lam), 1 + (g - g.mean()) / (2 * lam))


def test_small_lambda_zeroes_easy_samples_and_keeps_the_order_of_g():
    g = torch.tensor([0.01, 0.02, 0.05, 1.2, 1.5, 1.9], dtype=torch.float64)
    w = 1 + low_deviations(g, 0.1)
    assert (w[:3] == 0).all() and (w[3:] > 0).all()
    assert (w.diff() >= 0).all()
    assert w[-1] > w[3]
    hardest_only = 1 + low_deviations(g, 1e-3)  # in the limit, the whole batch weight on the hardest sample
    torch.testing.assert_close(hardest_only, torch.tensor([0, 0, 0, 0, 0, 6.0], dtype=torch.float64))


def test_cross_entropy_closed_form_equals_per_sample_autograd():
    gen = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(10, 4, generator=gen) * 3, torch.randint(0, 4, (10,), generator=gen)
    per_sample = []
    for z, y in zip(logits, targets):
        z = z.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(z[None], y[None]), z)
        per_sample.append(grad.pow(2).sum())
    closed = cross_entropy_gradient_norms(logits, targets)
    torch.testing.assert_close(closed, torch.stack(per_sample))
    assert ((closed >= 0) & (closed <= 2)).all()


def test_one_autograd_call_gives_each_sample_its_own_gradient():
    gen = torch.Generator().manual_seed(1)
    logits, targets = torch.randn(8, 3, generator=gen) * 2, torch.randint(0, 3, (8,), generator=gen)
    criterion = lambda z, y: focal_loss(z, y, gamma=2.0)  # noqa: E731
    per_sample = []
    for z, y in zip(logits, targets):
        z = z.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(criterion(z[None], y[None]).sum(), z)
        per_sample.append(grad.pow(2).sum())
    torch.testing.assert_close(logit_gradient_norms(logits, targets, criterion), torch.stack(per_sample))


def build_low(dataset, **overrides):
    cls = get_method("low")
    config, params = resolve(cls, {"batch_size": 16, "lr": 3e-3, **overrides})
    method = cls(params)
    return method, Trainer(method, config, dataset, device="cpu")


@pytest.mark.parametrize("base_loss", ["ce", "weighted_ce", "focal"])
def test_base_loss_variants_weight_their_own_loss_and_gradient(base_loss):
    dataset = make_dataset()
    method, _trainer = build_low(dataset, base_loss=base_loss, gamma=1.5, lam=0.05)
    gen = torch.Generator().manual_seed(2)
    logits = (torch.randn(12, 3, generator=gen) * 2).requires_grad_(True)
    targets = torch.randint(0, 3, (12,), generator=gen)
    ce = F.cross_entropy(logits, targets, reduction="none")
    expected = {"ce": ce, "focal": focal_loss(logits, targets, 1.5),
                "weighted_ce": ce * class_balanced_weights(dataset.train.class_counts(3))[targets]}[base_loss]
    losses = method.sample_losses(logits, targets)
    torch.testing.assert_close(losses, expected)

    g = logit_gradient_norms(logits, targets, lambda z, y: method.sample_losses(z, y))
    weights = 1 + low_deviations(g, 0.05)
    loss = method.batch_loss(logits, targets, losses)
    torch.testing.assert_close(loss, (weights * expected).mean())
    # The weights are constants: d loss / d z_j = w_j / M * d loss_j / d z_j.
    (grad,) = torch.autograd.grad(loss, logits)
    (per_sample,) = torch.autograd.grad(expected.sum(), logits)
    torch.testing.assert_close(grad, weights[:, None] * per_sample / 12)


def test_trains_end_to_end_and_logs_weight_statistics():
    method, trainer = build_low(make_dataset(), epochs=4, lam=0.1)
    result = trainer.fit()
    losses = [record["train_loss"] for record in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.test["balanced_acc"] > 0.6
    for record in result.history:
        stats = record["method"]
        assert stats["weight_mean"] == pytest.approx(1.0, abs=1e-5)
        assert stats["weight_std"] > 0 and 0 <= stats["zero_weight_share"] < 1
        assert len(stats["class_weight_mean"]) == 3
    assert method.class_count.sum().item() == 0  # accumulators are reset after every epoch


def test_under_sam_the_weight_statistics_count_each_optimiser_step_once():
    method, trainer = build_low(make_dataset(), epochs=2, lam=0.1, optimizer="sam", lr=0.05)
    counted = []
    own_end_epoch = method.end_epoch

    def end_epoch(stats, run):
        counted.append((method.class_count.clone(), stats.class_count))
        return own_end_epoch(stats, run)

    method.end_epoch = end_epoch
    trainer.fit()
    assert len(counted) == 2
    for weights_counted, samples_trained in counted:
        torch.testing.assert_close(weights_counted, samples_trained)  # not twice: SAM's two passes are one step


class StopAfter(Exception):
    pass


def stop_after(epochs):
    def callback(trainer, record):
        if record["epoch"] == epochs:
            raise StopAfter
    return callback


def test_restored_trainer_continues_identically(tmp_path):
    dataset = make_dataset()
    method, straight = build_low(dataset, epochs=3, lam=0.1)
    full = straight.fit()
    assert method.state_dict() == {}  # stateless between epochs

    cls = get_method("low")
    config, params = resolve(cls, {"batch_size": 16, "lr": 3e-3, "epochs": 3, "lam": 0.1})
    first = Trainer(cls(params), config, dataset, device="cpu", checkpoint_dir=tmp_path, callback=stop_after(1))
    with pytest.raises(StopAfter):
        first.fit()
    resumed = Trainer(cls(params), config, dataset, device="cpu")
    assert resumed.load_checkpoint(tmp_path)
    rest = resumed.fit()
    assert without_timings(rest.history) == without_timings(full.history)
    assert rest.test == full.test


def random_batch(m, k, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(m, k, generator=gen) * 2, torch.randint(0, k, (m,), generator=gen)


def test_weight_spread_of_nearly_uniform_weights_is_reported_exactly():
    """A spread of ~1e-5 around 1: float32 sums of w and w^2 would cancel it to 0 or ~3e-4."""
    method, trainer = build_low(make_dataset(), lam=2.5e4)
    expected = []
    for seed in range(5):
        logits, targets = random_batch(64, 3, seed)
        losses = method.sample_losses(logits, targets)
        method.batch_loss(logits, targets, losses)
        method.end_step(targets, losses)
        expected.append(1 + low_deviations(cross_entropy_gradient_norms(logits, targets).double(), 2.5e4))
    spread = torch.cat(expected).std(unbiased=False).item()
    assert 5e-6 < spread < 5e-5
    stats = method.end_epoch(None, trainer.run)
    assert stats["weight_std"] == pytest.approx(spread, rel=1e-3)
    assert stats["weight_mean"] == pytest.approx(1.0, abs=1e-9)


def test_authors_code_unit_scales_lambda_by_the_square_of_the_actual_batch_size():
    """LOW.py's g is the squared logit gradient of the batch-MEAN loss; its lambda applies to that g."""
    code_method, _ = build_low(make_dataset(), lam=0.1, lam_unit="authors_code")
    for m in (256, 37):  # a full batch and a smaller last one
        logits, targets = random_batch(m, 3, seed=m)
        z = logits.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(z, targets), z)  # batch mean, as the authors' code
        code_weights = 1 + low_deviations(grad.pow(2).sum(1), 0.1)
        losses = code_method.sample_losses(logits, targets)
        torch.testing.assert_close(code_method.batch_loss(logits, targets, losses), (code_weights * losses).mean())
        assert code_method.lam_per_sample(m) == pytest.approx(0.1 * m * m)
        if m == 256:
            assert (code_weights - 1).abs().max() < 2e-4  # about uniform: the regime of the paper's grid
    ours, _ = build_low(make_dataset(), lam=0.1)
    logits, targets = random_batch(256, 3, seed=0)
    losses = ours.sample_losses(logits, targets)
    weights = 1 + low_deviations(cross_entropy_gradient_norms(logits, targets), 0.1)
    torch.testing.assert_close(ours.batch_loss(logits, targets, losses), (weights * losses).mean())
    assert (weights - 1).abs().max() > 0.5  # the same lambda in our units reweights strongly


def test_authors_code_unit_trains_and_reports_a_nonzero_spread_every_epoch():
    _method, trainer = build_low(make_dataset(), epochs=2, lam=100.0, lam_unit="authors_code")
    for record in trainer.fit().history:
        stats = record["method"]
        assert 0 < stats["weight_std"] < 1e-4  # lambda 100 * 16^2: weights within ~1e-4 of 1
        assert stats["weight_mean"] == pytest.approx(1.0, abs=1e-9) and stats["zero_weight_share"] == 0
