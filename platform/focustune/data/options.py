"""A dataset and the options that shape it: the one definition of ``train``'s data options, shared
by the command line, sweep plans, sweep specs and run-configuration files."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from focustune.data.sources.embedded import EMBEDDED_DEFAULT


@dataclass(kw_only=True)
class DataOptions:
    """``dataset`` is a registered name, a MedMNIST-layout ``.npz`` or an image folder; the rest are
    the options of the same names (``--data-dir``, ``--size``, ``--imbalance``, ``--imbalance-ratio``,
    ``--data-seed``)."""

    dataset: str = EMBEDDED_DEFAULT
    data_dir: str | None = None
    size: int | None = None
    imbalance: str | None = None
    imbalance_ratio: float | None = None
    data_seed: int = 0

    def load(self) -> Any:
        """The dataset, loaded and subsampled exactly as ``train`` loads it (an ``ImageDataset``)."""
        from focustune.data import load_dataset
        from focustune.data.imbalance import imbalance_profile

        return load_dataset(self.dataset, self.data_dir, size=self.size, seed=self.data_seed,
                            imbalance=imbalance_profile(self.imbalance, self.imbalance_ratio))

    def data_options(self) -> DataOptions:
        """Only the data options (of a subclass instance too)."""
        return DataOptions(**{key: getattr(self, key) for key in DATA_KEYS})

    def referenced(self) -> DataOptions:
        """The options as a file stores them: paths that exist become absolute (the file may be read
        from another folder); a dataset name stays as it is."""
        return DataOptions(**{**{key: getattr(self, key) for key in DATA_KEYS},
                              "dataset": path_reference(self.dataset),
                              "data_dir": path_reference(self.data_dir) if self.data_dir else None})


#: The data options' names, in declaration order; ``SHAPING_KEYS`` are those besides the dataset itself.
DATA_KEYS = tuple(f.name for f in fields(DataOptions))
SHAPING_KEYS = tuple(key for key in DATA_KEYS if key != "dataset")


def path_reference(value: str) -> str:
    """``value`` as a stored configuration names it: an existing path made absolute, anything else as is."""
    path = Path(value).expanduser()
    return str(path.resolve()) if path.exists() else value
