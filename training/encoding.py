"""Model inputs and targets shared by every architecture and baseline.

* :func:`bin_spectrum` / :func:`bin_batch`: a spectrum as a binned intensity vector
  (configurable bin width and m/z range, sqrt-scaled, max 1), dense or as CSR parts;
* :class:`DescriptorSpace`: the ordered descriptor list a model predicts (Morgan/ECFP bits,
  MACCS keys, substructure keys, ChemOnt classes), chosen on training structures only, and
  :meth:`DescriptorSpace.targets` turning ``descriptors`` rows into a 0/1 matrix.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class BinSettings(BaseModel):
    """How a spectrum becomes a vector."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bin_width: float = Field(1.0, gt=0, description="Bin width in Da (DeepEI/MetFID use 1 Da; 0.01-0.1 for HR).")
    min_mz: float = Field(0.0, ge=0)
    max_mz: float = Field(1000.0, gt=0)
    power: float = Field(0.5, gt=0, description="Intensities raised to this power (0.5: sqrt) before scaling to max 1.")

    @property
    def n_bins(self) -> int:
        return int(np.ceil((self.max_mz - self.min_mz) / self.bin_width))


def bin_indices(mz: Sequence[float] | np.ndarray, intensities: Sequence[float] | np.ndarray,
                settings: BinSettings) -> tuple[np.ndarray, np.ndarray]:
    """(bin index, value) of the occupied bins of one spectrum, sorted by bin; peaks outside the range dropped."""
    mz_a = np.asarray(mz, dtype=np.float64)
    inten = np.asarray(intensities, dtype=np.float64)
    keep = (mz_a >= settings.min_mz) & (mz_a < settings.max_mz) & (inten > 0) & np.isfinite(mz_a)
    if not keep.any():
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    idx = ((mz_a[keep] - settings.min_mz) / settings.bin_width).astype(np.int64)
    idx = np.minimum(idx, settings.n_bins - 1)
    vals = inten[keep] ** settings.power
    uniq, inv = np.unique(idx, return_inverse=True)
    summed = np.zeros(len(uniq), np.float64)
    np.maximum.at(summed, inv, vals)  # a bin keeps its strongest peak
    top = summed.max()
    return uniq, (summed / top if top > 0 else summed).astype(np.float32)


def bin_spectrum(mz: Sequence[float] | np.ndarray, intensities: Sequence[float] | np.ndarray,
                 settings: BinSettings) -> np.ndarray:
    """Dense float32 vector of ``settings.n_bins`` entries."""
    out = np.zeros(settings.n_bins, np.float32)
    idx, vals = bin_indices(mz, intensities, settings)
    out[idx] = vals
    return out


def bin_batch(mzs: Iterable[Sequence[float]], intensities: Iterable[Sequence[float]],
              settings: BinSettings) -> np.ndarray:
    """Dense (n, n_bins) float32 matrix of many spectra."""
    rows = [bin_spectrum(m, i, settings) for m, i in zip(mzs, intensities)]
    return np.stack(rows) if rows else np.zeros((0, settings.n_bins), np.float32)


def bin_batch_csr(mzs: Iterable[Sequence[float]], intensities: Iterable[Sequence[float]],
                  settings: BinSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same as CSR parts (indptr, indices, data), for sparse models and scikit-learn."""
    indptr, indices, data = [0], [], []
    for m, i in zip(mzs, intensities):
        idx, vals = bin_indices(m, i, settings)
        indices.append(idx)
        data.append(vals)
        indptr.append(indptr[-1] + len(idx))
    cat_i = np.concatenate(indices) if indices else np.zeros(0, np.int64)
    cat_d = np.concatenate(data) if data else np.zeros(0, np.float32)
    return np.asarray(indptr, np.int64), cat_i.astype(np.int64), cat_d.astype(np.float32)


#: Descriptor families, their column in the ``descriptors`` table and the name prefix.
FAMILIES: dict[str, str] = {
    "morgan": "morgan_on",
    "maccs": "maccs_on",
    "substructure": "substructure_on",
    "chemont": "chemont_classes",
}


class DescriptorSettings(BaseModel):
    """Which descriptors a model predicts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    families: tuple[str, ...] = ("morgan", "maccs", "substructure", "chemont")
    min_positives: int = Field(10, ge=1, description="A descriptor is kept when this many training structures have it.")
    max_positive_share: float = Field(0.95, gt=0, le=1, description="... and at most this share of them.")


class DescriptorSpace:
    """An ordered list of descriptor names like ``morgan:1380``, ``maccs:160``, ``chemont:Flavonoids``."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names: list[str] = list(names)
        self.index: dict[str, int] = {n: i for i, n in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    @staticmethod
    def row_names(row: dict, families: Sequence[str]) -> list[str]:
        """Descriptor names present in one ``descriptors`` row (dict of its columns)."""
        out: list[str] = []
        for fam in families:
            values = row.get(FAMILIES[fam]) or []
            out.extend(f"{fam}:{v}" for v in values)
        return out

    @classmethod
    def fit(cls, rows: Iterable[dict], settings: DescriptorSettings = DescriptorSettings()) -> "DescriptorSpace":
        """Descriptors frequent enough (and not near-constant) among the given training structures."""
        counts: Counter[str] = Counter()
        n = 0
        for row in rows:
            n += 1
            counts.update(set(cls.row_names(row, settings.families)))
        if n == 0:
            raise ValueError("no training structures to choose descriptors from")
        names = [d for d, c in counts.items() if c >= settings.min_positives and c / n <= settings.max_positive_share]
        fam_order = {f: i for i, f in enumerate(settings.families)}

        def key(name: str) -> tuple[int, int, str]:
            fam, _, value = name.partition(":")
            return (fam_order[fam], int(value) if value.isdigit() else 0, value)

        return cls(sorted(names, key=key))

    def targets(self, rows: Iterable[dict], families: Sequence[str] | None = None) -> np.ndarray:
        """(n, len(self)) uint8 matrix: 1 where the structure has the descriptor."""
        fams = families or sorted({n.partition(":")[0] for n in self.names})
        rows = list(rows)
        out = np.zeros((len(rows), len(self)), np.uint8)
        for r, row in enumerate(rows):
            for name in self.row_names(row, fams):
                j = self.index.get(name)
                if j is not None:
                    out[r, j] = 1
        return out
