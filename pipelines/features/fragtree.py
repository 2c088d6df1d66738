"""SIRIUS-style fragmentation trees of one MS/MS spectrum.

Vertices are (peak, candidate ion formula) pairs, where the candidates of a peak
are the sub-formulas of the precursor ion formula within the mass tolerance
(:func:`~.decompose.subformula_candidates`). An edge u -> v exists when v's
formula is a proper sub-formula of u's; it is labelled with the neutral loss
u - v and weighted

    w(u, v) = intensity(v) + mass_error(v) + loss_prior(u - v) + penalties(v, loss)

with intensity = max(log(rel_int / noise), floor), mass error a Gaussian
log-likelihood (tolerance = ``sigma_ratio`` sigmas), loss priors from
:mod:`.loss_priors`, a penalty for odd-electron fragments of an even-electron
precursor and for losses with negative RDBE.

**Solver.** The maximum colorful subtree (each peak used at most once) is found
with a *greedy insertion heuristic with look-ahead*, not exactly: peaks are
visited by decreasing m/z (parents are always heavier); each peak takes the
candidate maximising (best edge from the tree so far) + (what its own edges
could add to lighter peaks beyond their current best); it is inserted if that
sum is positive. Leaves with negative edge weight are pruned at the end.

Ion formulas follow :mod:`.formula` (``C6H5+``); losses are neutral Hill formulas. Formulas of an
unknown precursor: :mod:`.precursor_formula`; MSn trees: :mod:`.msn`.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from speclake.pipelines.normalize import peaks as pk
from speclake.pipelines.normalize.adduct import Adduct
from speclake.pipelines.normalize.masses import ELECTRON_MASS

from .decompose import subformula_candidates
from .formula import (
    MassTolerance,
    format_formula,
    ion_counts,
    ion_mz,
    parse_formula,
    rdbe,
    singly_charged_adduct,
    tolerance_for_instrument,
)
from .loss_priors import LossPriorTable, compile_loss_priors, default_loss_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Skipped:
    """Why no tree/ranking was computed for a spectrum (never an exception for bad data)."""

    reason_code: str
    reason: str

    def to_row(self) -> dict[str, Any]:
        """Plain-python row for Arrow."""
        return {"skip_reason_code": self.reason_code, "skip_reason": self.reason}


@dataclass(frozen=True)
class TreeNode:
    """One explained peak: observed m/z, ion formula, intensity (as given), m/z error in ppm (observed - theory)."""

    mz: float
    formula: str
    intensity: float
    ppm_error: float
    ms_level: int = 2


@dataclass(frozen=True)
class TreeEdge:
    """Fragmentation step ``parent -> child`` (node indices) losing the neutral ``loss``; ``score`` = edge weight."""

    parent: int
    child: int
    loss: str
    score: float


@dataclass(frozen=True)
class FragTree:
    """A fragmentation tree; node 0 is the precursor ion (intensity 0 when its peak is absent)."""

    precursor_formula: str   # neutral formula of the compound
    adduct: str
    ion_formula: str
    nodes: tuple[TreeNode, ...]
    edges: tuple[TreeEdge, ...]
    score: float
    explained_intensity: float  # share of the spectrum's total intensity on tree nodes
    n_peaks: int

    def to_row(self) -> dict[str, Any]:
        """Plain python types (lists of structs) matching :data:`FRAGTREE_TYPE`."""
        return {
            "precursor_formula": self.precursor_formula,
            "adduct": self.adduct,
            "ion_formula": self.ion_formula,
            "nodes": [asdict(n) for n in self.nodes],
            "edges": [asdict(e) for e in self.edges],
            "score": float(self.score),
            "explained_intensity": float(self.explained_intensity),
            "n_peaks": int(self.n_peaks),
        }


#: Arrow type of :meth:`FragTree.to_row`.
FRAGTREE_TYPE = pa.struct([
    pa.field("precursor_formula", pa.string()),
    pa.field("adduct", pa.string()),
    pa.field("ion_formula", pa.string()),
    pa.field("nodes", pa.list_(pa.struct([
        pa.field("mz", pa.float64()), pa.field("formula", pa.string()), pa.field("intensity", pa.float64()),
        pa.field("ppm_error", pa.float64()), pa.field("ms_level", pa.int8())]))),
    pa.field("edges", pa.list_(pa.struct([
        pa.field("parent", pa.int32()), pa.field("child", pa.int32()), pa.field("loss", pa.string()),
        pa.field("score", pa.float64())]))),
    pa.field("score", pa.float64()),
    pa.field("explained_intensity", pa.float64()),
    pa.field("n_peaks", pa.int32()),
])


class TreeParams(BaseModel):
    """Scoring and search settings of the tree heuristic (``TreeSettings.scoring`` of the feature job,
    so each of them is part of the features settings hash)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_peaks: int = 60               # most intense fragment peaks considered
    noise_level: float = 0.002        # relative intensity scoring 0
    intensity_floor: float = 0.0      # lowest intensity score
    sigma_ratio: float = 2.5          # tolerance = sigma_ratio * sigma of the mass-error Gaussian
    radical_penalty: float = -1.0     # odd-electron fragment of an even-electron precursor
    negative_rdbe_loss_penalty: float = -2.0
    lookahead: float = 1.0
    precursor_mismatch_factor: float = 5.0  # known formula vs reported precursor m/z: allowed tolerance multiple
    precursor_mismatch_min_da: float = 0.02
    max_precursor_mass: float = 1000.0       # unknowns: decomposition limit (Da)
    max_decomposition_candidates: int = 20000


DEFAULT_PARAMS = TreeParams()


# --------------------------------------------------------------------------- input checks

def loss_table(loss_priors: Mapping[str, float] | LossPriorTable | None) -> LossPriorTable:
    if loss_priors is None:
        return default_loss_table()
    if isinstance(loss_priors, LossPriorTable):
        return loss_priors
    return compile_loss_priors(loss_priors)


def clean_tree_peaks(mz: Sequence[float], intensities: Sequence[float]) -> tuple[np.ndarray, np.ndarray] | Skipped:
    """Finite, positive peaks as float64 arrays (as ordered), or a Skipped for unusable peak lists."""
    try:
        m = np.asarray(mz, dtype=np.float64).ravel()
        i = np.asarray(intensities, dtype=np.float64).ravel()
    except (TypeError, ValueError) as err:
        return Skipped("invalid_peaks", f"peaks are not numeric: {err}")
    if m.shape != i.shape:
        return Skipped("invalid_peaks", f"{len(m)} m/z values but {len(i)} intensities")
    m, i = pk.remove_invalid_intensities(*pk.remove_invalid_mz(m, i))
    if len(m) < 2:
        return Skipped("too_few_peaks", f"{len(m)} usable peak(s); a tree needs at least 2")
    if pk.is_unit_resolution(m, 1):
        return Skipped("low_resolution", "all peak m/z have at most 1 decimal (unit/low resolution)")
    return m, i


def resolve_tolerance(tolerance: MassTolerance | float | None, instrument_type: str | None) -> MassTolerance | Skipped:
    if isinstance(tolerance, MassTolerance):
        return tolerance
    if tolerance is not None:
        if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance > 0):
            return Skipped("invalid_tolerance", f"ppm tolerance must be a positive number, not {tolerance!r}")
        return MassTolerance(ppm=float(tolerance))
    tol = tolerance_for_instrument(instrument_type)
    if tol is None:
        return Skipped("low_resolution", f"instrument type {instrument_type!r} has unit resolution; not decomposable")
    return tol


def resolve_inputs(adduct: str | Adduct | None, tolerance: MassTolerance | float | None, instrument_type: str | None,
                   mz: Sequence[float], intensities: Sequence[float],
                   ) -> tuple[Adduct, MassTolerance, tuple[np.ndarray, np.ndarray]] | Skipped:
    """Adduct, mass tolerance and cleaned peaks of a tree's input, or the first reason it is unusable."""
    add = resolve_adduct(adduct)
    if isinstance(add, Skipped):
        return add
    tol = resolve_tolerance(tolerance, instrument_type)
    if isinstance(tol, Skipped):
        return tol
    peaks = clean_tree_peaks(mz, intensities)
    if isinstance(peaks, Skipped):
        return peaks
    return add, tol, peaks


def resolve_adduct(adduct: str | Adduct | None) -> Adduct | Skipped:
    if not adduct:
        return Skipped("missing_adduct", "no adduct / precursor type")
    try:
        return singly_charged_adduct(adduct)
    except ValueError as err:
        return Skipped("unsupported_adduct", str(err))


# --------------------------------------------------------------------------- core

def _node_scores(peak_idx: np.ndarray, formulas: np.ndarray, err_da: np.ndarray, rel: np.ndarray,
                 tol_da: np.ndarray, root_odd: bool, params: TreeParams) -> np.ndarray:
    inten = np.maximum(np.log(rel[peak_idx] / params.noise_level), params.intensity_floor)
    sigma = tol_da[peak_idx] / params.sigma_ratio
    mass = -0.5 * np.square(err_da / sigma)
    r = rdbe(formulas)
    odd = np.abs(r - np.floor(r)) < 1e-6
    radical = np.where(odd & ~root_odd, params.radical_penalty, 0.0)
    return inten + mass + radical


def _greedy_colorful_tree(W: np.ndarray, group_start: np.ndarray, params: TreeParams) -> tuple[np.ndarray, np.ndarray]:
    """Greedy insertion with look-ahead over vertex groups (colours) sorted by decreasing mass.

    ``W[u, v]``: edge weight or -inf; vertex 0 is the root. Returns (parent of each
    vertex or -1 when absent, weight of its incoming edge).
    """
    n = W.shape[0]
    parent = np.full(n, -1, dtype=np.int64)
    weight = np.zeros(n)
    best_in = W[0].copy()
    best_from = np.zeros(n, dtype=np.int64)
    bounds = np.append(group_start, n)
    for g in range(len(group_start)):
        s, e = int(bounds[g]), int(bounds[g + 1])
        gain = best_in[s:e]
        if not np.isfinite(gain).any():
            continue
        obj = gain.copy()
        if params.lookahead and e < n:
            later = W[s:e, e:] - np.maximum(best_in[e:], 0.0)[None, :]
            later = np.maximum(later, 0.0)
            later[~np.isfinite(later)] = 0.0
            starts = bounds[g + 1:-1] - e
            obj = obj + params.lookahead * np.maximum.reduceat(later, starts, axis=1).sum(axis=1)
        j = int(np.argmax(obj))
        if not np.isfinite(gain[j]) or obj[j] <= 0:
            continue
        v = s + j
        parent[v] = best_from[v]
        weight[v] = gain[j]
        better = W[v] > best_in
        best_in[better] = W[v, better]
        best_from[better] = v
    # prune leaves with negative incoming weight until none is left
    while True:
        inside = parent >= 0
        has_child = np.zeros(n, dtype=bool)
        has_child[parent[inside]] = True
        drop = inside & ~has_child & (weight < 0)
        if not drop.any():
            return parent, weight
        parent[drop] = -1


def solve_tree(ion: np.ndarray, charge: int, mz: np.ndarray, inten: np.ndarray, tol: MassTolerance,
           table: LossPriorTable, params: TreeParams, neutral: str, adduct_name: str,
           precursor_mz: float | None, ms_level: int = 2) -> FragTree:
    """Fragmentation tree of one spectrum for a known precursor ion formula."""
    theo = float(ion_mz(ion, charge))
    total = float(inten.sum())
    rel = inten / inten.max()
    tol_theo = float(tol.da(theo))
    root_odd = abs(float(rdbe(ion)) % 1.0) < 1e-6
    # root: the precursor peak, if present (closest within tolerance)
    d = np.abs(mz - theo)
    root_peak = int(np.argmin(d)) if d.min() <= tol_theo else -1
    frag = np.nonzero(mz < theo - tol_theo)[0]
    if len(frag) > params.max_peaks:
        frag = frag[np.argsort(-inten[frag], kind="stable")[: params.max_peaks]]
    frag = frag[np.argsort(-mz[frag], kind="stable")]       # decreasing m/z = colour order
    fmz = mz[frag]
    ftol = tol.da(fmz) * np.ones(len(fmz))
    pk, forms, err = subformula_candidates(ion, fmz + charge * ELECTRON_MASS, ftol)
    nscore = _node_scores(pk, forms, err, rel[frag], ftol, root_odd, params)
    V = np.vstack([ion[None, :], forms])
    nv = len(V)
    cols = np.nonzero(ion)[0]
    Vc = V[:, cols]
    sub = np.all(Vc[None, :, :] <= Vc[:, None, :], axis=2)  # sub[u, v]: v subset of u
    np.fill_diagonal(sub, False)
    sub[:, 0] = False
    u_idx, v_idx = np.nonzero(sub)
    W = np.full((nv, nv), -np.inf)
    if len(u_idx):
        loss = V[u_idx] - V[v_idx]
        lrd = rdbe(loss)
        w = nscore[v_idx - 1] + table.score(loss) + np.where(lrd < -1e-6, params.negative_rdbe_loss_penalty, 0.0)
        W[u_idx, v_idx] = w
    group_start = np.nonzero(np.diff(np.concatenate([[-1], pk])) != 0)[0] + 1 if len(pk) else np.array([], dtype=np.int64)
    parent, weight = _greedy_colorful_tree(W, group_start, params)
    # assemble nodes: root first, then tree vertices by decreasing m/z
    if root_peak >= 0:
        root = TreeNode(float(mz[root_peak]), format_formula(ion, charge), float(inten[root_peak]),
                        float((mz[root_peak] - theo) / theo * 1e6), ms_level)
    else:
        obs = precursor_mz if precursor_mz is not None else theo
        root = TreeNode(float(obs), format_formula(ion, charge), 0.0, float((obs - theo) / theo * 1e6), ms_level)
    chosen = np.nonzero(parent >= 0)[0]
    index = {0: 0}
    nodes = [root]
    for v in chosen:
        index[int(v)] = len(nodes)
        p = frag[pk[v - 1]]
        nodes.append(TreeNode(float(mz[p]), format_formula(V[v], charge), float(inten[p]),
                              float(-err[v - 1] / mz[p] * 1e6), ms_level))
    edges = tuple(TreeEdge(index[int(parent[v])], index[int(v)], format_formula(V[parent[v]] - V[v]), float(weight[v]))
                  for v in chosen)
    explained = sum(n.intensity for n in nodes) / total if total > 0 else 0.0
    return FragTree(precursor_formula=neutral, adduct=adduct_name, ion_formula=format_formula(ion, charge),
                    nodes=tuple(nodes), edges=edges, score=float(weight[chosen].sum()),
                    explained_intensity=float(explained), n_peaks=int(len(mz)))


# --------------------------------------------------------------------------- public API

def compute_tree(
    formula: str | None,
    adduct: str | Adduct | None,
    mz: Sequence[float],
    intensities: Sequence[float],
    *,
    precursor_mz: float | None = None,
    instrument_type: str | None = None,
    tolerance: MassTolerance | float | None = None,
    loss_priors: Mapping[str, float] | LossPriorTable | None = None,
    params: TreeParams = DEFAULT_PARAMS,
) -> FragTree | Skipped:
    """Fragmentation tree of a spectrum of a known compound (neutral ``formula`` + ``adduct``).

    ``tolerance``: a :class:`MassTolerance`, a ppm number, or None to derive it
    from ``instrument_type`` (unknown types: Q-TOF tolerance). Returns a
    :class:`Skipped` for unusable input (missing formula/adduct, unit
    resolution, fewer than 2 peaks, precursor m/z inconsistent with the formula).
    """
    if not formula:
        return Skipped("missing_formula", "no precursor formula")
    inputs = resolve_inputs(adduct, tolerance, instrument_type, mz, intensities)
    if isinstance(inputs, Skipped):
        return inputs
    add, tol, peaks = inputs
    try:
        counts, fcharge = parse_formula(formula)
        ion = counts if (add.intrinsic and fcharge) else ion_counts(add, counts)
    except ValueError as err:
        code = "unsupported_element" if "unsupported element" in str(err) else "invalid_formula"
        return Skipped(code, str(err))
    if fcharge and not add.intrinsic:
        return Skipped("invalid_formula", f"charged formula {formula!r} with adduct {add.name}")
    theo = float(ion_mz(ion, add.charge))
    if precursor_mz is not None:
        if not (isinstance(precursor_mz, (int, float)) and math.isfinite(precursor_mz)):
            return Skipped("missing_precursor", f"precursor m/z {precursor_mz!r} is not a number")
        allowed = max(params.precursor_mismatch_factor * float(tol.da(theo)), params.precursor_mismatch_min_da)
        if abs(precursor_mz - theo) > allowed:
            return Skipped("precursor_mismatch",
                           f"precursor m/z {precursor_mz:.4f} vs {theo:.4f} for {formula} {add.name}")
    neutral = format_formula(counts) if not fcharge else format_formula(counts, fcharge)
    return solve_tree(ion, add.charge, peaks[0], peaks[1], tol, loss_table(loss_priors), params, neutral, add.name,
                  precursor_mz)
