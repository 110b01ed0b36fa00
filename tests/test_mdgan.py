"""mdgan: worst-class selection, the augmented set, the spinal head, SAM, end to end, resume."""

import math

import pytest
import torch

from conftest import make_dataset
from focustune import params
from focustune.config import resolve
from focustune.errors import ConfigError
from focustune.methods import RunContext, get_method
from focustune.methods.mdgan import CHECK_SAMPLES, MDGAN, class_accuracies, worst_classes
from focustune.methods.mdgan.fastgan import FastGAN
from focustune.models import SpinalHead, build_model
from focustune.models.spinal_head import ProgressiveSpinalHead
from focustune.spaces import load_space
from focustune.training import Trainer

TINY_GAN = {"gan_steps": 2, "gan_batch_size": 4}


def _trainer(dataset, seed=0, **overrides):
    settings = {"epochs": 4, "finetune_epochs": 2, "batch_size": 16, "lr": 3e-3, "optimizer": "adam",
                **TINY_GAN, **overrides}
    config, params = resolve(MDGAN, settings)
    return Trainer(MDGAN(params), config, dataset, seed=seed)


def _predictions_with_accuracies(correct: list[int], total: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and predictions where class c has ``correct[c]`` of ``total[c]`` right (mistakes -> c+1)."""
    k = len(total)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(total)])
    predictions = labels.clone()
    start = 0
    for c, (right, n) in enumerate(zip(correct, total)):
        predictions[start + right:start + n] = (c + 1) % k
        start += n
    return labels, predictions


def test_class_accuracies_are_per_class_recall():
    labels, predictions = _predictions_with_accuracies([9, 2, 5, 2], [10, 10, 10, 10])
    acc = class_accuracies(predictions, labels, 5)
    assert torch.allclose(acc[:4], torch.tensor([0.9, 0.2, 0.5, 0.2]))
    assert math.isnan(acc[4])  # no samples


def test_worst_classes_lowest_accuracy_first_ties_by_index():
    acc = torch.tensor([0.9, 0.2, 0.5, 0.2, float("nan")])
    assert worst_classes(acc, 1) == [1]
    assert worst_classes(acc, 3) == [1, 3, 2]
    assert worst_classes(acc, 10) == [1, 3, 2, 0]  # the class without samples is never chosen
    assert worst_classes(acc, 2, eligible=torch.tensor([True, False, True, True, True])) == [3, 2]


def _fake_run(dataset, probs: torch.Tensor) -> RunContext:
    config, _ = resolve(MDGAN, {})
    model = build_model("small_cnn", dataset.channels, dataset.num_classes, dataset.image_size)
    return RunContext(config=config, num_classes=dataset.num_classes, device=torch.device("cpu"),
                      generator=torch.Generator().manual_seed(0), seed=0, train=dataset.train,
                      val=dataset.val, model=model, predict=lambda images: probs, log=lambda m: None)


def test_start_of_finetuning_augments_the_worst_classes_by_the_share():
    dataset = make_dataset((40, 12, 6, 20), eval_per_class=10)
    val_labels = dataset.val.labels
    # Known validation accuracies per class: 0.8, 0.3, 1.0, 0.1 -> worst two are 3 and 1.
    correct = {0: 8, 1: 3, 2: 10, 3: 1}
    predictions = val_labels.clone()
    for c, right in correct.items():
        members = torch.nonzero(val_labels == c).flatten()
        predictions[members[right:]] = (c + 2) % 4
    probs = torch.nn.functional.one_hot(predictions, 4).float()

    _, params = resolve(MDGAN, {"gan_classes": 2, "generated_share": 0.5, **TINY_GAN})
    method = MDGAN(params)
    run = _fake_run(dataset, probs)
    finetune = method.phases(run.config)[1]
    method.start_phase(finetune, 1, run)

    assert method.classes == [3, 1]
    assert method.accuracy_at_selection == pytest.approx([0.1, 0.3])
    data = method.training_data(run)
    counts = dataset.train.class_counts(4).tolist()
    extra = {3: round(0.5 * counts[3]), 1: round(0.5 * counts[1])}
    assert len(data) == len(dataset.train) + sum(extra.values())
    assert torch.equal(data.images[:len(dataset.train)], dataset.train.images)
    added = data.labels[len(dataset.train):]
    assert torch.bincount(added, minlength=4).tolist() == [0, extra[1], 0, extra[3]]
    assert data.images.dtype == torch.uint8 and data.images.shape[1:] == dataset.train.images.shape[1:]
    assert set(method.sample_grids) == {1, 3} and all(g.dtype == torch.uint8 for g in method.sample_grids.values())


def test_real_image_control_adds_the_same_count_of_the_class_own_images_and_trains_no_gan(monkeypatch):
    dataset = make_dataset((40, 12, 6, 20), eval_per_class=10)
    probs = torch.nn.functional.one_hot(torch.zeros_like(dataset.val.labels), 4).float()  # class 1..3 all wrong
    monkeypatch.setattr(FastGAN, "fit", lambda *a, **k: pytest.fail("the real-image control trains no GAN"))
    _, params = resolve(MDGAN, {"gan_classes": 1, "generated_share": 0.5, "augment_with": "real", **TINY_GAN})
    method = MDGAN(params)
    run = _fake_run(dataset, probs)
    method.start_phase(method.phases(run.config)[1], 1, run)
    data = method.training_data(run)
    added, labels = data.images[len(dataset.train):], data.labels[len(dataset.train):]
    assert method.classes == [1] and len(added) == round(0.5 * 12) and set(labels.tolist()) == {1}
    own = dataset.train.images[dataset.train.labels == 1].flatten(1)
    assert all((own == image.flatten()).all(dim=1).any() for image in added)  # each one of the class's real images


@pytest.mark.parametrize("settings, steps", [({"gan_steps": 7}, 7), ({"gan_steps": 7, "gan_epochs": 2.0}, 3),
                                             ({"gan_epochs": 0.01}, 1)])
def test_the_gan_budget_is_steps_or_passes_over_the_class(settings, steps, monkeypatch):
    dataset = make_dataset((40, 12, 6, 20), eval_per_class=10)  # class 2 (6 images) is the worst below
    asked = []
    fit = FastGAN.fit
    monkeypatch.setattr(FastGAN, "fit", lambda gan, images, n, batch: asked.append(n) or fit(gan, images, 1, batch))
    _, params = resolve(MDGAN, {"gan_classes": 1, "gan_batch_size": 4, **settings})
    method = MDGAN(params)
    val = dataset.val.labels.clone()
    val[val == 2] = 0
    run = _fake_run(dataset, torch.nn.functional.one_hot(val, 4).float())
    method.start_phase(method.phases(run.config)[1], 1, run)
    assert method.classes == [2] and asked == [steps]  # 2 passes over 6 images at batch 4: ceil(12 / 4) = 3
    assert method.end_epoch(None, run)["gan_steps"] == [steps]


def test_the_pretrained_classifier_labels_generated_and_real_images_of_each_augmented_class(monkeypatch):
    dataset = make_dataset((40, 12, 6, 20), eval_per_class=10)
    k = 4

    def generate(gan, n, batch_size=256):  # a quarter of the images carry the GAN's class in their first pixel
        images = torch.zeros(n, 1, 12, 12, dtype=torch.uint8)
        images[n // 4:, 0, 0, 0] = (gan.seed_class + 1) % k
        images[:n // 4, 0, 0, 0] = gan.seed_class
        return images

    def build(channels, size, device, seed):
        gan = FastGAN(channels, size, device=device, seed=seed)
        gan.seed_class = seed % 1009
        return gan

    monkeypatch.setattr(FastGAN, "generate", generate)
    monkeypatch.setattr("focustune.methods.mdgan.stored.FastGAN", build)
    _, params = resolve(MDGAN, {"gan_classes": 2, **TINY_GAN})
    method = MDGAN(params)
    val = dataset.val.labels.clone()
    val[(val == 1) | (val == 3)] = 0  # classes 1 and 3 are the worst
    run = _fake_run(dataset, torch.nn.functional.one_hot(val, k).float())
    run.val_probs = run.predict(dataset.val.images)  # selection reads these; the classifier below labels the rest
    run.predict = lambda images: torch.nn.functional.one_hot(images[:, 0, 0, 0].long() % k, k).float()
    method.start_phase(method.phases(run.config)[1], 1, run)
    logged = method.end_epoch(None, run)
    assert logged["classes"] == [1, 3]
    assert logged["generated_as_class"] == [(CHECK_SAMPLES // 4) / CHECK_SAMPLES] * 2
    real = [float(((dataset.train.images[dataset.train.labels == c][:, 0, 0, 0].long() % k) == c).float().mean())
            for c in (1, 3)]
    assert logged["real_as_class"] == pytest.approx(real)


def test_probe_split_picks_the_worst_classes_instead_of_validation():
    dataset = make_dataset((40, 12, 6, 20), eval_per_class=10)
    rest, probe = dataset.train.stratified_holdout(0.5, 4, seed=0)
    val_probs = torch.nn.functional.one_hot(dataset.val.labels, 4).float()  # validation: all right
    wrong = probe.labels.clone()
    wrong[probe.labels == 2] = 0  # on the probe split, class 2 is always missed
    probe_probs = torch.nn.functional.one_hot(wrong, 4).float()
    _, params = resolve(MDGAN, {"gan_classes": 1, "selection_split": "probe", **TINY_GAN})
    method = MDGAN(params)
    run = _fake_run(dataset, val_probs)
    run.train, run.probe = rest, probe
    run.predict = lambda images: probe_probs if images is probe.images else val_probs
    method.start_phase(method.phases(run.config)[1], 1, run)
    assert method.uses_probe() and method.classes == [2] and method.accuracy_at_selection == [0.0]


def test_trainer_holds_the_probe_split_out_of_training(tiny_dataset):
    trainer = _trainer(tiny_dataset, selection_split="probe", probe_fraction=0.25)
    probe_counts = [round(0.25 * n) for n in (40, 12, 6)]
    assert trainer.probe.class_counts(3).tolist() == probe_counts
    assert len(trainer.data.train) + len(trainer.probe) == len(tiny_dataset.train)
    result = trainer.fit()
    assert result.history[-1]["method"]["selection_split"] == "probe"
    assert result.data["probe_class_counts"] == probe_counts
    assert result.data["train_class_counts"] == [n - p for n, p in zip((40, 12, 6), probe_counts)]


@pytest.mark.parametrize("size", [136, 224])
def test_image_sizes_fastgan_cannot_generate_are_refused_before_training(size, monkeypatch):
    monkeypatch.setattr(Trainer, "run_epoch", lambda self: pytest.fail("no epoch may run"))
    with pytest.raises(ConfigError, match="at most 128 px"):
        _trainer(make_dataset((4, 4), eval_per_class=2, size=size))


def test_phases_split_the_epoch_budget():
    method = MDGAN(resolve(MDGAN, {"finetune_epochs": 5})[1])
    pretrain, finetune = method.phases(resolve(MDGAN, {"epochs": 20})[0])
    assert (pretrain.name, pretrain.epochs, finetune.name, finetune.epochs) == ("pretrain", 15, "finetune", 5)
    assert finetune.new_optimizer and not finetune.reset_model
    assert [p.epochs for p in method.phases(resolve(MDGAN, {"epochs": 3})[0])] == [1, 2]
    with pytest.raises(ConfigError, match="epochs >= 2"):
        method.phases(resolve(MDGAN, {"epochs": 1})[0])


def test_defaults_prefer_sam_and_the_spinal_head_but_user_settings_win():
    config, _ = resolve(MDGAN, {})
    assert (config.optimizer, config.head, config.lr) == ("sam", "spinal", 0.05)
    config, _ = resolve(MDGAN, {"optimizer": "adam", "head": "linear", "lr": 1e-3})
    assert (config.optimizer, config.head, config.lr) == ("adam", "linear", 1e-3)


def test_search_space_is_valid_for_mdgan():
    space = load_space(get_method("mdgan"))
    assert {"gan_classes", "generated_share", "gan_steps", "finetune_epochs", "sam_rho", "head",
            "lr", "weight_decay", "batch_size"} <= set(space.dimensions)
    assert "spinal_selu" in space.dimensions["head"].values


@pytest.mark.parametrize("feature_dim", [32, 33, 512])
def test_spinal_head_output_shape(feature_dim):
    head = SpinalHead(feature_dim, 3)
    assert head(torch.randn(5, feature_dim)).shape == (5, 3)


def test_spinal_head_first_layer_sees_only_the_first_half():
    head = SpinalHead(8, 2, layers=2, width=4)
    x = torch.randn(3, 8)
    changed = x.clone()
    changed[:, 4:] += 1.0
    assert torch.equal(head.chain[0](x[:, :4]), head.chain[0](changed[:, :4]))
    assert head.chain[0][0].in_features == 4 and head.chain[1][0].in_features == 4 + 4
    assert head.output.in_features == 2 * 4
    assert not torch.equal(head(x), head(changed))


def test_progressive_spinal_selu_head_feeds_all_features_and_earlier_outputs_to_every_layer():
    head = ProgressiveSpinalHead(8, 3, layers=3, width=4).eval()
    assert [layer[0].in_features for layer in head.chain] == [8, 12, 16] and head.output.in_features == 8 + 3 * 4
    assert all(isinstance(layer[1], torch.nn.SELU) for layer in head.chain)
    assert not any(isinstance(m, torch.nn.ReLU) for m in head.modules())
    x = torch.randn(3, 8)
    changed = x.clone()
    changed[:, 4:] += 1.0  # the second half of the features: ours (spinal) hides it from the first layer
    assert not torch.equal(head.chain[0](x), head.chain[0](changed))
    assert head(x).shape == (3, 3)
    assert isinstance(build_model("small_cnn", 1, 3, 12, head="spinal_selu").head, ProgressiveSpinalHead)


def test_spinal_head_is_a_model_option():
    model = build_model("small_cnn", 1, 3, 12, head="spinal")
    assert isinstance(model.head, SpinalHead)


def test_sam_trains_through_the_trainer(tiny_dataset):
    erm = get_method("erm")

    def fit(optimizer):
        config, params = resolve(erm, {"optimizer": optimizer, "epochs": 6, "batch_size": 8, "lr": 0.05})
        trainer = Trainer(erm(params), config, tiny_dataset, seed=0)
        return trainer, trainer.fit()

    sam, result = fit("sam")
    assert type(sam.optimizer).__name__ == "SAM"
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.val["balanced_acc"] > 0.6
    sgd, _ = fit("sgd")  # the same base optimiser without the sharpness-aware perturbation
    assert any(not torch.equal(a, b) for a, b in zip(sam.model.parameters(), sgd.model.parameters()))


def test_mdgan_trains_end_to_end_on_a_tiny_imbalanced_set(tiny_dataset):
    # Adam and a linear head learn this set within a few epochs (SGD-based SAM and the deeper
    # spinal head need more steps; both are tested on their own).
    trainer = _trainer(tiny_dataset, gan_classes=2, head="linear", lr=1e-2)
    result = trainer.fit()
    assert [h["phase"] for h in result.history] == ["pretrain"] * 2 + ["finetune"] * 2
    assert all("method" not in h for h in result.history[:2])
    logged = result.history[-1]["method"]
    assert len(logged["classes"]) == 2 and logged["classes"] == trainer.method.classes
    assert len(logged["acc_at_selection"]) == len(logged["val_acc"]) == 2
    assert all(0.0 <= a <= 1.0 for a in logged["val_acc"] + logged["acc_at_selection"])
    assert logged["selection_split"] == "val" and trainer.probe is None
    assert result.best_phase == result.history[result.best_epoch - 1]["phase"]
    assert logged["generated"] == sum(round(0.5 * n) for c, n in enumerate([40, 12, 6]) if c in logged["classes"])
    assert all(math.isfinite(v) for losses in logged["gan_losses"] for v in losses.values())
    assert 0.0 < logged["gan_time_share"] <= 1.0
    assert result.test["balanced_acc"] > 0.6  # chance is 1/3


def test_checkpoint_mid_finetune_restores_the_augmented_set_and_continues_identically(tiny_dataset, tmp_path,
                                                                                       monkeypatch):
    settings = {"epochs": 5, "finetune_epochs": 3, "optimizer": "sam", "lr": 0.05}
    straight = _trainer(tiny_dataset, **settings)
    expected = straight.fit()

    class Interrupt(Exception):
        pass

    def stop_after_first_finetune_epoch(trainer, record):
        if record["epoch"] == 3:
            raise Interrupt

    first = _trainer(tiny_dataset, **settings)
    first.checkpoint_dir, first.callback = tmp_path, stop_after_first_finetune_epoch
    with pytest.raises(Interrupt):
        first.fit()

    monkeypatch.setattr("focustune.methods.mdgan.stored.FastGAN.fit",
                        lambda *a, **k: pytest.fail("a resumed run must not retrain the GANs"))
    resumed = _trainer(tiny_dataset, **settings)
    assert resumed.load_checkpoint(tmp_path)
    assert torch.equal(resumed.method.generated.images, straight.method.generated.images)
    assert torch.equal(resumed.method.generated.labels, straight.method.generated.labels)
    result = resumed.fit()
    assert [h["val"] for h in result.history] == [h["val"] for h in expected.history]
    assert [h["train_loss"] for h in result.history] == [h["train_loss"] for h in expected.history]
    assert all(torch.equal(a, b) for a, b in zip(resumed.model.state_dict().values(),
                                                 straight.model.state_dict().values()))


def test_help_names_the_papers_head_and_gan_budget():
    rows = {row["name"]: row["help"] for row in params.describe(MDGAN.Params)}
    assert "head=spinal_selu" in MDGAN.summary and "50000" in rows["gan_steps"] and "gan_steps" in rows["gan_epochs"]
