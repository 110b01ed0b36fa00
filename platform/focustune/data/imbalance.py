"""Imbalance profiles: how many images of each class a training split keeps.

Profiles (``--imbalance``), with n_max the largest class count, K classes, class index i:

* ``exp:R``   exponential: class i keeps n_max * R^(-i/(K-1)) (``--imbalance-ratio R``);
* ``linear:R`` linear decrease: n_max * (1 - (1 - 1/R) * i/(K-1)), from n_max down to n_max/R;
* ``log:R``   logarithmic decrease: n_max * (1 - (1 - 1/R) * ln(1+i)/ln(K)), steep first, then flat;
* ``step``    LOW's profile: class c keeps round(N_c / 2^k_c), the k_c being 0..K-1 assigned to the
  classes by a permutation drawn with the data seed: each data seed draws its own (LOW's paper
  redraws it in every run, so give every run of a repeated experiment its own ``--data-seed``; the
  arms of one run share theirs, so they train on the same classes' counts);
* ``classes=I,J:F`` the listed classes keep a fraction F of their images, the others all.

Any profile may end in ``@S`` (0 < S <= 1): every class then keeps a share S of the profile's count,
a smaller training set of the same shape (``step@0.25``; ``classes=0,...,9:0.1`` is a balanced 10%).

Counts are rounded (``exp`` truncates, as it always has). A class never keeps more than it has,
nor fewer than one image. Which images are kept is drawn
with the data seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from focustune.data.dataset import Split
from focustune.errors import ConfigError, DataError

PROFILE_SYNTAX = ("exp:R, linear:R, log:R (R >= 1), step (its class permutation drawn with --data-seed), or "
                  "classes=I,J,...:F (0 < F <= 1), each optionally followed by @S: keep a share S (0 < S <= 1) "
                  "of every class's count, e.g. step@0.25")
RATIO_PROFILES = ("exp", "linear", "log")


def imbalance_profile(imbalance: str | None, ratio: float | None) -> Imbalance | None:
    """The profile asked for by ``--imbalance`` or its shorthand ``--imbalance-ratio R`` (= ``exp:R``)."""
    if imbalance is not None and ratio is not None:
        raise ConfigError("give --imbalance or --imbalance-ratio, not both (--imbalance-ratio R = --imbalance exp:R)")
    if ratio is not None:
        return None if ratio == 1 else Imbalance.exponential(ratio)
    return None if imbalance is None else Imbalance.parse(imbalance)


@dataclass(frozen=True)
class Imbalance:
    """A parsed imbalance profile (see the module docstring)."""

    kind: str
    ratio: float = 1.0
    classes: tuple[int, ...] = ()
    fraction: float = 1.0
    #: Share of the profile's count that every class keeps (``@S``): a smaller set of the same shape.
    scale: float = 1.0

    def __str__(self) -> str:
        suffix = f"@{self.scale:g}" if self.scale != 1 else ""
        if self.kind in RATIO_PROFILES:
            return f"{self.kind}:{self.ratio:g}{suffix}"
        if self.kind == "classes":
            return f"classes={','.join(map(str, self.classes))}:{self.fraction:g}{suffix}"
        return self.kind + suffix

    @classmethod
    def parse(cls, text: str) -> Imbalance:
        """``exp:10``, ``step``, ``linear:10``, ``log:10``, ``classes=3,5:0.1``, any of them with a
        ``@S`` share (``step@0.25``); ConfigError otherwise."""
        profile, at, share = text.strip().partition("@")
        try:
            scale = float(share) if at else 1.0
            if 0 < scale <= 1:
                return replace(cls._parse_profile(profile, text), scale=scale)
        except ValueError:
            pass
        raise ConfigError(f"--imbalance {text!r}: expected {PROFILE_SYNTAX}")

    @classmethod
    def _parse_profile(cls, profile: str, text: str) -> Imbalance:
        head, _, arg = profile.partition(":")
        try:
            if head in RATIO_PROFILES and arg:
                return cls.exponential(float(arg)) if head == "exp" else cls._ratio(head, float(arg))
            if head == "step" and not arg:
                return cls("step")
            if head.startswith("classes=") and arg:
                return cls._classes(head.removeprefix("classes="), float(arg))
        except ValueError:
            pass
        raise ConfigError(f"--imbalance {text!r}: expected {PROFILE_SYNTAX}")

    @classmethod
    def exponential(cls, ratio: float) -> Imbalance:
        return cls._ratio("exp", ratio)

    @classmethod
    def _ratio(cls, kind: str, ratio: float) -> Imbalance:
        if not (math.isfinite(ratio) and ratio >= 1):
            raise ConfigError(f"imbalance ratio must be >= 1, got {ratio:g}")
        return cls(kind, ratio=ratio)

    @classmethod
    def _classes(cls, listed: str, fraction: float) -> Imbalance:
        classes = tuple(int(c) for c in listed.split(","))
        if not (0 < fraction <= 1) or min(classes) < 0 or len(set(classes)) != len(classes):
            raise ValueError
        return cls("classes", classes=tuple(sorted(classes)), fraction=fraction)

    def target_counts(self, counts: list[int], seed: int = 0) -> list[int]:
        """Images each class keeps, given the classes' ``counts``."""
        return [max(1, math.floor(n * self.scale + 0.5)) for n in self._profile_counts(counts, seed)]

    def _profile_counts(self, counts: list[int], seed: int) -> list[int]:
        k = len(counts)
        if self.kind == "classes":
            if unknown := [c for c in self.classes if c >= k]:
                raise DataError(f"--imbalance {self}: no class {unknown[0]} (classes are 0..{k - 1})")
            wanted = [n * self.fraction if c in self.classes else n for c, n in enumerate(counts)]
            return [min(n, max(1, math.floor(w + 0.5))) for n, w in zip(counts, wanted)]
        if self.kind == "step":
            exponents = torch.randperm(k, generator=torch.Generator().manual_seed(seed)).tolist()
            return [min(n, max(1, math.floor(n / 2 ** e + 0.5))) for n, e in zip(counts, exponents)]
        n_max, span = max(counts), max(k - 1, 1)
        # exp truncates (as it always has, so existing long-tailed sets stay the same); the others round
        to_count = int if self.kind == "exp" else (lambda x: math.floor(x + 0.5))
        return [min(n, max(1, to_count(n_max * self._share(i, k, span)))) for i, n in enumerate(counts)]

    def _share(self, i: int, k: int, span: int) -> float:
        if self.kind == "exp":
            return self.ratio ** (-i / span)
        drop = 1 - 1 / self.ratio
        if self.kind == "linear":
            return 1 - drop * i / span
        return 1 - drop * math.log1p(i) / math.log(max(k, 2))


def apply_imbalance(split: Split, num_classes: int, profile: Imbalance, seed: int = 0) -> Split:
    """Subsample ``split`` (a training split) to ``profile``'s class counts, drawn with ``seed``."""
    keep = profile.target_counts(split.class_counts(num_classes).tolist(), seed)
    gen = torch.Generator().manual_seed(seed)
    parts = []
    for cls, n in enumerate(keep):
        members = torch.nonzero(split.labels == cls).flatten()
        parts.append(members[torch.randperm(len(members), generator=gen)[:n]])
    return split.subset(torch.sort(torch.cat(parts)).values)


def long_tailed_counts(counts: list[int], ratio: float) -> list[int]:
    """Exponential profile: class i keeps n_max * ratio^(-i/(K-1)) samples (capped by what it has)."""
    return Imbalance.exponential(ratio).target_counts(counts)


def make_long_tailed(split: Split, num_classes: int, ratio: float, seed: int = 0) -> Split:
    """Subsample a (training) split so class i keeps an exponentially decaying share."""
    return apply_imbalance(split, num_classes, Imbalance.exponential(ratio), seed)
