"""The small-image FastGAN: shapes and ranges, SLE, DiffAugment, one training step, EMA, grids."""

import pytest
import torch

from focustune.methods.mdgan.fastgan import (
    Discriminator,
    FastGAN,
    Generator,
    SkipLayerExcitation,
    augment_cutout,
    augment_translation,
    crop_to,
    diff_augment,
    internal_size,
    pad_to,
    reconstruction_targets,
    sample_grid,
)


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_generated_images_have_the_data_shape_and_uint8_range(size, channels):
    gan = FastGAN(channels, size, seed=0)
    raw = gan.generator(torch.randn(4, gan.generator.latent_dim))
    assert raw.shape == (4, channels, internal_size(size), internal_size(size))
    assert raw.min() >= -1 and raw.max() <= 1
    images = gan.generate(5)
    assert images.shape == (5, channels, size, size)
    assert images.dtype == torch.uint8
    assert int(images.max()) > int(images.min())  # not a constant image


def test_working_resolution_is_the_next_power_of_two_at_least_16():
    assert [internal_size(s) for s in (8, 12, 16, 28, 32, 33, 64)] == [16, 16, 16, 32, 32, 64, 64]


def test_padding_is_undone_by_cropping():
    x = torch.randn(3, 2, 28, 28)
    padded = pad_to(x, 32)
    assert padded.shape[-1] == 32
    assert torch.equal(crop_to(padded, 28), x)
    assert torch.equal(padded[..., 0, 2:30], x[..., 0, :])  # edges replicated


def test_skip_layer_excitation_gates_channels_of_the_high_resolution_features():
    sle = SkipLayerExcitation(low_channels=8, high_channels=6)
    low, high = torch.randn(2, 8, 4, 4), torch.rand(2, 6, 16, 16) + 0.5
    out = sle(low, high)
    assert out.shape == high.shape
    gate = out / high
    assert (gate > 0).all() and (gate < 1).all()
    assert torch.allclose(gate, gate[:, :, :1, :1].expand_as(gate), atol=1e-6)  # one factor per channel


def test_discriminator_reconstructs_whole_image_and_a_quarter():
    d = Discriminator(3, 32)
    x = torch.randn(5, 3, 32, 32)
    logits, whole, part = d.forward_with_reconstruction(x, quarter=3)
    targets = reconstruction_targets(x, quarter=3)
    assert logits.shape == (5,)
    assert whole.shape == part.shape == targets[0].shape == targets[1].shape == (5, 3, 16, 16)
    assert torch.allclose(targets[1], x[..., 16:, 16:].reshape(5, 3, 16, 16))


@pytest.mark.parametrize("channels", [1, 3])
def test_diff_augment_is_differentiable_and_keeps_shape(channels):
    x = torch.randn(6, channels, 16, 16, requires_grad=True)
    out = diff_augment(x, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_diff_augment_is_reproducible_from_its_generator():
    x = torch.randn(4, 3, 16, 16)
    a = diff_augment(x, generator=torch.Generator().manual_seed(1))
    b = diff_augment(x, generator=torch.Generator().manual_seed(1))
    c = diff_augment(x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_translation_moves_whole_pixels_and_fills_with_zeros():
    x = torch.arange(1, 1 + 8 * 16 * 16, dtype=torch.float32).reshape(8, 1, 16, 16)
    out = augment_translation(x, generator=torch.Generator().manual_seed(0))
    values = set(x.flatten().tolist()) | {0.0}
    assert set(out.round().flatten().tolist()) <= values
    assert torch.allclose(out, out.round(), atol=1e-3)
    assert not torch.equal(out, x)


def test_cutout_zeroes_one_square_of_half_the_size_at_most():
    out = augment_cutout(torch.ones(32, 1, 16, 16), generator=torch.Generator().manual_seed(0))
    zeros = (out == 0).flatten(1).sum(1)
    assert (zeros > 0).all() and (zeros <= 8 * 8).all()
    assert (zeros == 64).any()  # fully inside for some images


def test_a_training_step_updates_both_networks_and_ema_lags_behind():
    gan = FastGAN(1, 12, seed=0)
    images = torch.randint(0, 256, (10, 1, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    g_before = [p.detach().clone() for p in gan.generator.parameters()]
    d_before = [p.detach().clone() for p in gan.discriminator.parameters()]
    losses = gan.fit(images, steps=3, batch_size=4)
    assert losses.discriminator.shape == losses.generator.shape == (3,)
    assert torch.isfinite(losses.discriminator).all() and torch.isfinite(losses.generator).all()
    # Every weight moves (a bias can stay: the hinge loss ignores the logit's offset while both
    # hinges are active, so the last bias gets an exactly zero gradient early on).
    assert all(not torch.equal(a, p) for a, p in zip(g_before, gan.generator.parameters()) if p.ndim > 1)
    assert all(not torch.equal(a, p) for a, p in zip(d_before, gan.discriminator.parameters()) if p.ndim > 1)
    ema = list(gan.generator_ema.parameters())
    assert any(not torch.equal(e, p) for e, p in zip(ema, gan.generator.parameters()))
    assert any(not torch.equal(e, a) for e, a in zip(ema, g_before))


def test_training_is_seeded_and_leaves_the_global_rng_alone():
    images = torch.randint(0, 256, (10, 3, 12, 12), dtype=torch.uint8)
    rng_state = torch.get_rng_state()
    runs = []
    for _ in range(2):
        gan = FastGAN(3, 12, seed=7)
        gan.fit(images, steps=2, batch_size=4)
        runs.append(gan.generate(6))
    assert torch.equal(runs[0], runs[1])
    assert torch.equal(torch.get_rng_state(), rng_state)


def test_sample_grid_tiles_images():
    images = torch.randint(0, 256, (4, 1, 12, 12), dtype=torch.uint8)
    grid = sample_grid(images, columns=8, padding=2)
    assert grid.dtype == torch.uint8
    assert grid.shape == (3, 12 + 4, 4 * (12 + 2) + 2)
    assert torch.equal(grid[0, 2:14, 2:14], images[0, 0])


def test_generator_has_one_sle_per_resolution_from_16():
    assert sorted(Generator(1, 64).excitations) == ["16", "32", "64"]
    assert sorted(Generator(1, 16).excitations) == ["16"]


def test_construction_reseeds_only_the_cpu_generator(monkeypatch):
    """FastGAN seeds its weights from its own seed without reseeding (and so resetting) the CUDA generators."""
    calls = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(seed))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: calls.append(seed))
    rng_state = torch.get_rng_state()
    first, again = FastGAN(1, 12, seed=3), FastGAN(1, 12, seed=3)
    assert calls == []
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert all(torch.equal(a, b) for a, b in zip(first.generator.parameters(), again.generator.parameters()))


def test_translation_equals_the_shift_it_draws():
    x = torch.randn(6, 2, 16, 16, requires_grad=True)
    generator = torch.Generator().manual_seed(5)
    out = augment_translation(x, generator=generator)
    generator.manual_seed(5)
    limit = round(16 * 0.125)
    shift_x = torch.randint(-limit, limit + 1, (6,), generator=generator)
    shift_y = torch.randint(-limit, limit + 1, (6,), generator=generator)
    for image, moved, dx, dy in zip(x.detach(), out.detach(), shift_x.tolist(), shift_y.tolist()):
        expected = torch.zeros_like(image)
        expected[:, max(dy, 0):16 + min(dy, 0), max(dx, 0):16 + min(dx, 0)] = \
            image[:, max(-dy, 0):16 - max(dy, 0), max(-dx, 0):16 - max(dx, 0)]
        assert torch.equal(moved, expected)
    out.sum().backward()  # differentiable in x
    assert x.grad is not None
