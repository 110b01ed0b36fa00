"""Model and head registries: every registered pair builds, and the registries drive validation."""

import itertools

import pytest
import torch
from torch import nn

from focustune.config import resolve
from focustune.errors import ConfigError
from focustune.methods import get_method
from focustune.models import HEADS, MODELS, build_model


@pytest.mark.parametrize("model, head", list(itertools.product(MODELS.names(), HEADS.names())))
def test_every_registered_model_and_head_classify(model, head):
    net = build_model(model, 3, 5, 16, head=head).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    assert net.features(torch.randn(2, 3, 16, 16)).shape == (2, net.feature_dim)


@pytest.mark.parametrize("key, registry", [("model", MODELS), ("head", HEADS)])
def test_unknown_names_are_refused_with_the_registered_ones(key, registry):
    with pytest.raises(ConfigError) as err:
        resolve(get_method("erm"), {key: "nonexistent"})
    assert f"{key}='nonexistent'" in str(err.value)
    assert all(name in str(err.value) for name in registry.names())


def test_a_registered_head_becomes_a_valid_choice(monkeypatch):
    factory = lambda feature_dim, num_classes: nn.Sequential(nn.Dropout(0.1), nn.Linear(feature_dim, num_classes))  # noqa: E731
    with pytest.raises(ConfigError):
        resolve(get_method("erm"), {"head": "dropout_linear"})
    monkeypatch.setitem(HEADS._items, "dropout_linear", factory)
    config, _ = resolve(get_method("erm"), {"head": "dropout_linear"})
    net = build_model(config.model, 1, 3, 12, head=config.head)
    assert isinstance(net.head, nn.Sequential) and net(torch.randn(2, 1, 12, 12)).shape == (2, 3)
