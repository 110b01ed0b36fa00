"""A class's FastGAN, trained once and kept in a :class:`~focustune.shared_store.SharedStore`.

A GAN's address is a digest of everything its training depends on: the class's training images
themselves (their bytes: the dataset, its options, the data seed, a probe hold-out are all in them),
the class, the GAN's settings (steps, batch size, FastGAN's own settings) and its seed. The
classifier's hyperparameters (lr, SAM's rho, generated_share, ...) are not in it, so every trial and
seed re-run of a study that augments the class with the same GAN seed reuses the GAN. What is stored
is what generating needs (the EMA generator's tensors and the random state after training, saved by
``torch.save`` and loaded with ``weights_only=True``: no pickled objects), plus the training losses:
a reused GAN generates exactly the images a freshly trained one would on the same device type.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from typing import Any

import torch

from focustune.methods.mdgan.fastgan import FastGAN, GANLosses
from focustune.shared_store import SharedStore

#: Bumped when what a GAN's training or its stored form means changes: old entries are then not reused.
FORMAT = 1


def gan_recipe(real: torch.Tensor, class_index: int, steps: int, batch_size: int, seed: int,
               gan: FastGAN) -> dict[str, Any]:
    """What a class's GAN depends on (plain JSON values); ``real``: the class's uint8 training images."""
    images = real.detach().cpu().contiguous()
    digest = hashlib.sha256(images.numpy().tobytes()).hexdigest()
    return {"format": FORMAT, "images_sha256": digest, "images_shape": list(images.shape), "class": class_index,
            "steps": steps, "batch_size": batch_size, "seed": seed, **gan.settings}


def gan_address(recipe: dict[str, Any]) -> str:
    """The store address of the GAN of ``recipe``."""
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return "fastgan-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class ClassGAN:
    """A class's GAN ready to generate, its training losses, and where it came from."""

    gan: FastGAN
    losses: GANLosses
    address: str
    reused: bool
    train_seconds: float


def _serialise(gan: FastGAN, losses: GANLosses) -> bytes:
    buffer = io.BytesIO()
    torch.save({**gan.sampling_state(), "losses": torch.stack([losses.discriminator, losses.generator]).cpu()},
               buffer)
    return buffer.getvalue()


def _train(gan: FastGAN, real: torch.Tensor, steps: int, batch_size: int) -> tuple[GANLosses, float]:
    started = time.perf_counter()
    losses = gan.fit(real, steps, batch_size)
    losses.discriminator.sum().item()  # the device is done: the time is the training's
    return losses, time.perf_counter() - started


def obtain_gan(store: SharedStore | None, real: torch.Tensor, class_index: int, steps: int, batch_size: int,
               seed: int, device: torch.device) -> ClassGAN:
    """Class ``class_index``'s GAN trained on ``real`` (uint8 images): loaded from ``store`` when it holds
    it, else trained (once, whichever run claims it first) and published there; without a store, trained."""
    gan = FastGAN(real.shape[1], real.shape[-1], device=device, seed=seed)
    recipe = gan_recipe(real, class_index, steps, batch_size, seed, gan)
    address = gan_address(recipe)
    if store is None:
        losses, seconds = _train(gan, real, steps, batch_size)
        return ClassGAN(gan, losses, address, reused=False, train_seconds=seconds)

    trained: dict[str, Any] = {}

    def produce() -> tuple[bytes, dict[str, Any]]:
        trained["losses"], seconds = _train(gan, real, steps, batch_size)
        return _serialise(gan, trained["losses"]), {"recipe": recipe, "device": device.type,
                                                    "train_seconds": seconds}

    entry = store.obtain(address, produce)
    if entry.produced:
        return ClassGAN(gan, trained["losses"], address, reused=False,
                        train_seconds=float(entry.marker["train_seconds"]))
    state = torch.load(io.BytesIO(entry.data), map_location="cpu", weights_only=True)
    gan.load_sampling_state(state, restart_seed=seed * 1_000_003 + steps)
    losses = state["losses"].to(device)
    return ClassGAN(gan, GANLosses(losses[0], losses[1]), address, reused=True,
                    train_seconds=float(entry.marker["train_seconds"]))
