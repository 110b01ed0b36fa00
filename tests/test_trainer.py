"""The shared trainer: every registered method end to end, determinism, checkpoints, failure."""

import math

import pytest
import torch

from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from conftest import without_timings
from focustune.config import resolve
from focustune.errors import ConfigError, TrainingDiverged
from focustune.methods import Method, get_method, method_names
from focustune.models import MODELS, build_model, pool_by_matrices
from focustune.training import CHECKPOINT_FILE, Trainer, augment_batch

# Adam and a linear head for every method here (mdgan prefers SAM + SpinalNet, which need more steps).
FAST = {"epochs": 6, "batch_size": 16, "lr": 3e-3, "optimizer": "adam", "head": "linear"}
# Keep expensive method phases tiny in the registry-wide test (only keys the method declares).
FAST_METHOD = {"gan_steps": 4, "gan_batch_size": 8, "finetune_epochs": 2}


def _fast_overrides(name: str) -> dict:
    cls = get_method(name)
    own = {f for f in cls.Params.__dataclass_fields__}
    return {**FAST, **{k: v for k, v in FAST_METHOD.items() if k in own}}


def _trainer(name, dataset, seed=0, **kwargs):
    cls = get_method(name)
    config, params = resolve(cls, {**_fast_overrides(name), **kwargs.pop("overrides", {})})
    return Trainer(cls(params), config, dataset, seed=seed, **kwargs)


@pytest.mark.parametrize("name", method_names())
def test_every_method_learns_end_to_end(name, tiny_dataset):
    result = _trainer(name, tiny_dataset).fit()
    assert len(result.history) == result.epochs
    assert result.test["balanced_acc"] > 0.6  # chance is 1/3 on three classes
    assert all(math.isfinite(h["train_loss"]) for h in result.history)
    assert 1 <= result.best_epoch <= result.epochs
    assert result.params["lr"] == FAST["lr"]
    assert all(h["phase"] for h in result.history)
    assert result.best_phase == result.history[result.best_epoch - 1]["phase"]


def test_best_epoch_is_selected_on_validation_not_test(tiny_dataset):
    result = _trainer("erm", tiny_dataset).fit()
    scores = [(h["val"]["balanced_acc"], h["val"]["auc"]) for h in result.history]
    assert result.best_epoch == 1 + scores.index(max(scores))  # ties broken by val AUC
    assert result.val["balanced_acc"] == pytest.approx(max(scores)[0])
    assert [h["best"] for h in result.history].count(True) >= 1


def test_same_seed_gives_same_metrics(tiny_dataset):
    a = _trainer("oversample", tiny_dataset, seed=3).fit()
    b = _trainer("oversample", tiny_dataset, seed=3).fit()
    c = _trainer("oversample", tiny_dataset, seed=4).fit()
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    assert a.test == b.test
    assert [h["train_loss"] for h in a.history] != [h["train_loss"] for h in c.history]


def test_a_run_does_not_depend_on_what_ran_between_construction_and_fit(tiny_dataset):
    first, second = _trainer("erm", tiny_dataset, seed=3), _trainer("erm", tiny_dataset, seed=3)
    torch.rand(100)  # anything else using the global random generator
    assert without_timings(first.fit().history) == without_timings(second.fit().history)


@pytest.mark.parametrize("name", method_names())
def test_checkpoint_round_trip_continues_identically(name, tiny_dataset, tmp_path):
    straight = _trainer(name, tiny_dataset).fit()
    stop_after = _trainer(name, tiny_dataset).total_epochs // 2
    resumed = _run_interrupted(name, tiny_dataset, tmp_path, stop_after)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]
    assert resumed.test == straight.test


class _Stop(Exception):
    pass


def _run_interrupted(name, dataset, directory, stop_after):
    def interrupt(trainer, record):
        if record["epoch"] == stop_after:
            raise _Stop

    with pytest.raises(_Stop):
        _trainer(name, dataset, checkpoint_dir=directory, callback=interrupt).fit()
    fresh = _trainer(name, dataset, checkpoint_dir=directory)
    assert fresh.load_checkpoint(directory) and fresh.epoch == stop_after
    return fresh.fit()


class _ExplodingMethod(Method):
    name = "exploding"

    def batch_loss(self, logits, targets, losses):
        return losses.mean() * torch.tensor(float("nan"))


def test_nan_loss_stops_the_run_and_keeps_last_good_checkpoint(tiny_dataset, tmp_path):
    config, _ = resolve(get_method("erm"), FAST)
    good = Trainer(get_method("erm")(), config, tiny_dataset, checkpoint_dir=tmp_path)
    good.epoch = 0
    good.save_checkpoint(tmp_path)
    before = (tmp_path / CHECKPOINT_FILE).read_bytes()
    trainer = Trainer(_ExplodingMethod(), config, tiny_dataset, checkpoint_dir=tmp_path)
    with pytest.raises(TrainingDiverged, match="nan"):
        trainer.fit()
    assert (tmp_path / CHECKPOINT_FILE).read_bytes() == before


class _ValidationWatcher(Method):
    """Records, at each end_epoch, the shared validation probabilities and a fresh prediction."""

    name = "watcher"

    def __init__(self, params=None):
        super().__init__(params)
        self.pairs = []

    def end_epoch(self, stats, run):
        shared = run.val_predictions()
        self.pairs.append((shared.clone(), run.predict(run.val.images)))
        return {}


def test_end_epoch_shares_the_trainers_validation_predictions(tiny_dataset):
    method = _ValidationWatcher()
    config, _ = resolve(get_method("erm"), FAST)
    history = Trainer(method, config, tiny_dataset).fit().history
    assert len(method.pairs) == len(history)
    for (shared, fresh), record in zip(method.pairs, history):
        torch.testing.assert_close(shared, fresh)  # the model after this epoch, not a stale one
        accuracy = (shared.argmax(1) == tiny_dataset.val.labels).float().mean().item()
        assert record["val"]["acc"] == pytest.approx(accuracy)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(method.pairs, method.pairs[1:]))


@pytest.mark.parametrize("name", method_names())
def test_methods_do_not_predict_validation_again(name, tiny_dataset):
    trainer = _trainer(name, tiny_dataset)
    predicted = []
    own_predict = trainer.run.predict
    trainer.run.predict = lambda images: predicted.append(len(images)) or own_predict(images)
    trainer.fit()
    assert len(tiny_dataset.val.labels) not in predicted


@pytest.mark.parametrize("native_bf16", [True, False])
def test_amp_on_cpu_uses_bf16_only_where_the_cpu_has_it(native_bf16, tiny_dataset, monkeypatch):
    monkeypatch.setattr("focustune.training.device.cpu_has_native_bf16", lambda: native_bf16)
    mixed = _trainer("erm", tiny_dataset, device="cpu", overrides={"amp": True})
    assert mixed.precision == ("bfloat16" if native_bf16 else "float32")
    mixed_result = mixed.fit()
    exact = _trainer("erm", tiny_dataset, device="cpu", overrides={"amp": False})
    assert exact.precision == "float32"
    exact_result = exact.fit()
    assert mixed_result.test["balanced_acc"] > 0.6
    same = [h["train_loss"] for h in mixed_result.history] == [h["train_loss"] for h in exact_result.history]
    assert same != native_bf16  # bf16 autocast really changes the computation; without it nothing changes


def test_early_stopping_ends_the_run(tiny_dataset):
    result = _trainer("erm", tiny_dataset, overrides={"epochs": 40, "patience": 2}).fit()
    assert len(result.history) < 40
    assert len(result.history) - result.best_epoch == 2


def test_callback_sees_every_epoch(tiny_dataset):
    seen = []
    _trainer("erm", tiny_dataset, callback=lambda t, r: seen.append((r["epoch"], r["val"]["acc"]))).fit()
    assert [e for e, _ in seen] == list(range(1, FAST["epochs"] + 1))


@pytest.mark.parametrize("model", MODELS.names())
def test_every_registered_backbone_trains(model, tiny_rgb_dataset):
    result = _trainer("erm", tiny_rgb_dataset, overrides={"model": model, "epochs": 2}).fit()
    assert len(result.test["per_class_recall"]) == 2


def test_schedulers_and_optimisers(tiny_dataset):
    for overrides in ({"scheduler": "multistep", "optimizer": "sgd", "lr": 0.05},
                      {"scheduler": "cosine", "optimizer": "adamw", "augment": "flip_shift"}):
        result = _trainer("erm", tiny_dataset, overrides=overrides).fit()
        assert result.history[-1]["lr"] < result.history[0]["lr"]


@pytest.mark.parametrize("optimizer", ["sgd", "sam"])
def test_nesterov_momentum_reaches_the_optimiser(optimizer, tiny_dataset):
    trainer = _trainer("erm", tiny_dataset, overrides={"optimizer": optimizer, "nesterov": "true",
                                                       "momentum": 0.9, "lr": 0.05, "epochs": 1})
    trainer.fit()
    assert trainer.optimizer.param_groups[0]["nesterov"] is True


@pytest.mark.parametrize("optimizer", ["sgd", "sam"])
@pytest.mark.parametrize("name", method_names())
def test_end_step_follows_every_optimiser_step_exactly_once(name, optimizer, tiny_dataset):
    """SAM runs two forward passes (two batch_loss calls) per step; end_step still comes once per step."""
    trainer = _trainer(name, tiny_dataset, overrides={"optimizer": optimizer, "lr": 0.05, "epochs": 3})
    events = []
    own_end_step = trainer.method.end_step
    trainer.method.end_step = lambda targets, losses: events.append("end_step") or own_end_step(targets, losses)

    def stepped(stepped_optimizer, args, kwargs):  # SAM steps its base optimiser once per step
        if stepped_optimizer in (trainer.optimizer, getattr(trainer.optimizer, "base_optimizer", None)):
            events.append("step")

    hook = register_optimizer_step_post_hook(stepped)
    try:
        trainer.fit()
    finally:
        hook.remove()
    steps = events.count("step")
    assert steps >= trainer.total_epochs and events == ["step", "end_step"] * steps


@pytest.mark.parametrize("overrides", [{"nesterov": True, "optimizer": "adam"},
                                       {"nesterov": True, "optimizer": "sgd", "momentum": 0.0}])
def test_nesterov_without_momentum_sgd_is_refused(overrides):
    with pytest.raises(ConfigError, match="nesterov=true needs optimizer sgd or sam with momentum > 0"):
        resolve(get_method("erm"), overrides)


def test_augmentation_is_batched_and_keeps_shape():
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    assert torch.equal(augment_batch(x, "none", gen), x)
    flipped = augment_batch(x.repeat(64, 1, 1, 1), "flip", gen)
    same = (flipped == x.repeat(64, 1, 1, 1)).flatten(1).all(1)
    assert 0 < same.sum() < 128 and flipped.shape == (128, 1, 4, 4)
    assert augment_batch(x, "flip_shift", gen).shape == x.shape


def test_training_data_stays_on_device_without_copies(tiny_dataset):
    trainer = _trainer("erm", tiny_dataset)
    assert trainer.data.train.images.dtype == torch.uint8
    assert trainer.data.train.images.device == trainer.device


# ------------------------------------------------------------- devices (the CPU side; tests/test_cuda.py runs on a GPU)

def test_a_checkpoint_loads_for_a_training_device_other_than_the_cpu(tiny_dataset, tmp_path, monkeypatch):
    """RNG states must reach torch as CPU tensors whatever the device: loading must not map them onto it.
    The 'meta' device stands in for CUDA here (tensors mapped onto it cannot serve as CPU RNG states)."""
    writer = _trainer("erm", tiny_dataset, checkpoint_dir=tmp_path)
    writer.run_epoch()
    saved_rng = torch.get_rng_state()
    reader = _trainer("erm", tiny_dataset)
    monkeypatch.setattr(reader, "device", torch.device("meta"))
    torch.manual_seed(12345)
    assert reader.load_checkpoint(tmp_path) and reader.epoch == 1
    assert torch.equal(torch.get_rng_state(), saved_rng)
    assert torch.equal(reader.generator.get_state(), writer.generator.get_state())


def _as_if_written_on_a_gpu(directory):
    """Rewrite a CPU checkpoint's RNG entries as a CUDA trainer writes them (a CUDA generator's state)."""
    path = directory / CHECKPOINT_FILE
    state = torch.load(path, weights_only=True)
    cuda_state = torch.arange(16, dtype=torch.uint8)  # a CUDA generator's state: seed and offset, 16 bytes
    state["rng"].update({"generator": cuda_state, "generator_device": "cuda", "cuda": cuda_state.clone()})
    torch.save(state, path)


def test_a_checkpoint_written_on_a_gpu_resumes_on_the_cpu_reproducibly(tiny_dataset, tmp_path):
    stop_after = 2
    with pytest.raises(_Stop):
        _trainer("learn2mix", tiny_dataset, checkpoint_dir=tmp_path,
                 callback=lambda t, r: (_ for _ in ()).throw(_Stop) if r["epoch"] == stop_after else None).fit()
    _as_if_written_on_a_gpu(tmp_path)
    results = []
    for _ in range(2):
        resumed = _trainer("learn2mix", tiny_dataset)
        assert resumed.load_checkpoint(tmp_path) and resumed.epoch == stop_after
        results.append(resumed.fit())
    assert len(results[0].history) == FAST["epochs"]
    assert without_timings(results[0].history) == without_timings(results[1].history)
    assert results[0].test == results[1].test


@pytest.fixture
def cuda_seeding(monkeypatch):
    """Records every reseeding of the CUDA generators (a no-op stand-in on a machine without CUDA)."""
    calls = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(("all", seed)))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: calls.append(("current", seed)))
    return calls


def test_a_model_reset_reseeds_only_the_cpu_generator_and_restores_it(tiny_dataset, cuda_seeding):
    trainer = _trainer("imet", tiny_dataset)
    cuda_seeding.clear()  # the run's own seeding at construction seeds every generator, on purpose
    before = torch.get_rng_state()
    first, again = trainer._new_model(phase_index=1), trainer._new_model(phase_index=1)
    assert cuda_seeding == []
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))


class _DeterminismWatcher(Method):
    name = "determinism_watcher"

    def __init__(self, params=None):
        super().__init__(params)
        self.modes = set()

    def batch_loss(self, logits, targets, losses):
        self.modes.add(torch.are_deterministic_algorithms_enabled())
        return losses.mean()


@pytest.mark.parametrize("deterministic", [True, False])
def test_deterministic_option_holds_during_training_only(deterministic, tiny_dataset):
    config, _ = resolve(get_method("erm"), {**FAST, "epochs": 2, "deterministic": deterministic})
    method = _DeterminismWatcher()
    Trainer(method, config, tiny_dataset).fit()
    assert method.modes == {deterministic}
    assert not torch.are_deterministic_algorithms_enabled()  # the process's setting is restored


@pytest.mark.parametrize("name", method_names())
def test_batches_streamed_from_host_memory_train_like_device_resident_data(name, tiny_dataset):
    streamed = _trainer(name, tiny_dataset, data_limit=tiny_dataset.image_bytes - 1)
    assert streamed.streamed and streamed.data.train.images is tiny_dataset.train.images
    resident = _trainer(name, tiny_dataset)
    assert not resident.streamed
    a, b = streamed.fit(), resident.fit()
    assert [(h["train_loss"], h["val"]) for h in a.history] == [(h["train_loss"], h["val"]) for h in b.history]
    assert a.test == b.test


@pytest.mark.parametrize("size_in, size_out", [(7, 2), (28, 5), (8, 4), (4, 4), (5, 1)])
def test_adaptive_pooling_by_matrices_matches_the_native_kernel(size_in, size_out):
    x = torch.randn(3, 4, size_in, size_in)
    torch.testing.assert_close(pool_by_matrices(x, size_out), nn.functional.adaptive_avg_pool2d(x, size_out))


@pytest.mark.parametrize("backbone", sorted(MODELS))
def test_every_backbone_pools_in_a_way_deterministic_algorithms_allow_on_cuda(backbone):
    model = build_model(backbone, 3, 4, 28 if backbone in ("small_cnn", "lenet5", "resnet18") else 64)
    assert not [m for m in model.modules() if type(m) is nn.AdaptiveAvgPool2d]


def _stage_scores(result, stage_epochs):
    return [(h["val"]["balanced_acc"], h["val"]["auc"]) for h in result.history if h["epoch"] in stage_epochs]


def test_phased_methods_record_the_best_epoch_before_and_after_their_mechanism(tiny_dataset):
    trainer = _trainer("imet", tiny_dataset, overrides={"iterations": 3})  # 6 epochs: mechanism from epoch 3
    result = trainer.fit()
    assert trainer.mechanism_epoch == 3 and set(result.stages) == {"before_mechanism", "after_mechanism"}
    before, after = result.stages["before_mechanism"], result.stages["after_mechanism"]
    assert before.best_epoch in (1, 2) and 3 <= after.best_epoch <= 6
    assert after.best_phase == result.history[after.best_epoch - 1]["phase"] != "iteration_0"
    scores = _stage_scores(result, range(3, 7))
    assert after.best_epoch == 3 + scores.index(max(scores))  # the best validation epoch among 3..6
    overall = before if result.best_epoch < 3 else after
    assert overall.best_epoch == result.best_epoch and overall.test == result.test


def test_stage_results_are_the_weights_of_their_epoch(tiny_dataset):
    """A stage's validation metrics, re-evaluated at the end, are those its epoch recorded."""
    result = _trainer("imet", tiny_dataset, overrides={"iterations": 3}).fit()
    for stage in result.stages.values():
        assert stage.val["balanced_acc"] == pytest.approx(
            result.history[stage.best_epoch - 1]["val"]["balanced_acc"])
    after = result.stages["after_mechanism"]
    assert after.val["balanced_acc"] == pytest.approx(result.history[after.best_epoch - 1]["val"]["balanced_acc"])


def test_single_phase_methods_have_no_stages(tiny_dataset):
    assert _trainer("erm", tiny_dataset, overrides={"epochs": 2}).fit().stages == {}


def test_the_sweep_logs_the_after_mechanism_epoch_as_final_metrics(tiny_dataset):
    from focustune.records import TrialReport
    from focustune.sweeps.trainable import with_final
    from focustune.tracking_schema import FINAL_PREFIXES

    trainer = _trainer("imet", tiny_dataset, overrides={"iterations": 3})
    result = trainer.fit()
    last = TrialReport(epoch=trainer.epoch, total_epochs=trainer.total_epochs, objective=0.0, busy_since=0.0,
                       busy_until=0.0)
    final = with_final(last, trainer).scalars
    after = result.stages["after_mechanism"]
    assert final["after_mechanism_best_epoch"] == after.best_epoch
    assert final["after_mechanism_test_balanced_acc"] == after.test["balanced_acc"]
    assert final["before_mechanism_best_val_acc"] == result.stages["before_mechanism"].val["acc"]
    assert all(k.startswith(FINAL_PREFIXES) for k in final if "mechanism" in k)
    assert [final[f"train_count/c{i}"] for i in range(3)] == result.data["train_class_counts"]  # its training split


def test_stage_bests_survive_a_checkpoint(tiny_dataset, tmp_path):
    whole = _trainer("imet", tiny_dataset, overrides={"iterations": 3}).fit()
    first = _trainer("imet", tiny_dataset, overrides={"iterations": 3}, checkpoint_dir=tmp_path)
    for _ in range(4):
        first.run_epoch()
    second = _trainer("imet", tiny_dataset, overrides={"iterations": 3}, checkpoint_dir=tmp_path)
    assert second.load_checkpoint(tmp_path)
    assert second.fit().stages == whole.stages


@pytest.mark.slow
def test_a_compiled_trainer_trains_as_the_eager_one_and_reports_its_compile_time(tiny_dataset, monkeypatch):
    """``compile=true``: the same losses and metrics as eager float32 (inductor may reorder float sums;
    its dropout draws eager's random numbers here, ``fallback_random``), the compilation timed on the
    epoch that paid it, none after (no new batch size, no new model)."""
    import torch._inductor.config

    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    eager = _trainer("erm", tiny_dataset, seed=2, overrides={"amp": False, "epochs": 3}).fit()
    compiled = _trainer("erm", tiny_dataset, seed=2, overrides={"amp": False, "epochs": 3, "compile": True}).fit()
    assert [h["train_loss"] for h in compiled.history] == pytest.approx([h["train_loss"] for h in eager.history],
                                                                          rel=1e-4)
    assert compiled.test["balanced_acc"] == pytest.approx(eager.test["balanced_acc"], abs=1e-6)
    seconds = [h["compile_seconds"] for h in compiled.history]
    assert seconds[0] > 0 and seconds[1:] == [0.0, 0.0]
    assert "compile_seconds" not in eager.history[0]
