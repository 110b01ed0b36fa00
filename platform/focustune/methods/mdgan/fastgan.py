"""A light FastGAN (Liu et al., ICLR 2021) for small images: 8 to 128 px, grey or RGB.

Written for class-wise data augmentation of small datasets (28-64 px), where the original
FastGAN (256 px and up, an LPIPS/VGG reconstruction loss) does not fit. What is kept:

* generator: upsampling blocks (nearest x2, conv, BatchNorm, GLU) with skip-layer excitation
  (SLE): the 4x4 features gate the channels of the 16x16 ones, 8x8 gate 32x32, 16x16 gate 64x64;
* discriminator: residual down-sampling blocks (a strided-conv path averaged with an
  average-pool path), spectral norm, hinge loss, and the self-supervised regularisation: two
  small decoders reconstruct the whole image and a random quarter of it from the 8x8 features
  of real images (an L1 pixel loss replaces LPIPS, which needs downloaded VGG weights);
* differentiable augmentation (DiffAugment-style colour, translation and cutout, batched) on
  every image the discriminator sees, real or fake;
* an exponential moving average of the generator's weights, used for sampling.

Images are handled in [-1, 1], as the trainer normalises them (:mod:`focustune.transforms`). Sizes
that are not a power of two (28 px) are padded (edge replication) up to the next power of two, at
least 16: real images are padded, generated ones are cropped to the true size and padded the same
way before the discriminator sees them, so the generator only models the true image area.
:meth:`FastGAN.generate` returns uint8 images.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from focustune.models import AdaptiveAvgPool2d, seeded_init
from focustune.transforms import denormalise, normalise

DEFAULT_POLICY = ("color", "translation", "cutout")
RECONSTRUCTION_SIZE = 16
FEATURE_SIZE = 8  # the discriminator features the decoders reconstruct from


MAX_IMAGE_SIZE = 128


def internal_size(image_size: int) -> int:
    """The power-of-two working resolution for ``image_size`` (at least 16)."""
    if not 1 <= image_size <= MAX_IMAGE_SIZE:
        raise ValueError(f"FastGAN supports images of 1 to {MAX_IMAGE_SIZE} px, got {image_size}")
    return max(16, 2 ** math.ceil(math.log2(image_size)))


def _pad_amounts(size: int, target: int) -> tuple[int, int]:
    before = (target - size) // 2
    return before, target - size - before


def pad_to(x: torch.Tensor, target: int) -> torch.Tensor:
    """Pad square images to ``target`` px by replicating their edges (centred)."""
    before, after = _pad_amounts(x.shape[-1], target)
    if before == after == 0:
        return x
    return F.pad(x, (before, after, before, after), mode="replicate")


def crop_to(x: torch.Tensor, size: int) -> torch.Tensor:
    """The centred ``size`` x ``size`` crop (the inverse of :func:`pad_to`)."""
    before, _ = _pad_amounts(size, x.shape[-1])
    return x[..., before:before + size, before:before + size]


# ---------------------------------------------------------------------- differentiable augmentation
def _uniform(n: int, low: float, high: float, like: torch.Tensor,
             generator: torch.Generator | None) -> torch.Tensor:
    """One uniform factor per image, shaped to broadcast over [N, C, H, W]."""
    u = torch.rand((n, 1, 1, 1), device=like.device, generator=generator, dtype=like.dtype)
    return u * (high - low) + low


def augment_color(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random brightness, saturation (RGB only) and contrast, per image."""
    n = x.shape[0]
    x = x + _uniform(n, -0.5, 0.5, x, generator)
    if x.shape[1] > 1:
        grey = x.mean(dim=1, keepdim=True)
        x = (x - grey) * _uniform(n, 0.0, 2.0, x, generator) + grey
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _uniform(n, 0.5, 1.5, x, generator) + mean


def augment_translation(x: torch.Tensor, ratio: float = 0.125,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image by a random whole number of pixels (up to ``ratio`` of its size), zero fill.

    The shifts are products with per-image shift matrices: exact, and with a deterministic
    backward on CUDA (``grid_sample``'s has none)."""
    n, _, h, w = x.shape
    limit_x, limit_y = round(w * ratio), round(h * ratio)
    shift_x = torch.randint(-limit_x, limit_x + 1, (n,), device=x.device, generator=generator)
    shift_y = torch.randint(-limit_y, limit_y + 1, (n,), device=x.device, generator=generator)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    # out[i, j] = x[i - shift_y, j - shift_x]: rows_from[i, i'] = (i' == i - shift_y), cols_from[j', j] likewise
    rows_from = (rows[None, :, None] - shift_y[:, None, None] == rows[None, None, :]).to(x.dtype)
    cols_from = (cols[None, None, :] - shift_x[:, None, None] == cols[None, :, None]).to(x.dtype)
    return rows_from[:, None] @ x @ cols_from[:, None]


def augment_cutout(x: torch.Tensor, ratio: float = 0.5,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero a random square of ``ratio`` of the image size in each image (it may overhang the border)."""
    n, _, h, w = x.shape
    size_h, size_w = max(1, round(h * ratio)), max(1, round(w * ratio))
    centre = torch.rand(n, 2, device=x.device, generator=generator)
    top = (centre[:, 0] * (h + 1 - size_h % 2)).floor() - size_h // 2
    left = (centre[:, 1] * (w + 1 - size_w % 2)).floor() - size_w // 2
    rows = torch.arange(h, device=x.device)[None, :]
    cols = torch.arange(w, device=x.device)[None, :]
    inside_rows = (rows >= top[:, None]) & (rows < top[:, None] + size_h)
    inside_cols = (cols >= left[:, None]) & (cols < left[:, None] + size_w)
    keep = ~(inside_rows[:, :, None] & inside_cols[:, None, :])
    return x * keep[:, None].to(x.dtype)


def diff_augment(x: torch.Tensor, policy: tuple[str, ...] = DEFAULT_POLICY,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """DiffAugment: the same random transforms for real and fake images, differentiable in ``x``."""
    for name in policy:
        if name == "color":
            x = augment_color(x, generator)
        elif name == "translation":
            x = augment_translation(x, generator=generator)
        elif name == "cutout":
            x = augment_cutout(x, generator=generator)
        else:
            raise ValueError(f"unknown augmentation {name!r}; known: {', '.join(DEFAULT_POLICY)}")
    return x


# ---------------------------------------------------------------------- networks
def _up_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Nearest x2 upsampling, 3x3 conv, BatchNorm, GLU (halves the conv's doubled channels)."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(in_channels, 2 * out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(2 * out_channels), nn.GLU(dim=1),
    )


class SkipLayerExcitation(nn.Module):
    """SLE: a low-resolution feature map gates the channels of a high-resolution one."""

    def __init__(self, low_channels: int, high_channels: int):
        super().__init__()
        self.gate = nn.Sequential(
            AdaptiveAvgPool2d(4), nn.Conv2d(low_channels, high_channels, 4, bias=False), nn.SiLU(),
            nn.Conv2d(high_channels, high_channels, 1, bias=False), nn.Sigmoid(),
        )

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return high * self.gate(low)


def _channels(resolution: int, width: int) -> int:
    """Feature channels at ``resolution``: 4*width at 4 and 8 px, halving per doubling after."""
    return max(8, width * 4 * 8 // max(resolution, 8))


class Generator(nn.Module):
    """Latent vector -> image in [-1, 1] at the power-of-two ``resolution``."""

    def __init__(self, channels: int, resolution: int, latent_dim: int = 64, width: int = 16):
        super().__init__()
        self.latent_dim, self.resolution = latent_dim, resolution
        self.levels = [2 ** k for k in range(2, int(math.log2(resolution)) + 1)]  # 4, 8, ..., resolution
        self.initial = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 2 * _channels(4, width), 4, bias=False),
            nn.BatchNorm2d(2 * _channels(4, width)), nn.GLU(dim=1),
        )
        self.blocks = nn.ModuleDict({
            str(r): _up_block(_channels(r // 2, width), _channels(r, width)) for r in self.levels[1:]})
        self.excitations = nn.ModuleDict({
            str(r): SkipLayerExcitation(_channels(r // 4, width), _channels(r, width))
            for r in self.levels if r >= 16})
        self.to_image = nn.Conv2d(_channels(resolution, width), channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.initial(z[:, :, None, None])
        features = {4: x}
        for r in self.levels[1:]:
            x = self.blocks[str(r)](x)
            if str(r) in self.excitations:
                x = self.excitations[str(r)](features[r // 4], x)
            features[r] = x
        return torch.tanh(self.to_image(x))


class _DownBlock(nn.Module):
    """Halve the resolution: a strided-conv path averaged with an average-pool path."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.main = nn.Sequential(
            spectral_norm(nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False)),
            nn.BatchNorm2d(out_channels), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)),
            nn.BatchNorm2d(out_channels), nn.LeakyReLU(0.2),
        )
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(2), spectral_norm(nn.Conv2d(in_channels, out_channels, 1, bias=False)),
            nn.BatchNorm2d(out_channels), nn.LeakyReLU(0.2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.main(x) + self.shortcut(x)) / 2


def _decoder(in_channels: int, in_size: int, channels: int, width: int) -> nn.Sequential:
    """Decode ``in_size`` features to a RECONSTRUCTION_SIZE image in [-1, 1] (``width`` channels inside)."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 1, bias=False)]
    size = in_size
    while size < RECONSTRUCTION_SIZE:
        size *= 2
        layers.append(_up_block(width, width))
    layers += [nn.Conv2d(width, channels, 3, padding=1), nn.Tanh()]
    return nn.Sequential(*layers)


class Discriminator(nn.Module):
    """Image -> one real/fake logit; on real images also the two self-supervised reconstructions."""

    def __init__(self, channels: int, resolution: int, width: int = 16):
        super().__init__()
        self.resolution = resolution
        self.stem = nn.Sequential(spectral_norm(nn.Conv2d(channels, _channels(resolution, width), 3, padding=1)),
                                  nn.LeakyReLU(0.2))
        levels = [resolution // 2 ** k for k in range(int(math.log2(resolution // FEATURE_SIZE)) + 1)]
        self.down = nn.Sequential(*[_DownBlock(_channels(r, width), _channels(r // 2, width))
                                    for r in levels[:-1]])
        feature_channels = _channels(FEATURE_SIZE, width)
        self.head = nn.Sequential(
            _DownBlock(feature_channels, _channels(4, width)),
            spectral_norm(nn.Conv2d(_channels(4, width), 1, 4)),
        )
        self.decode_whole = _decoder(feature_channels, FEATURE_SIZE, channels, width)
        self.decode_part = _decoder(feature_channels, FEATURE_SIZE // 2, channels, width)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 8x8 feature map."""
        return self.down(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).flatten()

    def forward_with_reconstruction(self, x: torch.Tensor, quarter: int
                                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits plus reconstructions of the whole image and of quarter ``quarter`` (0-3, row-major)."""
        features = self.features(x)
        logits = self.head(features).flatten()
        half = FEATURE_SIZE // 2
        row, col = divmod(quarter, 2)
        part = features[:, :, row * half:(row + 1) * half, col * half:(col + 1) * half]
        return logits, self.decode_whole(features), self.decode_part(part)


def reconstruction_targets(x: torch.Tensor, quarter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole image and its quarter ``quarter``, both resized to RECONSTRUCTION_SIZE."""
    half = x.shape[-1] // 2
    row, col = divmod(quarter, 2)
    part = x[..., row * half:(row + 1) * half, col * half:(col + 1) * half]
    return _resize(x, RECONSTRUCTION_SIZE), _resize(part, RECONSTRUCTION_SIZE)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Area averaging to shrink, bilinear to enlarge."""
    return F.interpolate(x, size=(size, size), mode="area" if x.shape[-1] >= size else "bilinear")


# ---------------------------------------------------------------------- training
@dataclass
class GANLosses:
    """Per-step discriminator and generator losses of one :meth:`FastGAN.fit` (device tensors)."""

    discriminator: torch.Tensor
    generator: torch.Tensor

    def summary(self) -> dict[str, float]:
        """Mean over all steps and over the last tenth of steps ("final"), as plain floats."""
        tail = max(1, len(self.discriminator) // 10)
        d, g = self.discriminator, self.generator
        return {"d_mean": float(d.mean()), "g_mean": float(g.mean()),
                "d_final": float(d[-tail:].mean()), "g_final": float(g[-tail:].mean())}


class FastGAN:
    """One generator/discriminator pair with its optimisers, trained on one set of images.

    All randomness (weight initialisation, latents, batches, augmentation) comes from ``seed``;
    the global RNG is left untouched, so training a GAN inside a run does not shift the run's
    own random streams.
    """

    def __init__(self, channels: int, image_size: int, *, device: torch.device | str = "cpu", seed: int = 0,
                 latent_dim: int = 64, width: int = 16, lr: float = 2e-4, ema_decay: float = 0.999,
                 policy: tuple[str, ...] = DEFAULT_POLICY):
        self.channels, self.image_size = channels, image_size
        self.resolution = internal_size(image_size)
        self.device = torch.device(device)
        self.ema_decay, self.policy = ema_decay, policy
        #: What the GAN's training depends on besides its data, steps, batch size and seed.
        self.settings = {"latent_dim": latent_dim, "width": width, "lr": lr, "ema_decay": ema_decay,
                         "policy": list(policy), "resolution": self.resolution}
        with seeded_init(seed):
            self.generator = Generator(channels, self.resolution, latent_dim, width).to(self.device)
            self.discriminator = Discriminator(channels, self.resolution, width).to(self.device)
        self.generator_ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.optimizer_g = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=(0.5, 0.999))
        self.optimizer_d = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
        self.rng = torch.Generator(device=self.device).manual_seed(seed)
        self.quarters = random.Random(seed)
        self.steps_done = 0

    def _latents(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.generator.latent_dim, device=self.device, generator=self.rng)

    def _as_discriminator_input(self, generated: torch.Tensor) -> torch.Tensor:
        return pad_to(crop_to(generated, self.image_size), self.resolution)

    def train_step(self, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One discriminator and one generator update on ``real`` (float [-1, 1], true size).

        Returns the detached (discriminator, generator) losses as device tensors.
        """
        real = pad_to(real, self.resolution)
        fake = self._as_discriminator_input(self.generator(self._latents(real.shape[0])))
        quarter = self.quarters.randrange(4)

        augmented_real = diff_augment(real, self.policy, self.rng)
        logits_real, whole, part = self.discriminator.forward_with_reconstruction(augmented_real, quarter)
        target_whole, target_part = reconstruction_targets(augmented_real, quarter)
        logits_fake = self.discriminator(diff_augment(fake.detach(), self.policy, self.rng))
        loss_d = (F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean()
                  + F.l1_loss(whole, target_whole) + F.l1_loss(part, target_part))
        self.optimizer_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.optimizer_d.step()

        self.discriminator.requires_grad_(False)  # the generator step needs no discriminator gradients
        loss_g = -self.discriminator(diff_augment(fake, self.policy, self.rng)).mean()
        self.optimizer_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.optimizer_g.step()
        self.discriminator.requires_grad_(True)
        self._update_ema()
        self.steps_done += 1
        return loss_d.detach(), loss_g.detach()

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.ema_decay, (1 + self.steps_done) / (10 + self.steps_done))  # fast warm-up
        for ema, raw in zip(self.generator_ema.parameters(), self.generator.parameters()):
            ema.lerp_(raw, 1.0 - decay)

    def fit(self, images: torch.Tensor, steps: int, batch_size: int) -> GANLosses:
        """Train for ``steps`` steps on uint8 ``images`` [N, C, H, W] (batches drawn with replacement)."""
        real = normalise(images.to(self.device))
        self.generator.train()
        self.discriminator.train()
        losses = torch.zeros(2, steps, device=self.device)
        for step in range(steps):
            index = torch.randint(len(real), (batch_size,), device=self.device, generator=self.rng)
            losses[0, step], losses[1, step] = self.train_step(real[index])
        return GANLosses(losses[0], losses[1])

    def sampling_state(self) -> dict[str, torch.Tensor | dict[str, torch.Tensor]]:
        """What :meth:`generate` needs after training (tensors only, on the CPU): the EMA generator's
        weights and buffers, and the random generator's state."""
        return {"generator_ema": {k: v.detach().cpu() for k, v in self.generator_ema.state_dict().items()},
                "rng": self.rng.get_state(), "steps_done": torch.tensor(self.steps_done)}

    def load_sampling_state(self, state: dict[str, Any], restart_seed: int) -> None:
        """Restore :meth:`sampling_state`'s output. A random state saved on another device type cannot
        be restored: the generator then restarts from ``restart_seed``."""
        self.generator_ema.load_state_dict(state["generator_ema"])
        self.steps_done = int(state["steps_done"])
        try:
            self.rng.set_state(state["rng"])
        except RuntimeError:  # a CUDA generator's state on the CPU, or the reverse
            self.rng.manual_seed(restart_seed)

    @torch.no_grad()
    def _refresh_batch_norm(self, batches: int = 4, batch_size: int = 128) -> None:
        """Recompute the EMA generator's BatchNorm statistics for its own (averaged) weights."""
        norms = [m for m in self.generator_ema.modules() if isinstance(m, nn.BatchNorm2d)]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average over the refresh batches
        self.generator_ema.train()
        for _ in range(batches):
            self.generator_ema(self._latents(batch_size))
        self.generator_ema.eval()

    @torch.no_grad()
    def generate(self, n: int, batch_size: int = 256) -> torch.Tensor:
        """``n`` uint8 images [n, C, size, size] from the EMA generator."""
        self._refresh_batch_norm()
        chunks = [crop_to(self.generator_ema(self._latents(min(batch_size, n - start))), self.image_size)
                  for start in range(0, n, batch_size)]
        if not chunks:
            return torch.empty(0, self.channels, self.image_size, self.image_size, dtype=torch.uint8,
                               device=self.device)
        return denormalise(torch.cat(chunks))


# ---------------------------------------------------------------------- sample grids
def sample_grid(images: torch.Tensor, columns: int = 8, padding: int = 2) -> torch.Tensor:
    """Tile uint8 images [N, C, H, W] into one uint8 grid image [3, H', W'] (white padding)."""
    from torchvision.utils import make_grid

    return make_grid(images.detach().cpu().float(), nrow=columns, padding=padding, pad_value=255).to(torch.uint8)
