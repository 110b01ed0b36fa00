"""MDGAN: mistake-driven training with class-wise FastGAN augmentation (ICLR 2022 submission,
"Mistake-driven Image Classification with FastGAN and SpinalNet").

Phase ``pretrain`` trains the classifier on the training set. At the start of phase ``finetune``
the classes with the lowest accuracy (recall) on the selection split are chosen (``selection_split``:
validation by default, or the probe split held out of the training set), one light FastGAN is trained
per chosen class on that class's training images, and ``generated_share`` x (class size) new
images are generated per chosen class. The fine-tune phase trains the same network, with a fresh
optimiser, on the training set plus the generated images. As in the paper, the method prefers
SAM and a SpinalNet head (``defaults``, with an SGD-scale learning rate of 0.05; ``--set``
overrides them). The head is ours (``spinal``: two halves of the features feed a chain of ReLU
layers); the paper's is Progressive SpinalNet with SELU, ``head=spinal_selu``
(:mod:`focustune.models.spinal_head`).

The GAN is :mod:`focustune.methods.mdgan.fastgan`, in this method's package: mdgan's helper, not a
method. Each GAN trains for ``gan_steps`` steps, or ``gan_epochs`` passes over its class's training
images when that is set. FastGAN's own reference training (Liu et al. 2021) runs 50,000 steps of batch 8;
the default, 1,000 steps of batch 16, is what fits a CPU: on PneumoniaMNIST's normal class (364
images) 100 steps gave blurred blobs, 600 chest outlines, 1,000 recognisable chest X-rays, of which
a 3-epoch classifier labelled 57% as normal (56% of the real ones). The method measures this on
every run: the pretrained classifier (the model at the end of pretraining, trained
on real images only) labels each GAN's generated images, and ``generated_as_class`` is the share
it labels as their class, beside ``real_as_class``, the share of the class's real training images
it labels so (the same check on real images: a GAN that has learned the class comes close to it).

``augment_with=real`` is the control that isolates the GAN: the chosen classes get the same count of
their own real training images (drawn with replacement, seeded by run and class) instead of GAN
images, and no GAN trains; everything else (phases, selection, optimiser) is the same.

Each fine-tune epoch logs the chosen classes, the selection split and their accuracy on it at
selection, their validation accuracy now, the generated count, the GAN steps and that quality
check per class, each GAN's losses (mean, and mean of the last tenth of steps) and the share of
the run's wall-clock time spent training GANs. ``sample_grids`` maps each chosen class to a uint8
grid of its generated samples at the end of GAN training; :meth:`MDGAN.images` hands them to the
run's record (a sweep logs them as MLflow images, ``gan/samples_class_<c>.png``).

Our reading where the paper leaves details open:

* the epoch budget is shared: ``finetune_epochs`` of the run's ``epochs`` fine-tune (at most
  ``epochs - 1``), the rest pretrain;
* classes are chosen by the current (last pretraining epoch's) model, not the best epoch's;
  classes without selection-split or training images are never chosen; ties go to the lower index;
* the GANs are trained one after another, each with its own seed (run seed, class); on a GPU they
  could run concurrently (one CUDA stream or process per class, as they share nothing), which is
  left out for simplicity;
* a GAN is trained once and reused when the run has a GAN store (``run.gan_store``: a sweep's
  ``<storage>/gans``, ``focustune train --gan-store PATH``): its address is a digest of what it depends
  on (:mod:`focustune.methods.mdgan.stored`), and every trial and seed re-run that needs the same GAN
  loads it (``gan_reused`` per class; the run's tags ``gan.class_<c>.*`` name it and its quality check);
* the generated images (uint8) and labels are method state, so a run resumed inside the
  fine-tune phase continues on the same augmented set without retraining the GANs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from focustune.config import TrainConfig
from focustune.data import ImageDataset, Split
from focustune.errors import ConfigError
from focustune.methods.base import EpochStats, Method, Phase, RunContext
from focustune.methods.mdgan.fastgan import MAX_IMAGE_SIZE, sample_grid
from focustune.methods.mdgan.stored import obtain_gan
from focustune.methods.registry import register
from focustune.params import hp
from focustune.tracking_schema import gan_tag

GRID_SAMPLES = 32
#: Generated images the quality check labels at least (more when more are generated).
CHECK_SAMPLES = 256


@dataclass
class MDGANParams:
    gan_classes: int = hp(1, low=1, high=1000, help="how many of the worst validation classes get a GAN")
    generated_share: float = hp(0.5, low=0.0, high=10.0,
                                help="generated images per chosen class, as a share of its training size")
    gan_steps: int = hp(1000, low=1, high=1_000_000,
                        help="training steps of each class's FastGAN (used when gan_epochs is 0; FastGAN's "
                             "reference: 50000 steps of batch 8)")
    gan_epochs: float = hp(0.0, low=0.0, high=100_000.0,
                           help="GAN budget as passes over the class's training images (steps = ceil(epochs x "
                                "class size / gan_batch_size)); 0 = use gan_steps")
    gan_batch_size: int = hp(16, low=2, high=4096, help="FastGAN batch size (FastGAN itself uses 8)")
    finetune_epochs: int = hp(5, low=1, high=10_000,
                              help="epochs on the augmented set, taken from the shared epoch budget "
                                   "(at most epochs - 1)")
    selection_split: str = hp("val", choices=("val", "probe"),
                              help="split whose per-class accuracy picks the worst classes: val, or probe "
                                   "(probe_fraction of the training split, held out of training)")
    finetune_lr_scale: float = hp(1.0, low=1e-4, high=10.0, log=True,
                                  help="learning-rate factor of the fine-tune phase (fresh optimiser)")
    augment_with: str = hp("gan", choices=("gan", "real"),
                           help="what the chosen classes get: GAN images, or (a control that isolates the GAN) the "
                                "same count of the class's real training images, drawn with replacement")


def class_accuracies(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class accuracy (recall) of ``predictions``; NaN for classes without samples."""
    correct = torch.bincount(labels[predictions == labels], minlength=num_classes).float()
    total = torch.bincount(labels, minlength=num_classes).float()
    return torch.where(total > 0, correct / total.clamp_min(1), torch.full_like(total, float("nan")))


def labelled_as(probs: torch.Tensor, c: int) -> float:
    """Share of the rows of ``probs`` whose argmax is class ``c`` (one host read)."""
    return float((probs.argmax(dim=1) == c).float().mean()) if len(probs) else math.nan


def worst_classes(accuracies: torch.Tensor, count: int, eligible: torch.Tensor | None = None) -> list[int]:
    """The ``count`` classes of lowest accuracy (ties: lower index first), among ``eligible`` ones.

    Classes with NaN accuracy (no samples) are never chosen.
    """
    usable = ~torch.isnan(accuracies)
    if eligible is not None:
        usable &= eligible
    candidates = torch.nonzero(usable).flatten()
    order = torch.sort(accuracies[candidates], stable=True).indices
    return candidates[order][:count].tolist()


@register
class MDGAN(Method):
    name = "mdgan"
    summary = ("mistake-driven fine-tuning on the worst classes augmented by per-class FastGANs (the paper's head: "
               "head=spinal_selu)")
    Params = MDGANParams
    #: As in the paper: SAM and a SpinalNet head (ours; the paper's Progressive SpinalNet with SELU is
    #: ``spinal_selu``). SAM steps with SGD, which needs a larger learning rate than the shared
    #: default (Adam's 1e-3).
    defaults: ClassVar[dict[str, Any]] = {"optimizer": "sam", "head": "spinal", "lr": 0.05}

    def __init__(self, params: MDGANParams | None = None):
        super().__init__(params)
        self.classes: list[int] = []
        self.accuracy_at_selection: list[float] = []
        self.gan_losses: list[dict[str, float]] = []
        self.quality: dict[str, list[float]] = {}
        self.gan_seconds = 0.0
        self.generated: Split | None = None
        self.sample_grids: dict[int, torch.Tensor] = {}
        #: Per chosen class: its GAN's store address, whether it was reused, and its training seconds.
        self.gans: list[dict[str, Any]] = []
        self._augmented: Split | None = None
        self._clock_start = time.perf_counter()
        self._clock_offset = 0.0

    def check_data(self, config: TrainConfig, dataset: ImageDataset) -> None:
        if dataset.image_size > MAX_IMAGE_SIZE:
            raise ConfigError(f"mdgan: its FastGAN generates images of at most {MAX_IMAGE_SIZE} px, and "
                              f"{dataset.name} has {dataset.image_size} px images; use a smaller --size")

    def uses_probe(self) -> bool:
        return self.params.selection_split == "probe"

    def setup(self, run: RunContext) -> None:
        self._clock_start = time.perf_counter()

    def phases(self, config: TrainConfig) -> list[Phase]:
        if config.epochs < 2:
            raise ConfigError("mdgan needs epochs >= 2 (pretraining, then fine-tuning on the augmented set)")
        finetune = min(self.params.finetune_epochs, config.epochs - 1)
        return [Phase("pretrain", config.epochs - finetune, mechanism=False),
                Phase("finetune", finetune, new_optimizer=True, lr_scale=self.params.finetune_lr_scale)]

    def start_phase(self, phase: Phase, index: int, run: RunContext) -> None:
        if phase.name != "finetune":
            return
        accuracies = self._selection_accuracies(run)
        self.classes = worst_classes(accuracies, self.params.gan_classes, eligible=run.class_counts > 0)
        self.accuracy_at_selection = [float(accuracies[c]) for c in self.classes]
        run.log(f"mdgan: augmenting classes {self.classes} ({self.params.selection_split} accuracy "
                f"{', '.join(f'{a:.3f}' for a in self.accuracy_at_selection)})")
        started = time.perf_counter()
        self.generated = self._generate(run)  # ends by reading losses back, so the device is done
        self.gan_seconds = time.perf_counter() - started
        self._augmented = None

    def _val_accuracies(self, run: RunContext) -> torch.Tensor:
        predictions = run.val_predictions().argmax(dim=1)
        return class_accuracies(predictions, run.val.labels, run.num_classes)

    def _selection_accuracies(self, run: RunContext) -> torch.Tensor:
        """Per-class accuracy on the selection split (validation or the probe split)."""
        if self.params.selection_split == "val":
            return self._val_accuracies(run)
        assert run.probe is not None  # uses_probe() asked the trainer for it
        predictions = run.predict(run.probe.images).argmax(dim=1)
        return class_accuracies(predictions, run.probe.labels, run.num_classes)

    def gan_steps(self, class_size: int) -> int:
        """Training steps of a class's GAN: ``gan_epochs`` passes over the class when set, else ``gan_steps``."""
        if self.params.gan_epochs > 0:
            return max(1, math.ceil(self.params.gan_epochs * class_size / self.params.gan_batch_size))
        return self.params.gan_steps

    def _generate(self, run: RunContext) -> Split:
        """Train one FastGAN per chosen class; return the generated images with their labels."""
        images, labels = [], []
        self.gan_losses, self.sample_grids, self.gans = [], {}, []
        self.quality = {"gan_steps": [], "generated_as_class": [], "real_as_class": []}
        for c in self.classes:
            real = run.train.images[(run.train.labels == c).to(run.train.images.device)]  # images may be on the host
            wanted = round(self.params.generated_share * len(real))
            if self.params.augment_with == "real":  # the control: real images of the class, drawn again
                generator = torch.Generator().manual_seed(run.seed * 1009 + c)
                drawn = torch.randint(len(real), (max(wanted, CHECK_SAMPLES),), generator=generator)
                pool, steps = real[drawn.to(real.device)].to(run.device), 0
            else:
                steps = self.gan_steps(len(real))
                pool = self._gan_images(run, real, c, steps, max(wanted, CHECK_SAMPLES))
            fake = pool[:wanted]
            self.sample_grids[c] = sample_grid(pool[:GRID_SAMPLES])
            self.quality["gan_steps"].append(steps)
            self.quality["generated_as_class"].append(labelled_as(run.predict(pool), c))
            self.quality["real_as_class"].append(labelled_as(run.predict(real), c))
            images.append(fake)
            labels.append(torch.full((len(fake),), c, dtype=torch.long, device=run.device))
        empty = run.train.images[:0]
        return Split(torch.cat(images) if images else empty,
                     torch.cat(labels) if labels else run.train.labels[:0])

    def _gan_images(self, run: RunContext, real: torch.Tensor, c: int, steps: int, count: int) -> torch.Tensor:
        """``count`` images from class ``c``'s GAN: the run's GAN store's when it holds one for these
        images and settings, else one trained now (and kept there)."""
        obtained = obtain_gan(run.gan_store, real, c, steps, self.params.gan_batch_size,
                              seed=run.seed * 1009 + c, device=run.device)
        self.gans.append({"address": obtained.address, "reused": obtained.reused,
                          "train_seconds": obtained.train_seconds})
        run.log(f"mdgan: class {c}'s GAN {obtained.address} "
                f"{'reused from' if obtained.reused else 'trained, kept in'}"
                f"{'' if run.gan_store is None else ' ' + run.gan_store.where(obtained.address)}"
                f" ({obtained.train_seconds:.1f} s of GAN training)")
        self.gan_losses.append(obtained.losses.summary())
        return obtained.gan.generate(count)

    def training_data(self, run: RunContext) -> Split:
        if self.generated is None:
            return run.train
        if self._augmented is None:  # where the training images are (the device, or host memory when streamed)
            self._augmented = Split(torch.cat([run.train.images, self.generated.images.to(run.train.images.device)]),
                                    torch.cat([run.train.labels, self.generated.labels.to(run.device)]))
        return self._augmented

    def _elapsed(self) -> float:
        """Wall-clock seconds of the run so far, across resumes."""
        return self._clock_offset + time.perf_counter() - self._clock_start

    def end_epoch(self, stats: EpochStats, run: RunContext) -> dict[str, Any]:
        if self.generated is None:
            return {}
        accuracies = self._val_accuracies(run)
        return {
            "classes": list(self.classes),
            "selection_split": self.params.selection_split,
            "acc_at_selection": list(self.accuracy_at_selection),
            "val_acc": [float(accuracies[c]) for c in self.classes],
            "generated": len(self.generated),
            **{key: list(values) for key, values in self.quality.items()},
            "gan_losses": [dict(losses) for losses in self.gan_losses],
            "gan_seconds": self.gan_seconds,
            "gan_reused": [bool(g["reused"]) for g in self.gans],
            "gan_train_seconds": [float(g["train_seconds"]) for g in self.gans],
            "gan_time_share": self.gan_seconds / max(self._elapsed(), 1e-9),
        }

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"elapsed": self._elapsed()}
        if self.generated is not None:
            state.update({
                "classes": list(self.classes),
                "accuracy_at_selection": list(self.accuracy_at_selection),
                "gan_losses": [dict(losses) for losses in self.gan_losses],
                "gan_seconds": self.gan_seconds,
                "gans": [dict(g) for g in self.gans],
                "quality": {key: list(values) for key, values in self.quality.items()},
                "generated_images": self.generated.images,
                "generated_labels": self.generated.labels,
                "sample_grids": {str(c): grid for c, grid in self.sample_grids.items()},
            })
        return state

    def images(self) -> dict[str, torch.Tensor]:
        return {f"gan/samples_class_{c}.png": grid for c, grid in self.sample_grids.items()}

    def tags(self) -> dict[str, str]:
        """Per augmented class: its GAN's address, trained or reused, and the quality check."""
        out: dict[str, str] = {}
        for i, (c, gan) in enumerate(zip(self.classes, self.gans)):
            out[gan_tag(c, "address")] = str(gan["address"])
            out[gan_tag(c, "source")] = "reused" if gan["reused"] else "trained"
            for name in ("generated_as_class", "real_as_class"):
                out[gan_tag(c, name)] = f"{self.quality[name][i]:.4f}"
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._clock_offset, self._clock_start = float(state["elapsed"]), time.perf_counter()
        if "generated_images" not in state:
            return
        self.classes = [int(c) for c in state["classes"]]
        self.accuracy_at_selection = [float(a) for a in state["accuracy_at_selection"]]
        self.gan_losses = [dict(losses) for losses in state["gan_losses"]]
        self.gan_seconds = float(state["gan_seconds"])
        self.gans = [dict(g) for g in state.get("gans", [])]
        self.quality = {key: list(values) for key, values in state["quality"].items()}
        self.generated = Split(state["generated_images"], state["generated_labels"])
        self.sample_grids = {int(c): grid for c, grid in state["sample_grids"].items()}
        self._augmented = None
