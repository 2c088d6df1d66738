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

Ion formulas follow :mod:`.formula` (``C6H5+``); losses are neutral Hill formulas.
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

from .decompose import (
    DEFAULT_RULES,
    FormulaRules,
    TooManyCandidates,
    decompose_mass,
    formula_prior,
    subformula_candidates,
)
from .formula import (
    ORGANIC_ALPHABET,
    MassTolerance,
    adduct_delta,
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

def _as_table(loss_priors: Mapping[str, float] | LossPriorTable | None) -> LossPriorTable:
    if loss_priors is None:
        return default_loss_table()
    if isinstance(loss_priors, LossPriorTable):
        return loss_priors
    return compile_loss_priors(loss_priors)


def _clean_peaks(mz: Sequence[float], intensities: Sequence[float]) -> tuple[np.ndarray, np.ndarray] | Skipped:
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


def _resolve_tolerance(tolerance: MassTolerance | float | None, instrument_type: str | None) -> MassTolerance | Skipped:
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


def _resolve_adduct(adduct: str | Adduct | None) -> Adduct | Skipped:
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


def _solve(ion: np.ndarray, charge: int, mz: np.ndarray, inten: np.ndarray, tol: MassTolerance,
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
    add = _resolve_adduct(adduct)
    if isinstance(add, Skipped):
        return add
    tol = _resolve_tolerance(tolerance, instrument_type)
    if isinstance(tol, Skipped):
        return tol
    peaks = _clean_peaks(mz, intensities)
    if isinstance(peaks, Skipped):
        return peaks
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
    return _solve(ion, add.charge, peaks[0], peaks[1], tol, _as_table(loss_priors), params, neutral, add.name,
                  precursor_mz)


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
    add = _resolve_adduct(adduct)
    if isinstance(add, Skipped):
        return add
    tol = _resolve_tolerance(ppm, instrument_type)
    if isinstance(tol, Skipped):
        return tol
    peaks = _clean_peaks(mz, intensities)
    if isinstance(peaks, Skipped):
        return peaks
    mzs, inten = peaks
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
    table = _as_table(loss_priors)
    ranked = []
    for i in order:
        tree = _solve(ions[i], add.charge, mzs, inten, tol, table, params, format_formula(cands[i]), add.name,
                      float(precursor_mz))
        ranked.append((format_formula(cands[i]), float(tree.score + prior[i] + mass_score[i])))
    ranked.sort(key=lambda t: -t[1])
    return ranked


# --------------------------------------------------------------------------- MSn

def _row_get(row: Mapping[str, Any], *keys: str) -> Any:
    for k in keys:
        if row.get(k) is not None:
            return row[k]
    return None


def link_msn(
    spectra_rows: Sequence[Mapping[str, Any]],
    *,
    tolerance: MassTolerance | float | None = None,
    loss_priors: Mapping[str, float] | LossPriorTable | None = None,
    params: TreeParams = DEFAULT_PARAMS,
    chain_min_da: float = 0.02,
) -> FragTree | Skipped:
    """One tree from the MS2, MS3, MS4 ... spectra of one precursor of one compound.

    Rows carry ``ms_level``, ``precursor_mz_chain`` (precursor of each stage:
    [MS2 precursor, MS3 precursor, ...]), ``mz``, ``intensities``, ``formula``
    (or ``formula_reported``), ``adduct``, optional ``precursor_mz`` and
    ``instrument_type``. The MS2 tree is built first; each MSn spectrum's tree
    is computed with the formula of the MS(n-1) node matching its last chain
    m/z (within the tolerance, at least ``chain_min_da``) as precursor, and its
    nodes hang under that node (``ms_level`` set). Stages whose precursor is no
    tree node are logged and left out. Score sums all stages; explained
    intensity is the MS2 one.
    """
    rows = sorted((r for r in spectra_rows if r.get("ms_level") is not None), key=lambda r: int(r["ms_level"]))
    ms2 = [r for r in rows if int(r["ms_level"]) == 2]
    if not ms2:
        return Skipped("missing_ms2", "no MS2 spectrum among the rows")
    base_row = max(ms2, key=lambda r: len(r.get("mz") or []))
    tol = _resolve_tolerance(tolerance, base_row.get("instrument_type"))
    if isinstance(tol, Skipped):
        return tol
    table = _as_table(loss_priors)
    base = compute_tree(_row_get(base_row, "formula", "formula_reported"), base_row.get("adduct"),
                        base_row.get("mz") or [], base_row.get("intensities") or [],
                        precursor_mz=base_row.get("precursor_mz"), tolerance=tol, loss_priors=table, params=params)
    if isinstance(base, Skipped):
        return base
    nodes, edges, score = list(base.nodes), list(base.edges), base.score
    charge = 1 if base.ion_formula.endswith("+") else -1
    for row in rows:
        level = int(row["ms_level"])
        if level < 3:
            continue
        chain = row.get("precursor_mz_chain") or []
        if len(chain) < level - 1:
            log.warning("link_msn: MS%d row has precursor chain %r; left out", level, chain)
            continue
        target = float(chain[level - 2])
        allowed = max(float(tol.da(target)), chain_min_da)
        cand = [(abs(n.mz - target), i) for i, n in enumerate(nodes) if n.ms_level == level - 1]
        cand = [c for c in cand if c[0] <= allowed]
        if not cand:
            log.warning("link_msn: MS%d precursor %.4f matches no MS%d tree node; left out", level, target, level - 1)
            continue
        anchor = min(cand)[1]
        peaks = _clean_peaks(row.get("mz") or [], row.get("intensities") or [])
        if isinstance(peaks, Skipped):
            log.warning("link_msn: MS%d spectrum skipped: %s", level, peaks.reason)
            continue
        ion, _ = parse_formula(nodes[anchor].formula)
        sub = _solve(ion, charge, peaks[0], peaks[1], tol, table, params, base.precursor_formula, base.adduct,
                     target, ms_level=level)
        offset = len(nodes) - 1
        remap = {0: anchor, **{i: i + offset for i in range(1, len(sub.nodes))}}
        nodes.extend(sub.nodes[1:])
        edges.extend(TreeEdge(remap[e.parent], remap[e.child], e.loss, e.score) for e in sub.edges)
        score += sub.score
    return FragTree(precursor_formula=base.precursor_formula, adduct=base.adduct, ion_formula=base.ion_formula,
                    nodes=tuple(nodes), edges=tuple(edges), score=float(score),
                    explained_intensity=base.explained_intensity, n_peaks=base.n_peaks)
