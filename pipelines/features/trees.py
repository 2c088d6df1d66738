"""Fragmentation trees on Spark: per-spectrum calls of :mod:`.fragtree`, MSn spectra linked into one tree.

Spectra arrive grouped (``tree_group``): a spectrum alone, or all MS2/MS3/MS4
spectra of one precursor of one compound (same InChIKey, adduct and first
precursor m/z) when the group holds MSn spectra. In such a group the MS2
spectrum with most peaks becomes the base of the MSn tree
(:func:`.msn.link_msn`); other MS2 spectra get their own trees and the MSn
spectra are recorded as linked (skip code ``linked_into_msn_tree``).
"""
from __future__ import annotations

import logging
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from .fragtree import TreeParams
from .prepare import rows_to_batches
from .tables import FRAGTREES, TREE_FEATURE_NAMES

log = logging.getLogger(__name__)


class TreeSettings(BaseModel):
    """Fragmentation-tree settings (passed to :func:`.fragtree.compute_tree`); ``scoring`` holds every
    constant of the tree heuristic (``scoring.max_peaks``: most intense fragment peaks in a tree)."""

    model_config = ConfigDict(extra="forbid")

    tolerance_ppm: float | None = None   # None: from the instrument type
    msn_precursor_decimals: int = 2      # MSn linking: first precursor m/z rounded to this
    scoring: TreeParams = Field(default_factory=TreeParams)


#: Output of :func:`tree_batches`: fragtrees rows (kind ``tree``) and skips (kind ``skip``).
TREE_OUT = pa.schema(
    [pa.field("kind", pa.string())]
    + [f.with_nullable(True) for f in FRAGTREES if f.name not in ("settings_hash", "features_run_id")]
    + [pa.field("tree_features", pa.list_(pa.float32())), pa.field("skip_code", pa.string()),
       pa.field("skip_reason", pa.string())]
)

#: Columns :func:`tree_batches` needs: prepared spectra plus the compound formula and the group key.
TREE_INPUT_COLUMNS = ("spectrum_id", "inchikey", "formula", "adduct", "ms_level", "precursor_mz",
                      "precursor_mz_chain", "instrument_type", "mz", "intensities", "tree_group")


def tree_features(row: dict[str, Any]) -> list[float]:
    """Graph features of a tree row (:data:`TREE_FEATURE_NAMES`): size, depth, leaves, branching, scores."""
    nodes, edges = row.get("nodes") or [], row.get("edges") or []
    n = len(nodes)
    children: dict[int, list[int]] = {}
    for e in edges:
        children.setdefault(int(e["parent"]), []).append(int(e["child"]))
    depth, stack = 0, [(0, 0)]
    while stack:
        node, d = stack.pop()
        depth = max(depth, d)
        stack.extend((c, d + 1) for c in children.get(node, ()))
    has_child = {p for p, cs in children.items() if cs}
    leaves = sum(1 for i in range(n) if i not in has_child)
    ppm = [abs(x["ppm_error"]) for x in nodes[1:] if x.get("ppm_error") is not None]
    levels = {int(x.get("ms_level") or 2) for x in nodes}
    score = float(row.get("score") or 0.0)
    values = [n, len(edges), depth, leaves, max((len(c) for c in children.values()), default=0),
              float(row.get("explained_intensity") or 0.0), score, score / n if n else 0.0,
              float(np.mean(ppm)) if ppm else 0.0, len(levels)]
    if len(values) != len(TREE_FEATURE_NAMES):
        raise RuntimeError("tree_features out of step with TREE_FEATURE_NAMES")
    return [float(v) for v in values]


def _skip(row: dict[str, Any], code: str, reason: str) -> dict[str, Any]:
    return {"kind": "skip", "spectrum_id": row["spectrum_id"], "inchikey": row.get("inchikey"),
            "skip_code": code, "skip_reason": reason}


def _tree_row(row: dict[str, Any], tree: Any, linked: list[dict[str, Any]]) -> dict[str, Any]:
    out = tree.to_row()
    out.update(kind="tree", spectrum_id=row["spectrum_id"], inchikey=row.get("inchikey"),
               max_ms_level=max([2] + [int(n.get("ms_level") or 2) for n in out["nodes"]]),
               linked_spectrum_ids=[r["spectrum_id"] for r in linked])
    out["tree_features"] = tree_features(out)
    return out


def tree_for_spectrum(row: dict[str, Any], settings: TreeSettings, loss_table: Any) -> dict[str, Any]:
    """Tree (or skip) row of one MS2 spectrum of a known compound."""
    from .fragtree import Skipped, compute_tree

    if not row.get("inchikey") or not row.get("formula"):
        return _skip(row, "unannotated", "no structure, hence no precursor formula for the tree")
    try:
        tree = compute_tree(row["formula"], row.get("adduct"), row["mz"], row["intensities"],
                            precursor_mz=row.get("precursor_mz"), instrument_type=row.get("instrument_type"),
                            tolerance=settings.tolerance_ppm, loss_priors=loss_table, params=settings.scoring)
    except Exception as exc:  # a solver bug must not lose the batch: record it
        log.exception("fragmentation tree failed for %s", row["spectrum_id"])
        return _skip(row, "internal_error", f"{type(exc).__name__}: {exc}")
    if isinstance(tree, Skipped):
        return _skip(row, tree.reason_code, tree.reason)
    return _tree_row(row, tree, [])


def trees_for_group(rows: list[dict[str, Any]], settings: TreeSettings, loss_table: Any) -> list[dict[str, Any]]:
    """Tree and skip rows of one group: a single spectrum, or the MS2..MSn spectra of one precursor."""
    from .fragtree import Skipped
    from .msn import link_msn

    msn = [r for r in rows if (r.get("ms_level") or 0) >= 3]
    ms2 = [r for r in rows if r.get("ms_level") == 2]
    if not msn:
        return [tree_for_spectrum(r, settings, loss_table) for r in ms2]
    if not ms2:
        return [_skip(r, "msn_without_ms2", "no MS2 spectrum of the same precursor to link this MSn spectrum to")
                for r in msn]
    base = max(ms2, key=lambda r: (len(r.get("mz") or []), r["spectrum_id"]))
    out = [tree_for_spectrum(r, settings, loss_table) for r in ms2 if r is not base]
    try:
        tree = link_msn([base] + msn, tolerance=settings.tolerance_ppm, loss_priors=loss_table, params=settings.scoring)
    except Exception as exc:
        log.exception("MSn tree failed for %s", base["spectrum_id"])
        tree = Skipped("internal_error", f"{type(exc).__name__}: {exc}")
    if isinstance(tree, Skipped):
        out.append(_skip(base, tree.reason_code, tree.reason))
        out.extend(_skip(r, "msn_base_skipped", f"the MS2 base {base['spectrum_id']} has no tree: {tree.reason_code}")
                   for r in msn)
        return out
    out.append(_tree_row(base, tree, msn))
    out.extend(_skip(r, "linked_into_msn_tree", f"linked into the MSn tree of MS2 spectrum {base['spectrum_id']}")
               for r in msn)
    return out


def _groups(batches: Iterator[pa.RecordBatch]) -> Iterator[list[dict[str, Any]]]:
    """Consecutive rows with the same ``tree_group`` (input sorted by it within the partition)."""
    current: list[dict[str, Any]] = []
    key = None
    for batch in batches:
        for row in batch.to_pylist():
            if current and row["tree_group"] != key:
                yield current
                current = []
            key = row["tree_group"]
            current.append(row)
    if current:
        yield current


def tree_batches(batches: Iterator[pa.RecordBatch], *, settings_json: str) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: prepared spectra sorted by ``tree_group`` in, :data:`TREE_OUT` rows out."""
    from .loss_priors import default_loss_table

    settings = TreeSettings.model_validate_json(settings_json)
    table = default_loss_table()

    def rows() -> Iterator[dict[str, Any]]:
        for group in _groups(batches):
            yield from trees_for_group(group, settings, table)

    yield from rows_to_batches(rows(), TREE_OUT, batch_rows=256)
