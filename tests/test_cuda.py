"""The trainer on a CUDA GPU: ``pytest -m cuda tests/test_cuda.py`` (every test skips without CUDA).

Every registered method with bf16 and fp16 (+GradScaler) autocast, SAM, resume equal to an
uninterrupted run (exact under ``deterministic=true``, within a stated tolerance without), GPU -> CPU
and CPU -> GPU checkpoints, mdgan's FastGAN, large-batch evaluation, batches streamed from host
memory, and no host synchronisation per batch (counted with ``torch.cuda.set_sync_debug_mode``).
Needs torch and the test helpers only (pytorch-optimizer for SAM/mdgan), no Ray, Optuna or MLflow.
"""

import os
import warnings

import pytest
import torch

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, before its first use here

from conftest import make_dataset
from focustune.config import resolve
from focustune.methods import get_method, method_names
from focustune.methods.mdgan.fastgan import FastGAN
from focustune.training import Trainer, deterministic_algorithms

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

FAST = {"epochs": 4, "batch_size": 16, "lr": 3e-3, "optimizer": "adam", "head": "linear"}
FAST_METHOD = {"gan_steps": 4, "gan_batch_size": 8, "finetune_epochs": 2}
#: Without deterministic algorithms (atomics in cuDNN/cuBLAS backward passes), a resumed run's
#: per-epoch training loss stays within this relative tolerance of the uninterrupted run's.
NONDETERMINISTIC_LOSS_RTOL = 0.05


def _trainer(name, dataset, device="cuda", seed=0, overrides=None, **kwargs):
    cls = get_method(name)
    own = set(cls.Params.__dataclass_fields__)
    config, params = resolve(cls, {**FAST, **{k: v for k, v in FAST_METHOD.items() if k in own},
                                   **(overrides or {})})
    return Trainer(cls(params), config, dataset, seed=seed, device=device, **kwargs)


def _losses(result):
    return [h["train_loss"] for h in result.history]


@pytest.fixture
def dataset():
    return make_dataset((40, 12, 6))


@pytest.fixture
def fp16_only(monkeypatch):
    """Make the GPU look like one without bf16, so the trainer autocasts to fp16 with a GradScaler."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)


@pytest.mark.parametrize("name", method_names())
def test_every_method_trains_with_bf16_autocast(name, dataset):
    trainer = _trainer(name, dataset)
    assert trainer.precision == "bfloat16" and not trainer.scaler.is_enabled()
    assert next(trainer.model.parameters()).is_cuda and trainer.data.train.images.is_cuda
    result = trainer.fit()
    assert len(result.history) == FAST["epochs"]
    assert all(torch.isfinite(torch.tensor(_losses(result))))


@pytest.mark.parametrize("name", method_names())
def test_every_method_trains_with_fp16_autocast_and_grad_scaler(name, dataset, fp16_only):
    trainer = _trainer(name, dataset)
    assert trainer.precision == "float16" and trainer.scaler.is_enabled()
    result = trainer.fit()
    assert all(torch.isfinite(torch.tensor(_losses(result))))
    assert trainer.scaler.get_scale() > 0


def test_sam_with_the_spinal_head_trains(dataset):
    result = _trainer("erm", dataset, overrides={"optimizer": "sam", "head": "spinal", "lr": 0.05,
                                                 "epochs": 6}).fit()
    assert result.test["balanced_acc"] > 0.5


def _interrupted_then_resumed(name, dataset, directory, stop_after, overrides, device_after="cuda"):
    class Stop(Exception):
        pass

    def interrupt(trainer, record):
        if record["epoch"] == stop_after:
            raise Stop

    with pytest.raises(Stop):
        _trainer(name, dataset, overrides=overrides, checkpoint_dir=directory, callback=interrupt).fit()
    resumed = _trainer(name, dataset, device=device_after, overrides=overrides)
    assert resumed.load_checkpoint(directory) and resumed.epoch == stop_after
    return resumed.fit()


@pytest.mark.parametrize("name", method_names())
def test_resume_equals_an_uninterrupted_run_exactly_under_deterministic_algorithms(name, dataset, tmp_path):
    overrides = {"deterministic": True}
    straight = _trainer(name, dataset, overrides=overrides).fit()
    again = _trainer(name, dataset, overrides=overrides).fit()
    assert _losses(again) == _losses(straight)  # repeatable at all
    resumed = _interrupted_then_resumed(name, dataset, tmp_path, FAST["epochs"] // 2, overrides)
    assert _losses(resumed) == _losses(straight)
    assert resumed.test == straight.test


def test_resume_without_deterministic_algorithms_stays_within_the_stated_tolerance(dataset, tmp_path):
    straight = _trainer("erm", dataset).fit()
    resumed = _interrupted_then_resumed("erm", dataset, tmp_path, FAST["epochs"] // 2, {})
    assert _losses(resumed) == pytest.approx(_losses(straight), rel=NONDETERMINISTIC_LOSS_RTOL)


@pytest.mark.parametrize("name", ["erm", "learn2mix", "mdgan"])
def test_a_gpu_checkpoint_resumes_on_the_cpu(name, dataset, tmp_path):
    result = _interrupted_then_resumed(name, dataset, tmp_path, FAST["epochs"] // 2, {}, device_after="cpu")
    assert len(result.history) == FAST["epochs"]
    assert all(torch.isfinite(torch.tensor(_losses(result))))


@pytest.mark.parametrize("name", ["erm", "learn2mix", "mdgan"])
def test_a_cpu_checkpoint_resumes_on_the_gpu(name, dataset, tmp_path):
    class Stop(Exception):
        pass

    def interrupt(trainer, record):
        if record["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        _trainer(name, dataset, device="cpu", checkpoint_dir=tmp_path, callback=interrupt).fit()
    resumed = _trainer(name, dataset)
    assert resumed.load_checkpoint(tmp_path) and resumed.epoch == 2
    weights = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
    assert all(torch.equal(v.cpu(), weights[k]) for k, v in resumed.model.state_dict().items())
    result = resumed.fit()
    assert len(result.history) == FAST["epochs"]


def test_model_resets_and_gan_construction_leave_the_cuda_generator_alone(dataset):
    trainer = _trainer("imet", dataset)
    state = torch.cuda.get_rng_state()
    trainer._new_model(phase_index=1)
    FastGAN(1, 28, device="cuda", seed=5)
    assert torch.equal(torch.cuda.get_rng_state(), state)


def test_fastgan_trains_and_generates_on_the_gpu_repeatably():
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, device="cuda")
    samples = []
    for _ in range(2):
        with deterministic_algorithms(True):
            gan = FastGAN(1, 28, device="cuda", seed=3)
            losses = gan.fit(images, steps=20, batch_size=16)
            samples.append(gan.generate(40))
        assert torch.isfinite(losses.discriminator).all() and torch.isfinite(losses.generator).all()
    assert samples[0].is_cuda and samples[0].dtype == torch.uint8 and samples[0].shape == (40, 1, 28, 28)
    assert torch.equal(samples[0], samples[1])


def test_evaluation_in_large_batches_matches_small_batches():
    big = make_dataset((3000, 3000), eval_per_class=3000, size=28)
    trainer = _trainer("erm", big, overrides={"epochs": 1, "eval_batch_size": 100_000, "amp": False})
    trainer.run_epoch()
    large = trainer.predict_probs(trainer.data.val.images)
    trainer.config.eval_batch_size = 256
    small = trainer.predict_probs(trainer.data.val.images)
    assert large.shape == (6000, 2)
    torch.testing.assert_close(large, small, atol=2e-3, rtol=0)  # (TF32) kernels may differ with the batch size


@pytest.mark.parametrize("name", ["erm", "mdgan"])
def test_batches_streamed_from_host_memory_equal_device_resident_ones(name, dataset):
    overrides = {"deterministic": True}
    streamed = _trainer(name, dataset, overrides=overrides, data_limit=0)
    assert streamed.streamed and not streamed.data.train.images.is_cuda and streamed.data.train.labels.is_cuda
    resident = _trainer(name, dataset, overrides=overrides)
    a, b = streamed.fit(), resident.fit()
    assert _losses(a) == _losses(b) and a.test == b.test


def _synchronisations(trainer):
    """Host synchronisations during one more epoch (training, validation, checkpointless bookkeeping)."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.run_epoch()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.parametrize("name, precision", [(n, "bf16") for n in method_names()] + [("erm", "fp16"), ("low", "fp16")])
def test_no_host_synchronisation_per_batch(name, precision, monkeypatch):
    """The count of synchronisations in an epoch must not grow with its number of batches."""
    if precision == "fp16":
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    data = make_dataset((300, 100, 60), size=16)
    counts = {}
    for batch_size in (128, 16):  # 4 vs 29 batches per epoch
        trainer = _trainer(name, data, overrides={"batch_size": batch_size, "epochs": 6})
        trainer.run_epoch()  # warm-up: lazy initialisation, cuDNN set-up
        counts[batch_size] = _synchronisations(trainer)
    assert counts[16] == counts[128], counts


@pytest.mark.parametrize("name, overrides", [("learn2mix", {"update_every": "batch"}),
                                             ("low", {"lam_unit": "authors_code", "lam": 0.1})])
def test_no_host_synchronisation_per_batch_in_method_variants(name, overrides):
    """learn2mix's per-batch alpha update and batch composition, LOW's authors'-code unit: on the device."""
    data = make_dataset((300, 100, 60), size=16)
    counts = {}
    for batch_size in (128, 16):
        trainer = _trainer(name, data, overrides={**overrides, "batch_size": batch_size, "epochs": 6})
        trainer.run_epoch()
        counts[batch_size] = _synchronisations(trainer)
    assert counts[16] == counts[128], counts
