"""Baselines: focal loss with inverse-frequency class weights (learn2mix's class-weighted focal, App. C.2)."""

import pytest
import torch

from conftest import make_dataset
from focustune.config import resolve
from focustune.losses import focal_loss
from focustune.methods import get_method
from focustune.training import Trainer


def focal_method(dataset, **params):
    cls = get_method("focal")
    config, resolved = resolve(cls, params)
    method = cls(resolved)
    Trainer(method, config, dataset, device="cpu")  # runs the method's setup
    return method


@pytest.mark.parametrize("alpha, weighted", [(None, False), (1.0, True)])
def test_focal_alpha_one_weights_classes_by_inverse_frequency(alpha, weighted):
    counts = (40, 12, 6)
    method = focal_method(make_dataset(counts), alpha=alpha, gamma=2.0)
    gen = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(30, 3, generator=gen), torch.arange(30) % 3
    ratio = method.sample_losses(logits, targets) / focal_loss(logits, targets, 2.0)
    per_class = torch.stack([ratio[targets == c].mean() for c in range(3)])
    assert torch.allclose(ratio, per_class[targets])  # one weight per class
    if not weighted:
        torch.testing.assert_close(per_class, torch.ones(3))
        return
    frequency = torch.tensor(counts, dtype=torch.float32)
    torch.testing.assert_close(per_class / per_class[0], frequency[0] / frequency)  # proportional to 1 / n_c
    assert (per_class * frequency).sum() == pytest.approx(frequency.sum())  # mean sample weight 1


def test_focal_alpha_blends_towards_uniform_weights():
    method = focal_method(make_dataset((40, 12, 6)), alpha=0.5)
    inverse = focal_method(make_dataset((40, 12, 6)), alpha=1.0).class_weights
    torch.testing.assert_close(method.class_weights, 0.5 * inverse + 0.5)
