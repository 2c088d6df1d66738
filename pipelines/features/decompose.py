"""Mass decomposition: formulas within a mass tolerance, vectorised with numpy.

Two problems, both solved by enumerating the atoms other than hydrogen (and
carbon) on an integer grid and *solving* for the light elements, since at most
one hydrogen count fits a sub-Dalton window:

* :func:`subformula_candidates` — which sub-formulas of a known precursor ion
  formula explain each fragment peak. The grid of non-hydrogen sub-formulas is
  small (C20N3O5: 21*4*6 = 504 rows) and cached per precursor formula.
* :func:`decompose_mass` — all formulas over an alphabet (default CHNOPS + F,
  Cl, Br, I) of one mass, obeying the Seven Golden Rules element ratios and
  RDBE parity: hetero atoms are expanded element by element with mass and
  ratio pruning, then carbon is bounded by the H/C range and hydrogen solved.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .formula import (
    ELEMENT_INDEX,
    ELEMENTS,
    HALOGENS,
    MONO_MASS,
    N_ELEMENTS,
    ORGANIC_ALPHABET,
    VALENCE,
    rdbe,
)

log = logging.getLogger(__name__)

_H = ELEMENT_INDEX["H"]
_C = ELEMENT_INDEX["C"]
_M_H = float(MONO_MASS[_H])


@dataclass(frozen=True)
class SubformulaGrid:
    """All non-hydrogen sub-formulas of one ion formula (rows of ``heavy``) and its hydrogen count."""

    counts: tuple[int, ...]     # the parent formula
    heavy: np.ndarray           # (n, N_ELEMENTS) int16, hydrogen column zero
    heavy_mass: np.ndarray      # (n,) float64
    valence_sum: np.ndarray     # (n,) sum of n_i * (v_i - 2) over non-H atoms (for RDBE)
    max_h: int


@lru_cache(maxsize=4096)
def subformula_grid(counts: tuple[int, ...]) -> SubformulaGrid:
    """Enumerate the non-hydrogen sub-formula grid of ``counts`` (cached by formula)."""
    c = np.asarray(counts, dtype=np.int64)
    present = [i for i in range(N_ELEMENTS) if i != _H and c[i] > 0]
    axes = [np.arange(c[i] + 1, dtype=np.int16) for i in present]
    heavy = np.zeros((int(np.prod([len(a) for a in axes])) if axes else 1, N_ELEMENTS), dtype=np.int16)
    if axes:
        mesh = np.meshgrid(*axes, indexing="ij")
        for i, m in zip(present, mesh):
            heavy[:, i] = m.ravel()
    heavy_mass = heavy.astype(np.float64) @ MONO_MASS
    valence_sum = heavy.astype(np.int64) @ (VALENCE - 2)
    heavy.setflags(write=False)
    return SubformulaGrid(counts=tuple(int(x) for x in c), heavy=heavy, heavy_mass=heavy_mass,
                          valence_sum=valence_sum, max_h=int(c[_H]))


def subformula_candidates(
    counts: np.ndarray, atom_masses: np.ndarray, tol_da: np.ndarray, min_rdbe: float = -0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-formulas of ``counts`` whose mass is within ``tol_da`` of each of ``atom_masses``.

    ``atom_masses`` are ion m/z plus charge * electron mass (the atoms' mass).
    Returns (peak index, formula counts (m, N_ELEMENTS) int64, mass error in Da
    = formula mass - target), sorted by peak index. Empty formulas and those
    with RDBE < ``min_rdbe`` are dropped.
    """
    grid = subformula_grid(tuple(int(x) for x in counts))
    target = np.asarray(atom_masses, dtype=np.float64)[:, None]
    h = np.rint((target - grid.heavy_mass[None, :]) / _M_H)
    err = grid.heavy_mass[None, :] + h * _M_H - target
    ok = (h >= 0) & (h <= grid.max_h) & (np.abs(err) <= np.asarray(tol_da, dtype=np.float64)[:, None])
    # RDBE = 1 + (valence_sum - h) / 2
    ok &= 1.0 + (grid.valence_sum[None, :] - h) / 2.0 >= min_rdbe
    peak_idx, grid_idx = np.nonzero(ok)
    formulas = grid.heavy[grid_idx].astype(np.int64)
    formulas[:, _H] = h[peak_idx, grid_idx].astype(np.int64)
    nonempty = formulas.any(axis=1)
    return peak_idx[nonempty], formulas[nonempty], err[peak_idx, grid_idx][nonempty]


@dataclass(frozen=True)
class FormulaRules:
    """Seven-Golden-Rules style limits for decomposition (defaults: the rules' *common* ranges).

    ``max_ratio`` bounds element/C ratios; ``hc`` the H/C range; ``max_count``
    absolute counts; ``max_halogen_types`` how many different halogens one
    formula may hold (MS/MS gives no isotope evidence for them). One halogen
    type keeps 1000 Da decompositions near 0.1 s; two types cost ~20x more.
    """

    hc: tuple[float, float] = (0.2, 3.1)
    max_ratio: dict[str, float] = field(default_factory=lambda: {
        "N": 1.3, "O": 1.2, "P": 0.3, "S": 0.8, "F": 1.5, "Cl": 0.8, "Br": 0.8, "I": 0.8})
    max_count: dict[str, int] = field(default_factory=lambda: {
        "N": 15, "O": 25, "P": 4, "S": 4, "F": 20, "Cl": 8, "Br": 4, "I": 4})
    max_halogen_types: int = 1
    min_carbon: int = 1

    def __hash__(self) -> int:
        return hash((self.hc, tuple(sorted(self.max_ratio.items())), tuple(sorted(self.max_count.items())),
                     self.max_halogen_types, self.min_carbon))


DEFAULT_RULES = FormulaRules()


class TooManyCandidates(Exception):
    """Raised inside decomposition when the grid outgrows its limit; callers turn it into a Skipped."""


def decompose_mass(
    mass: float,
    tol_da: float,
    alphabet: tuple[str, ...] = ORGANIC_ALPHABET,
    rules: FormulaRules = DEFAULT_RULES,
    rdbe_parity: str = "integer",
    min_rdbe: float = 0.0,
    max_grid: int = 5_000_000,
) -> tuple[np.ndarray, np.ndarray]:
    """All formulas over ``alphabet`` with monoisotopic mass within ``tol_da`` of ``mass``.

    ``rdbe_parity``: ``integer`` (neutral molecules, radical ions), ``half``
    (even-electron ions) or ``any``; RDBE must be >= ``min_rdbe``. Returns
    (counts (n, N_ELEMENTS) int64, mass error in Da), sorted by |error|.
    Raises :class:`TooManyCandidates` when an intermediate grid exceeds ``max_grid``.
    """
    if rdbe_parity not in ("integer", "half", "any"):
        raise ValueError(f"rdbe_parity must be 'integer', 'half' or 'any', not {rdbe_parity!r}")
    unknown = [e for e in alphabet if e not in ELEMENT_INDEX]
    if unknown:
        raise ValueError(f"unsupported elements {unknown}; supported: {', '.join(ELEMENTS)}")
    hi = mass + tol_da
    hetero = sorted((e for e in alphabet if e not in ("C", "H")), key=lambda e: -MONO_MASS[ELEMENT_INDEX[e]])
    idx = [ELEMENT_INDEX[e] for e in hetero]
    combos = np.zeros((1, len(hetero)), dtype=np.int64)
    cmass = np.zeros(1)
    c_need = np.zeros(1)       # carbons the element/C ratios already demand
    n_hal = np.zeros(1, dtype=np.int64)  # halogen types used so far
    ch_unit = 12.0 + rules.hc[0] * _M_H  # least mass one carbon brings with its hydrogens
    for j, e in enumerate(hetero):
        me = float(MONO_MASS[idx[j]])
        nmax = min(rules.max_count.get(e, 99), int(hi // me))
        if nmax <= 0:
            continue
        n = np.arange(nmax + 1)
        rep = np.repeat(np.arange(len(combos)), nmax + 1)
        cnt = np.tile(n, len(combos))
        new_mass = cmass[rep] + cnt * me
        need = np.maximum(c_need[rep], np.maximum(cnt / rules.max_ratio.get(e, np.inf), rules.min_carbon))
        hal = n_hal[rep] + ((cnt > 0) if e in HALOGENS else 0)
        # carbons (with their least hydrogens) must still fit in the remaining mass
        keep = (need * ch_unit <= hi - new_mass + 1e-9) & (hal <= rules.max_halogen_types)
        combos = combos[rep[keep]]
        combos[:, j] = cnt[keep]
        cmass, c_need, n_hal = new_mass[keep], np.ceil(need[keep] - 1e-9), hal[keep]
        if len(combos) > max_grid:
            raise TooManyCandidates(f"{len(combos)} hetero-atom combinations for mass {mass:.4f}")
    # carbon range from the H/C limits: h = (R - 12c)/m_H within [hc_lo*c, hc_hi*c]
    rem = mass - cmass
    c_lo = np.maximum(np.ceil((rem - tol_da) / (12.0 + rules.hc[1] * _M_H)), c_need)
    c_hi = np.floor((rem + tol_da) / (12.0 + rules.hc[0] * _M_H))
    width = np.maximum(c_hi - c_lo + 1, 0).astype(np.int64)
    total = int(width.sum())
    if total > max_grid:
        raise TooManyCandidates(f"{total} (hetero, carbon) pairs for mass {mass:.4f}")
    which = np.repeat(np.arange(len(combos)), width)
    offset = np.arange(total) - np.repeat(np.cumsum(width) - width, width)
    c = c_lo[which] + offset
    h = np.rint((rem[which] - 12.0 * c) / _M_H)
    err = cmass[which] + 12.0 * c + h * _M_H - mass
    ok = (h >= 0) & (np.abs(err) <= tol_da)
    which, c, h, err = which[ok], c[ok], h[ok], err[ok]
    out = np.zeros((len(c), N_ELEMENTS), dtype=np.int64)
    out[:, idx] = combos[which]
    out[:, _C] = c.astype(np.int64)
    out[:, _H] = h.astype(np.int64)
    keep = passes_rules(out, rules, rdbe_parity, min_rdbe)
    out, err = out[keep], err[keep]
    order = np.argsort(np.abs(err), kind="stable")
    return out[order], err[order]


def passes_rules(counts: np.ndarray, rules: FormulaRules, rdbe_parity: str, min_rdbe: float) -> np.ndarray:
    """Boolean mask of rows of ``counts`` obeying H/C, element/C ratios, counts and RDBE parity/minimum."""
    c = counts[:, _C].astype(np.float64)
    cs = np.maximum(c, 1e-9)
    hc = counts[:, _H] / cs
    ok = (hc >= rules.hc[0] - 1e-9) & (hc <= rules.hc[1] + 1e-9) & (counts[:, _C] >= rules.min_carbon)
    for e, r in rules.max_ratio.items():
        ok &= counts[:, ELEMENT_INDEX[e]] <= r * c + 1e-9
    for e, n in rules.max_count.items():
        ok &= counts[:, ELEMENT_INDEX[e]] <= n
    r = rdbe(counts)
    ok &= r >= min_rdbe - 1e-9
    frac = np.abs(r - np.floor(r))
    if rdbe_parity == "integer":
        ok &= frac < 1e-6
    elif rdbe_parity == "half":
        ok &= np.abs(frac - 0.5) < 1e-6
    return ok


def formula_prior(counts: np.ndarray) -> np.ndarray:
    """Isotope-free log prior of neutral formulas: penalties for rare elements and unusual ratios.

    Hand-set (not fitted): -0.5 per halogen atom type, -1 for P, -0.5 for S,
    -1 per element/C ratio beyond the rules' *typical* ranges (Kind & Fiehn 2007 medians x2).
    """
    counts = np.atleast_2d(counts)
    c = np.maximum(counts[:, _C], 1).astype(np.float64)
    prior = np.zeros(len(counts))
    for e in HALOGENS:
        prior -= 0.5 * (counts[:, ELEMENT_INDEX[e]] > 0)
    prior -= 1.0 * (counts[:, ELEMENT_INDEX["P"]] > 0)
    prior -= 0.5 * (counts[:, ELEMENT_INDEX["S"]] > 0)
    typical = {"N": 0.5, "O": 0.8, "P": 0.1, "S": 0.2}
    for e, r in typical.items():
        prior -= 1.0 * (counts[:, ELEMENT_INDEX[e]] / c > r)
    hc = counts[:, _H] / c
    prior -= 1.0 * ((hc < 0.5) | (hc > 2.5))
    return prior
