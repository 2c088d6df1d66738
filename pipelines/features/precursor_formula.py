"""Molecular formulas of an unknown precursor, ranked by fragmentation-tree score (SIRIUS-style).

:func:`rank_precursor_formulas` decomposes the neutral mass over an element alphabet (Golden-Rules
filters), prefilters by mass error, formula prior and fragment compatibility, and scores the best
candidates with full trees (:mod:`.fragtree`).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from speclake.pipelines.normalize.adduct import Adduct
from speclake.pipelines.normalize.masses import ELECTRON_MASS

from .decompose import DEFAULT_RULES, FormulaRules, TooManyCandidates, decompose_mass, formula_prior
from .formula import ORGANIC_ALPHABET, MassTolerance, adduct_delta, format_formula
from .fragtree import DEFAULT_PARAMS, Skipped, TreeParams, loss_table, resolve_inputs, solve_tree
from .loss_priors import LossPriorTable


_FRAGMENT_RULES = FormulaRules(hc=(0.0, 4.0), max_ratio={}, min_carbon=0)


def _fragment_compatibility(cands_ion: np.ndarray, charge: int, mz: np.ndarray, rel: np.ndarray, theo: float,
                            tol: MassTolerance, params: TreeParams, n_peaks: int = 8) -> np.ndarray:
    """Fast prefilter: summed intensity score of the top fragment peaks each candidate could explain."""
    frag = np.nonzero(mz < theo - 1.5)[0]
    frag = frag[np.argsort(-rel[frag], kind="stable")[:n_peaks]]
    score = np.zeros(len(cands_ion))
    cols = np.nonzero(cands_ion.any(axis=0))[0]
    for p in frag:
        try:
            f, _ = decompose_mass(float(mz[p] + charge * ELECTRON_MASS), float(tol.da(mz[p])),
                                  rules=_FRAGMENT_RULES, rdbe_parity="any", min_rdbe=-0.5, max_grid=200_000)
        except TooManyCandidates:
            continue
        if not len(f):
            continue
        f = f[:, cols]
        ok = np.all(f[None, :, :] <= cands_ion[:, None, cols], axis=2).any(axis=1)
        score += ok * max(math.log(rel[p] / params.noise_level), params.intensity_floor)
    return score


def rank_precursor_formulas(
    precursor_mz: float | None,
    adduct: str | Adduct | None,
    mz: Sequence[float],
    intensities: Sequence[float],
    ppm: MassTolerance | float | None = None,
    *,
    instrument_type: str | None = None,
    top_k: int = 50,
    alphabet: tuple[str, ...] = ORGANIC_ALPHABET,
    rules: FormulaRules = DEFAULT_RULES,
    loss_priors: Mapping[str, float] | LossPriorTable | None = None,
    params: TreeParams = DEFAULT_PARAMS,
) -> list[tuple[str, float]] | Skipped:
    """Rank neutral precursor formulas of an unknown by tree score + formula prior + precursor mass error.

    Candidates come from :func:`~.decompose.decompose_mass` of the neutral mass
    (Golden-Rules filters, RDBE parity of the ion form); the ``top_k`` by a fast
    prefilter (mass error, prior, fragment compatibility of the 8 most intense
    peaks) get full trees. Returns [(formula, score)] best first, or a Skipped.
    """
    if precursor_mz is None or not isinstance(precursor_mz, (int, float)) or not math.isfinite(precursor_mz) \
            or precursor_mz <= 0:
        return Skipped("missing_precursor", f"precursor m/z {precursor_mz!r} is missing or not a number")
    inputs = resolve_inputs(adduct, ppm, instrument_type, mz, intensities)
    if isinstance(inputs, Skipped):
        return inputs
    add, tol, (mzs, inten) = inputs
    mass = add.neutral_mass(float(precursor_mz))
    if mass > params.max_precursor_mass:
        return Skipped("precursor_too_heavy", f"neutral mass {mass:.2f} Da > {params.max_precursor_mass:g} Da limit")
    tol_da = float(tol.da(precursor_mz))
    try:
        if add.intrinsic:
            cands, err = decompose_mass(mass, tol_da, alphabet, rules, rdbe_parity="any", min_rdbe=-0.5)
        else:
            cands, err = decompose_mass(mass, tol_da, alphabet, rules, rdbe_parity="integer", min_rdbe=0.0)
    except TooManyCandidates as exc:
        return Skipped("too_many_candidates", str(exc))
    if len(cands) > params.max_decomposition_candidates:
        return Skipped("too_many_candidates", f"{len(cands)} formulas within {tol_da * 1e3:.1f} mDa of {mass:.4f}")
    ions = cands + adduct_delta(add)
    ok = (ions >= 0).all(axis=1)
    cands, err, ions = cands[ok], err[ok], ions[ok]
    if not len(cands):
        return Skipped("no_candidates", f"no formula within {tol_da * 1e3:.1f} mDa of neutral mass {mass:.4f}")
    rel = inten / inten.max()
    prior = formula_prior(cands)
    mass_score = -0.5 * np.square(err / (tol_da / params.sigma_ratio))
    pre = prior + mass_score + _fragment_compatibility(ions, add.charge, mzs, rel, float(precursor_mz), tol, params)
    order = np.argsort(-pre, kind="stable")[:top_k]
    table = loss_table(loss_priors)
    ranked = []
    for i in order:
        tree = solve_tree(ions[i], add.charge, mzs, inten, tol, table, params, format_formula(cands[i]), add.name,
                      float(precursor_mz))
        ranked.append((format_formula(cands[i]), float(tree.score + prior[i] + mass_score[i])))
    ranked.sort(key=lambda t: -t[1])
    return ranked
