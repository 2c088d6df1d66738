"""MSn fragmentation trees: the MS3, MS4 ... spectra of one precursor hung under their MS(n-1) nodes."""
from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

from .formula import MassTolerance, parse_formula
from .fragtree import (DEFAULT_PARAMS, FragTree, Skipped, TreeEdge, TreeParams, clean_tree_peaks, compute_tree,
                       loss_table, resolve_tolerance, solve_tree)
from .loss_priors import LossPriorTable

log = logging.getLogger(__name__)


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
    tol = resolve_tolerance(tolerance, base_row.get("instrument_type"))
    if isinstance(tol, Skipped):
        return tol
    table = loss_table(loss_priors)
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
        peaks = clean_tree_peaks(row.get("mz") or [], row.get("intensities") or [])
        if isinstance(peaks, Skipped):
            log.warning("link_msn: MS%d spectrum skipped: %s", level, peaks.reason)
            continue
        ion, _ = parse_formula(nodes[anchor].formula)
        sub = solve_tree(ion, charge, peaks[0], peaks[1], tol, table, params, base.precursor_formula, base.adduct,
                     target, ms_level=level)
        offset = len(nodes) - 1
        remap = {0: anchor, **{i: i + offset for i in range(1, len(sub.nodes))}}
        nodes.extend(sub.nodes[1:])
        edges.extend(TreeEdge(remap[e.parent], remap[e.child], e.loss, e.score) for e in sub.edges)
        score += sub.score
    return FragTree(precursor_formula=base.precursor_formula, adduct=base.adduct, ion_formula=base.ion_formula,
                    nodes=tuple(nodes), edges=tuple(edges), score=float(score),
                    explained_intensity=base.explained_intensity, n_peaks=base.n_peaks)
