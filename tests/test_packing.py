"""Packed trials: a member of a stacked pack trains as its solo run with the same seed (float32)."""

import math

import pytest
import torch
from torch import nn

from conftest import make_dataset, without_timings
from focustune.config import resolve
from focustune.errors import ConfigError, TrainingDiverged
from focustune.methods import get_method, method_names
from focustune.training import Trainer
from focustune.training.packing import Pack, check_packable, train_packed

# float32: packing changes only the rounding of the stacked kernels (bfloat16's would dominate)
FAST = {"epochs": 3, "batch_size": 16, "lr": 3e-3, "optimizer": "adam", "head": "linear", "amp": False}
FAST_METHOD = {"gan_steps": 4, "gan_batch_size": 8, "finetune_epochs": 1}
#: each member its own seed, learning rate and weight decay
MEMBERS = [(1, {"lr": 3e-3}), (2, {"lr": 1e-3, "weight_decay": 1e-3}), (1, {"lr": 6e-3})]
SLOW_METHODS = {"mdgan"}  # its GAN training, per member, dominates


def _trainer(name, dataset, seed, trainer=None, **overrides):
    cls = get_method(name)
    own = set(cls.Params.__dataclass_fields__)
    config, params = resolve(cls, {**FAST, **{k: v for k, v in FAST_METHOD.items() if k in own}, **overrides})
    return Trainer(cls(params), config, dataset, seed=seed, **(trainer or {}))


def assert_close(solo, packed, path="result"):
    """Equal structure; numbers within float32 rounding of a few epochs of training."""
    if isinstance(solo, dict):
        assert solo.keys() == packed.keys(), path
        for key in solo:
            assert_close(solo[key], packed[key], f"{path}.{key}")
    elif isinstance(solo, (list, tuple)):
        assert len(solo) == len(packed), path
        for i, (a, b) in enumerate(zip(solo, packed)):
            assert_close(a, b, f"{path}[{i}]")
    elif isinstance(solo, float) and not isinstance(solo, bool):
        assert packed == pytest.approx(solo, rel=1e-4, abs=1e-5) or (math.isnan(solo) and math.isnan(packed)), path
    else:
        assert solo == packed, path


def assert_same_run(solo, packed):
    assert_close(without_timings(solo.history), without_timings(packed.history), "history")
    assert (solo.best_epoch, solo.best_phase) == (packed.best_epoch, packed.best_phase)
    assert_close(solo.val, packed.val, "val")
    assert_close(solo.test, packed.test, "test")
    assert solo.params == packed.params


def _methods():
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_METHODS else n for n in method_names()]


@pytest.mark.parametrize("name", _methods())
def test_a_packed_member_trains_as_its_solo_run(name, tiny_dataset):
    members = [(seed, {**values, "epochs": 2}) for seed, values in MEMBERS[:2]]
    solo = [_trainer(name, tiny_dataset, seed, **values).fit() for seed, values in members]
    packed = train_packed([_trainer(name, tiny_dataset, seed, **values) for seed, values in members])
    for alone, member in zip(solo, packed):
        assert_same_run(alone, member)
    # the members did differ: a pack is not one model trained K times
    assert solo[0].history[-1]["train_loss"] != solo[1].history[-1]["train_loss"]


def test_a_dropped_member_leaves_the_others_training_as_alone(tiny_dataset):
    solo = [_trainer("low", tiny_dataset, seed, **values).fit() for seed, values in MEMBERS]
    packed = train_packed([_trainer("low", tiny_dataset, seed, **values) for seed, values in MEMBERS],
                          stop=lambda index, record: index == 1 and record["epoch"] == 1)
    assert_same_run(solo[0], packed[0])
    assert_same_run(solo[2], packed[2])
    assert len(packed[1].history) == 1
    assert_close(without_timings(solo[1].history[:1]), without_timings(packed[1].history))


def test_a_member_resumed_from_its_checkpoint_packs_with_a_fresh_one(tiny_dataset, tmp_path):
    """Members at different epochs (one resumed): each continues as its solo run."""
    solo = [_trainer("oversample", tiny_dataset, seed, **values).fit() for seed, values in MEMBERS[:2]]

    def stop_after_one(trainer, record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    interrupted = _trainer("oversample", tiny_dataset, MEMBERS[1][0], **MEMBERS[1][1],
                           trainer={"checkpoint_dir": tmp_path, "callback": stop_after_one})
    with pytest.raises(KeyboardInterrupt):
        Pack([interrupted]).fit()
    pack = Pack([_trainer("oversample", tiny_dataset, seed, **values) for seed, values in MEMBERS[:2]])
    assert pack.load_checkpoint(1, tmp_path) and pack.members[1].trainer.epoch == 1
    for alone, member in zip(solo, pack.fit()):
        assert_same_run(alone, member)


def test_sam_and_a_dropout_head_pack_exactly(tiny_dataset):
    values = {"optimizer": "sam", "head": "spinal_selu", "epochs": 2}
    solo = [_trainer("erm", tiny_dataset, seed, **{**values, **lr}).fit() for seed, lr in MEMBERS[:2]]
    packed = train_packed([_trainer("erm", tiny_dataset, seed, **{**values, **lr}) for seed, lr in MEMBERS[:2]])
    for alone, member in zip(solo, packed):
        assert_same_run(alone, member)


@pytest.mark.slow
def test_batchnorm_statistics_stay_with_each_member():
    dataset = make_dataset((12, 6), size=8)
    values = {"model": "resnet18", "optimizer": "sgd", "batch_size": 6, "epochs": 1}
    solo = [_trainer("erm", dataset, seed, **values) for seed in (1, 2)]
    for trainer in solo:
        trainer.fit()
    pack = Pack([_trainer("erm", dataset, seed, **values) for seed in (1, 2)])
    pack.fit()
    for alone, member in zip(solo, pack.members.values()):
        for (name, a), b in zip(alone.model.named_buffers(), member.trainer.model.buffers()):
            if "running" in name:
                assert torch.allclose(a, b, rtol=1e-2, atol=1e-3), name  # BatchNorm amplifies rounding
            else:
                assert torch.equal(a, b), name  # num_batches_tracked
    assert not torch.equal(*[m.trainer.model.backbone.bn1.running_mean for m in pack.members.values()])


def test_trials_of_different_models_or_unpackable_layers_are_refused(tiny_dataset):
    with pytest.raises(ConfigError, match="model"):
        check_packable([_trainer("erm", tiny_dataset, 0), _trainer("erm", tiny_dataset, 0, model="lenet5")])
    trainer = _trainer("erm", tiny_dataset, 0)
    trainer.model.backbone.append(nn.Dropout2d(0.1))
    with pytest.raises(ConfigError, match="Dropout2d"):
        check_packable([trainer])
    with pytest.raises(ConfigError, match="compile=true"):
        check_packable([_trainer("erm", tiny_dataset, 0), _trainer("erm", tiny_dataset, 1, compile=True)])


def test_a_member_joining_later_or_diverging_leaves_the_others_as_alone(tiny_dataset):
    """Dynamic membership: a trial joins after the others' first epoch; another's loss diverges
    (it is dropped with its error, the pack goes on); each survivor trains as its solo run."""
    solo = [_trainer("erm", tiny_dataset, seed, **values).fit() for seed, values in MEMBERS[:2]]
    pack = Pack([_trainer("erm", tiny_dataset, MEMBERS[0][0], **MEMBERS[0][1]),
                 _trainer("erm", tiny_dataset, 5, optimizer="sgd", lr=10.0, momentum=0.99)])
    assert 0 in pack.run_epoch()
    late = pack.add(_trainer("erm", tiny_dataset, MEMBERS[1][0], **MEMBERS[1][1]))
    with pytest.raises(TrainingDiverged, match="training loss became"):
        pack.fit()
    assert pack.members[1].dropped and pack.members[1].failure is not None
    assert pack.active == [] and late == 2
    results = {index: member.trainer.result() for index, member in pack.members.items() if index != 1}
    assert_same_run(solo[0], results[0])
    assert_same_run(solo[1], results[2])
