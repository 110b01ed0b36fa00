"""Shared training hyperparameters and resolution of a run's full configuration."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Protocol

from focustune import params
from focustune.errors import ConfigError
from focustune.metric_table import DEFAULT_SELECTION_METRIC, SELECTION_METRICS
from focustune.models import HEADS, MODELS
from focustune.operating_points import parse_rule
from focustune.params import hp


@dataclass
class TrainConfig:
    """Hyperparameters every method shares (the trainer's own)."""

    epochs: int = hp(20, low=1, high=10_000, help="training epochs (all phases together)")
    batch_size: int = hp(128, low=2, high=65_536, help="samples per training batch")
    lr: float = hp(1e-3, low=1e-7, high=10.0, log=True, help="learning rate")
    weight_decay: float = hp(0.0, low=0.0, high=1.0, help="L2 weight decay")
    optimizer: str = hp("adam", choices=("adam", "adamw", "sgd", "sam"),
                        help="sam = sharpness-aware minimisation around SGD with momentum")
    momentum: float = hp(0.9, low=0.0, high=0.999, help="SGD/SAM momentum")
    nesterov: bool = hp(False, help="Nesterov momentum for sgd/sam (needs momentum > 0)")
    sam_rho: float = hp(0.05, low=1e-4, high=2.0, log=True, help="SAM neighbourhood size")
    scheduler: str = hp("none", choices=("none", "cosine", "multistep"),
                        help="multistep = lr x0.1 at 50% and 75% of a phase")
    model: str = hp("small_cnn", choices=MODELS.names, help="backbone (registered models)")
    head: str = hp("linear", choices=HEADS.names, help="classification head (registered heads)")
    augment: str = hp("none", choices=("none", "flip", "flip_shift"),
                      help="batched tensor augmentation of training batches")
    selection_metric: str = hp(DEFAULT_SELECTION_METRIC, choices=SELECTION_METRICS,
                               help="validation metric that picks the best epoch")
    operating_point: str = hp("", help="what the model's per-class logit offsets (a binary task's threshold) "
                                       "optimise on validation: METRIC, or METRIC | recall[CLASS]>=0.9, ... "
                                       "(default: the selection metric, balanced_acc when offsets cannot change it)")
    patience: int = hp(0, low=0, high=10_000, help="early stopping after this many epochs "
                                                    "without improvement (0 = off)")
    amp: bool = hp(True, help="mixed precision: bf16 autocast on CUDA (fp16 where bf16 is missing) and on CPUs with "
                              "native bf16 (AVX512-BF16, AMX); false: float32 everywhere")
    deterministic: bool = hp(False, help="deterministic algorithms (torch.use_deterministic_algorithms) during "
                                         "training: bitwise-repeatable runs on a GPU, somewhat slower; "
                                         "CPU runs are repeatable either way")
    compile: bool = hp(False, help="torch.compile the training forward pass (inductor, on CPUs and GPUs): the "
                                   "first steps pay the compilation (the epoch record's compile_seconds)")
    eval_batch_size: int = hp(1024, low=1, high=1_000_000, help="batch size for evaluation")
    probe_fraction: float = hp(0.1, low=0.01, high=0.5,
                               help="share of each training class held out as the probe split, for methods "
                                    "that measure their errors on 'probe' (imet, mdgan)")

    def __post_init__(self) -> None:
        parse_rule(self.operating_point, self.selection_metric)  # ConfigError for a rule that cannot be read
        if self.nesterov and (self.optimizer not in ("sgd", "sam") or float(self.momentum) == 0):
            raise ConfigError(f"nesterov=true needs optimizer sgd or sam with momentum > 0 "
                              f"(got optimizer={self.optimizer}, momentum={self.momentum})")


SHARED_KEYS = tuple(f.name for f in fields(TrainConfig))


class MethodClass(Protocol):
    """What :func:`resolve` and the search spaces read of a method class (a subclass of
    :class:`focustune.methods.base.Method`, which cannot be named here: the methods import this module)."""

    @property
    def name(self) -> str: ...
    @property
    def Params(self) -> type[Any]: ...
    @property
    def defaults(self) -> dict[str, Any]: ...


def resolve(method_cls: MethodClass, overrides: Mapping[str, Any] | None = None) -> tuple[TrainConfig, Any]:
    """Split ``overrides`` between the shared config and the method's params; validate both.

    The method's ``defaults`` (its preferred shared settings, e.g. SAM for mdgan) apply first;
    the user's overrides win. Unknown keys are refused with the list of known ones.
    """
    overrides = dict(overrides or {})
    method_keys = {f.name for f in fields(method_cls.Params)}
    unknown = sorted(set(overrides) - method_keys - set(SHARED_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown hyperparameter{'s' if len(unknown) > 1 else ''} for method {method_cls.name}: "
            f"{', '.join(unknown)}\n  method: {', '.join(sorted(method_keys)) or '(none)'}"
            f"\n  shared: {', '.join(SHARED_KEYS)}")
    shared = {**method_cls.defaults, **{k: v for k, v in overrides.items() if k in SHARED_KEYS}}
    own = {k: v for k, v in overrides.items() if k in method_keys}
    config = params.build(TrainConfig, shared, what="training")
    method_params = params.build(method_cls.Params, own, what=f"method {method_cls.name}")
    return config, method_params


def flat_params(config: TrainConfig, method_params: Any) -> dict[str, Any]:
    """Every resolved hyperparameter in one flat mapping (shared first, then the method's)."""
    return {**params.as_dict(config), **params.as_dict(method_params)}
