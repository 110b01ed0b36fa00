"""Model and head registries: every registered pair builds, and the registries drive validation."""

import itertools

import pytest
import torch
from torch import nn

from focustune.config import resolve
from focustune.errors import ConfigError
from focustune.methods import get_method
from focustune.models import HEADS, MODELS, build_model, count_parameters


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


def test_imet_cnn_with_one_sigmoid_unit_has_the_papers_30047_parameters():
    assert count_parameters(build_model("imet_cnn", 1, 2, 28, head="sigmoid")) == 30_047
    assert count_parameters(build_model("imet_cnn", 1, 2, 28, head="linear")) == 30_063  # two softmax units
    net = build_model("imet_cnn", 1, 2, 28, head="sigmoid")
    assert [m.p for m in net.modules() if isinstance(m, nn.Dropout)] == [0.5]
    assert [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)] == [32, 32]


def test_imet_cnn_refuses_images_too_small_for_its_two_pools():
    with pytest.raises(ConfigError, match="at least 10 px"):
        build_model("imet_cnn", 1, 2, 8)


def test_sigmoid_head_trains_binary_cross_entropy_on_one_unit():
    head = HEADS.get("sigmoid")(6, 2)
    features, targets = torch.randn(5, 6), torch.tensor([0, 1, 1, 0, 1])
    logits = head(features)
    z = head.units(features).squeeze(1)
    assert torch.equal(logits[:, 0], torch.zeros(5))
    torch.testing.assert_close(torch.softmax(logits, dim=1)[:, 1], torch.sigmoid(z))
    torch.testing.assert_close(nn.functional.cross_entropy(logits, targets),
                               nn.functional.binary_cross_entropy_with_logits(z, targets.float()))
    assert HEADS.get("sigmoid")(6, 4)(features).shape == (5, 4)  # k classes: k - 1 units, class 0 fixed at 0
