"""Hyperparameters are declared once and validated at the edge."""

import pytest

from focustune import params
from focustune.config import SHARED_KEYS, TrainConfig, resolve
from focustune.errors import ConfigError
from focustune.methods import get_method, method_names


def test_defaults_resolve_for_every_method():
    for name in method_names():
        config, method_params = resolve(get_method(name))
        assert isinstance(config, TrainConfig)
        params.validate(method_params)


def test_method_params_do_not_shadow_shared_names():
    for name in method_names():
        own = {row["name"] for row in params.describe(get_method(name).Params)}
        assert not own & set(SHARED_KEYS), name


def test_strings_are_coerced_to_declared_types():
    config, _ = resolve(get_method("erm"), {"lr": "3e-4", "epochs": "7", "amp": "false"})
    assert (config.lr, config.epochs, config.amp) == (3e-4, 7, False)


@pytest.mark.parametrize("overrides, message", [
    ({"learning_rate": "1"}, "unknown hyperparameter"),
    ({"epochs": "0"}, "out of range"),
    ({"epochs": "2.5"}, "expected int"),
    ({"lr": "fast"}, "expected float"),
    ({"lr": "nan"}, "must be finite"),
    ({"optimizer": "lion"}, "not allowed"),
    ({"amp": "maybe"}, "expected bool"),
])
def test_bad_values_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve(get_method("erm"), overrides)


def test_method_params_are_validated():
    _, focal = resolve(get_method("focal"), {"gamma": "1.5", "alpha": "none"})
    assert focal.gamma == 1.5 and focal.alpha is None
    with pytest.raises(ConfigError, match="gamma"):
        resolve(get_method("focal"), {"gamma": "-1"})
    with pytest.raises(ConfigError, match=r"unknown hyperparameter.*gamma"):
        resolve(get_method("erm"), {"gamma": "2"})


def test_parse_assignments():
    assert params.parse_assignments(["lr=1e-3", " epochs = 3"]) == {"lr": "1e-3", "epochs": "3"}
    with pytest.raises(ConfigError, match="key=value"):
        params.parse_assignments(["lr"])
    with pytest.raises(ConfigError, match="twice"):
        params.parse_assignments(["lr=1", "lr=2"])
