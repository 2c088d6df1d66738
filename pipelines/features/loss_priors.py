"""Neutral-loss log priors: a built-in table of common losses and fitting one from trees.

A table maps a neutral loss (Hill formula, no charge, e.g. ``"H2O"``,
``"CH2O2"``) to a log prior, 0 for the most favoured loss and negative for
rarer ones. :func:`compile_loss_priors` turns a table into arrays for
vectorised lookup (do it once per partition, not once per spectrum).
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable, Mapping

import numpy as np

from .formula import N_ELEMENTS, format_formula, parse_formula

log = logging.getLogger(__name__)

#: Built-in log priors of common neutral losses of [M+H]+ / [M-H]- fragmentation
#: (hand-set from the loss frequencies reported for SIRIUS / MassBank trees; radicals lower).
DEFAULT_LOSS_PRIORS: dict[str, float] = {
    "H2O": 0.0, "CO": -0.2, "NH3": -0.3, "CO2": -0.4, "C2H4": -0.5, "CH2O2": -0.7, "HCN": -0.6,
    "CH4O": -0.7, "C2H2O": -0.6, "CH2O": -0.8, "C2H4O2": -0.9, "H4O2": -0.8, "C3H6": -1.0,
    "C4H8": -1.1, "C2H2": -1.2, "C3H4": -1.4, "H2": -1.2, "CH4": -1.2, "CH5N": -1.1, "C2H7N": -1.1,
    "C3H9N": -0.9, "CHNO": -1.1, "CH3NO": -1.2, "N2": -1.6, "H3PO4": -0.9, "HPO3": -1.2,
    "SO3": -1.1, "SO2": -1.2, "H2S": -1.3, "H2SO4": -1.3, "HCl": -0.9, "HF": -1.1, "HBr": -1.1,
    "HI": -1.3, "C6H10O5": -0.7, "C6H8O6": -0.9, "C5H8O4": -1.0, "C6H10O4": -1.0, "C6H12O6": -1.1,
    "C2H6O": -1.1, "C3H6O": -1.3, "C2H3N": -1.3, "C2H5N": -1.4, "C3H4O": -1.4, "C4H4O": -1.5,
    "C3H2O": -1.6, "C2O2": -1.5, "C3O2": -1.8, "CH3N": -1.6, "C7H6O": -1.6, "C6H6": -1.5,
    # radical losses (child becomes odd-electron)
    "CH3": -1.4, "H": -2.0, "OH": -2.0, "NO": -1.9, "NO2": -1.8, "Cl": -1.7, "Br": -1.6, "I": -1.5,
    "C2H5": -2.0, "CH3O": -2.0, "SCH3": -2.2, "C4H9": -2.2,
}

#: Log prior of a loss absent from the table, relative to the table's values.
UNKNOWN_LOSS_MARGIN = 1.0

_HASH = np.random.default_rng(20240601).integers(1, 2**62, size=N_ELEMENTS, dtype=np.int64) | 1


@dataclass(frozen=True)
class LossPriorTable:
    """A compiled loss table: rows of loss formulas, their log priors, and the unknown-loss score."""

    keys: np.ndarray      # (n,) int64 hash of each row, sorted
    rows: np.ndarray      # (n, N_ELEMENTS) int64
    values: np.ndarray    # (n,) float64
    unknown: float

    def score(self, losses: np.ndarray) -> np.ndarray:
        """Log prior of each row of ``losses`` (count vectors); ``unknown`` where the loss is not listed."""
        losses = np.asarray(losses, dtype=np.int64).reshape(-1, N_ELEMENTS)
        out = np.full(len(losses), self.unknown, dtype=np.float64)
        if not len(self.keys) or not len(losses):
            return out
        k = losses @ _HASH
        pos = np.minimum(np.searchsorted(self.keys, k), len(self.keys) - 1)
        hit = (self.keys[pos] == k) & np.all(self.rows[pos] == losses, axis=1)
        out[hit] = self.values[pos[hit]]
        return out

    def __len__(self) -> int:
        return len(self.keys)


def compile_loss_priors(priors: Mapping[str, float] | None = None, unknown: float | None = None) -> LossPriorTable:
    """Compile ``priors`` (default :data:`DEFAULT_LOSS_PRIORS`); unparsable keys are logged and dropped."""
    priors = DEFAULT_LOSS_PRIORS if priors is None else priors
    rows, values = [], []
    for name, value in priors.items():
        try:
            counts, _ = parse_formula(name)
        except ValueError as err:
            log.warning("loss prior %r dropped: %s", name, err)
            continue
        if not math.isfinite(float(value)):
            log.warning("loss prior %r dropped: value %r is not finite", name, value)
            continue
        rows.append(counts)
        values.append(float(value))
    if unknown is None:
        unknown = (min(values) if values else 0.0) - UNKNOWN_LOSS_MARGIN
    arr = np.asarray(rows, dtype=np.int64).reshape(-1, N_ELEMENTS)
    keys = arr @ _HASH
    order = np.argsort(keys, kind="stable")
    return LossPriorTable(keys=keys[order], rows=arr[order], values=np.asarray(values)[order], unknown=float(unknown))


@lru_cache(maxsize=1)
def default_loss_table() -> LossPriorTable:
    """The compiled built-in table (compiled once)."""
    return compile_loss_priors(DEFAULT_LOSS_PRIORS)


def _losses_of(item: Any) -> list[str]:
    """Loss formulas of one item: a FragTree, a ``to_row()`` dict, or a (parent, child) formula pair."""
    if isinstance(item, tuple) and len(item) == 2 and all(isinstance(x, str) for x in item):
        parent, _ = parse_formula(item[0])
        child, _ = parse_formula(item[1])
        loss = parent - child
        if (loss < 0).any() or not loss.any():
            raise ValueError(f"{item[1]} is not a proper sub-formula of {item[0]}")
        return [format_formula(loss)]
    edges = item.get("edges") if isinstance(item, Mapping) else getattr(item, "edges", None)
    if edges is None:
        raise ValueError(f"cannot read losses from {type(item).__name__}; pass trees, tree rows or (parent, child) pairs")
    return [e["loss"] if isinstance(e, Mapping) else e.loss for e in edges]


def fit_loss_priors(
    items: Iterable[Any], min_count: int = 5, pseudocount: float = 1.0, max_losses: int = 2000
) -> dict[str, float]:
    """Learn log priors ``log((n + a) / (n_max + a))`` of losses seen at least ``min_count`` times.

    ``items``: fragmentation trees, their ``to_row()`` dicts, or (parent, child)
    formula pairs; unreadable items are logged and skipped. The most frequent
    loss gets 0; at most ``max_losses`` entries are kept.
    """
    counts: Counter[str] = Counter()
    bad = 0
    for item in items:
        try:
            counts.update(_losses_of(item))
        except ValueError as err:
            bad += 1
            log.debug("fit_loss_priors: item skipped: %s", err)
    if bad:
        log.info("fit_loss_priors: %d unreadable items skipped", bad)
    kept = [(loss, n) for loss, n in counts.most_common(max_losses) if n >= min_count]
    if not kept:
        return {}
    top = kept[0][1] + pseudocount
    return {loss: math.log((n + pseudocount) / top) for loss, n in kept}
