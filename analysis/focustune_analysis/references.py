"""Published test results to show next to a sweep's own numbers (reference rows, not re-computed).

Datasets are matched by focustune's dataset name: ``pneumoniamnist`` and ``breastmnist`` are the
28x28 MedMNIST files, the image size these references were measured at.
"""

from __future__ import annotations

from dataclasses import dataclass

MEDMNIST_V2 = ("Yang et al., MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical "
               "image classification, Scientific Data 10:41 (2023), 2D benchmark table, 28x28 images")
IMET = "Singh & Guggilam, IMET: Iterative Misclassification Error Training, arXiv:2507.02979"


@dataclass(frozen=True)
class Reference:
    """One published result: test metrics (names as in focustune: acc, auc, ...) and where from."""

    dataset: str
    model: str
    metrics: dict[str, float]
    source: str


def _medmnist(dataset: str, rows: dict[str, tuple[float, float]]) -> list[Reference]:
    return [Reference(dataset, model, {"auc": auc, "acc": acc}, MEDMNIST_V2) for model, (auc, acc) in rows.items()]


REFERENCES: tuple[Reference, ...] = (
    *_medmnist("pneumoniamnist", {
        "ResNet-18 (28)": (0.944, 0.854), "ResNet-50 (28)": (0.948, 0.854), "auto-sklearn": (0.942, 0.855),
        "AutoKeras": (0.947, 0.878), "Google AutoML Vision": (0.991, 0.946)}),
    *_medmnist("breastmnist", {
        "ResNet-18 (28)": (0.901, 0.863), "ResNet-50 (28)": (0.857, 0.812), "auto-sklearn": (0.836, 0.803),
        "AutoKeras": (0.871, 0.831), "Google AutoML Vision": (0.919, 0.861)}),
    Reference("pneumoniamnist", "IMET (~30k-param CNN)", {"acc": 0.902}, IMET),
)


def references_for(dataset: str) -> list[Reference]:
    """The published results known for ``dataset`` (empty when none are)."""
    return [r for r in REFERENCES if r.dataset == dataset]
