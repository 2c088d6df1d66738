"""Reference-panel similarity features: each spectrum's cosine, modified cosine and entropy similarity to a panel.

The default panel is chosen per ion mode, deterministically: one candidate
spectrum per structure (2D InChIKey; the one with most peaks), at most
``n_candidates`` of them taken in hash order of their ids; candidates are linked
when their modified cosine is at least ``link_threshold``; the panel is grown
greedily by the candidate that links the most candidates not yet covered
(ties: more links in all, then id), so it holds well-connected compounds that
represent different regions of the library. ``panel_ids`` replaces the choice.
"""
from __future__ import annotations

import hashlib
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from .prepare import rows_to_batches
from .similarity import Panel, Peaks, build_panel, cosine_to_panel, entropy_to_panel, modified_cosine_to_panel

log = logging.getLogger(__name__)


class RefSimSettings(BaseModel):
    """Reference panel choice and similarity settings."""

    model_config = ConfigDict(extra="forbid")

    panel_size: int = 200                 # per ion mode
    n_candidates: int = 2000              # per ion mode, one per structure
    link_threshold: float = 0.7           # modified cosine linking two candidates
    min_panel_peaks: int = 5              # panel spectra need at least this many peaks
    panel_ids: list[str] | None = None    # explicit panel (spectrum ids) instead of the default choice
    tolerance: float = 0.02               # Da, cosine and modified cosine
    entropy_tolerance: float = 0.02       # Da
    entropy_weighted: bool = True


PANEL_SCHEMA = pa.schema([
    pa.field("ionmode", pa.string()),
    pa.field("position", pa.int32()),
    pa.field("spectrum_id", pa.string()),
    pa.field("precursor_mz", pa.float64()),
    pa.field("mz", pa.list_(pa.float64())),
    pa.field("intensities", pa.list_(pa.float32())),
    pa.field("degree", pa.int32()),
])

REFSIM_OUT = pa.schema([
    pa.field("spectrum_id", pa.string()),
    pa.field("refsim_cosine", pa.list_(pa.float32())),
    pa.field("refsim_modified_cosine", pa.list_(pa.float32())),
    pa.field("refsim_entropy", pa.list_(pa.float32())),
    pa.field("skip_code", pa.string()),
    pa.field("skip_reason", pa.string()),
])


def id_hash(spectrum_id: str) -> str:
    """Deterministic sampling order of spectra."""
    return hashlib.sha1(spectrum_id.encode()).hexdigest()


def link_matrix(spectra: list[Peaks], settings: RefSimSettings) -> np.ndarray:
    """Boolean (n x n) matrix: modified cosine >= ``link_threshold`` (diagonal False)."""
    panel = build_panel([str(i) for i in range(len(spectra))], spectra)
    links = np.zeros((len(spectra), len(spectra)), dtype=bool)
    for i, s in enumerate(spectra):
        links[i] = modified_cosine_to_panel(panel, s, settings.tolerance) >= settings.link_threshold
    links |= links.T
    np.fill_diagonal(links, False)
    return links


def greedy_cover(links: np.ndarray, ids: list[str], size: int) -> list[int]:
    """Indices chosen greedily by newly covered neighbours, then degree, then id; at most ``size``."""
    n = len(ids)
    degree = links.sum(axis=1)
    covered = np.zeros(n, dtype=bool)
    chosen: list[int] = []
    available = np.ones(n, dtype=bool)
    id_rank = np.argsort(np.argsort(np.asarray(ids, dtype=object)))
    while len(chosen) < min(size, n):
        gain = (links & ~covered[None, :]).sum(axis=1) + (~covered).astype(np.int64)
        key = np.where(available, gain * (n + 1) * (n + 1) + degree * (n + 1) + (n - id_rank), -1)
        best = int(np.argmax(key))
        chosen.append(best)
        available[best] = False
        covered[best] = True
        covered |= links[best]
    return chosen


def choose_panel(candidates: list[dict[str, Any]], settings: RefSimSettings) -> list[dict[str, Any]]:
    """Panel rows (:data:`PANEL_SCHEMA`) from candidate rows (``spectrum_id``, ``ionmode``, peaks)."""
    out: list[dict[str, Any]] = []
    by_mode: dict[str, list[dict[str, Any]]] = {}
    for c in candidates:
        by_mode.setdefault(c["ionmode"], []).append(c)
    for mode in sorted(by_mode):
        rows = sorted(by_mode[mode], key=lambda r: id_hash(r["spectrum_id"]))[: settings.n_candidates]
        spectra = [Peaks.of(r["mz"], r["intensities"], r["precursor_mz"]) for r in rows]
        links = link_matrix(spectra, settings)
        ids = [r["spectrum_id"] for r in rows]
        chosen = greedy_cover(links, ids, settings.panel_size)
        degree = links.sum(axis=1)
        for pos, i in enumerate(chosen):
            r = rows[i]
            out.append({"ionmode": mode, "position": pos, "spectrum_id": r["spectrum_id"],
                        "precursor_mz": r["precursor_mz"], "mz": list(r["mz"]), "intensities": list(r["intensities"]),
                        "degree": int(degree[i])})
        log.info("reference panel %s: %d of %d candidates, median degree %.0f", mode, len(chosen), len(rows),
                 float(np.median(degree[chosen])) if chosen else 0.0)
    return out


def save_panel(rows: list[dict[str, Any]], path: Path) -> None:
    """Write panel rows atomically as Parquet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=PANEL_SCHEMA), tmp)
    os.replace(tmp, path)


def panel_ids(path: str | Path) -> dict[str, list[str]]:
    """Spectrum ids of a saved panel per ion mode, in vector order."""
    table = pq.read_table(path).sort_by([("ionmode", "ascending"), ("position", "ascending")])
    out: dict[str, list[str]] = {}
    for mode, sid in zip(table.column("ionmode").to_pylist(), table.column("spectrum_id").to_pylist()):
        out.setdefault(mode, []).append(sid)
    return out


@lru_cache(maxsize=4)
def load_panels(path: str, entropy_weighted: bool) -> dict[str, Panel]:
    """Saved panel as one :class:`Panel` per ion mode (cached per worker process)."""
    table = pq.read_table(path).sort_by([("ionmode", "ascending"), ("position", "ascending")])
    groups: dict[str, tuple[list[str], list[Peaks]]] = {}
    for row in table.to_pylist():
        ids, spectra = groups.setdefault(row["ionmode"], ([], []))
        ids.append(row["spectrum_id"])
        spectra.append(Peaks.of(row["mz"], row["intensities"], row["precursor_mz"]))
    return {mode: build_panel(ids, spectra, entropy_weighted=entropy_weighted) for mode, (ids, spectra) in groups.items()}


def refsim_row(spectrum_id: str, ionmode: str | None, peaks: Peaks, panels: dict[str, Panel],
               settings: RefSimSettings) -> dict[str, Any]:
    """Similarity vectors of one spectrum to its ion mode's panel (or a skip)."""
    panel = panels.get(ionmode or "")
    if panel is None or not len(panel):
        return {"spectrum_id": spectrum_id, "skip_code": "no_panel_for_ionmode",
                "skip_reason": f"no reference panel for ion mode {ionmode!r}"}
    return {
        "spectrum_id": spectrum_id,
        "refsim_cosine": cosine_to_panel(panel, peaks, settings.tolerance).astype(np.float32).tolist(),
        "refsim_modified_cosine": modified_cosine_to_panel(panel, peaks, settings.tolerance).astype(np.float32).tolist(),
        "refsim_entropy": entropy_to_panel(panel, peaks, settings.entropy_tolerance).astype(np.float32).tolist(),
    }


def refsim_batches(batches: Iterator[pa.RecordBatch], *, panel_path: str, settings_json: str) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: prepared spectra in, :data:`REFSIM_OUT` rows out."""
    settings = RefSimSettings.model_validate_json(settings_json)
    panels = load_panels(panel_path, settings.entropy_weighted)

    def rows() -> Iterator[dict[str, Any]]:
        for batch in batches:
            cols = {n: batch.column(n).to_pylist() for n in ("spectrum_id", "ionmode", "precursor_mz", "mz", "intensities")}
            for sid, mode, prec, mz, it in zip(*cols.values()):
                yield refsim_row(sid, mode, Peaks.of(mz, it, prec), panels, settings)

    yield from rows_to_batches(rows(), REFSIM_OUT)
