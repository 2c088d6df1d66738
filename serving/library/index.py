"""The library index: the lake's MS2 spectra inverted by fragment m/z and neutral loss, beside the lake.

Layout::

    <lake>/_library/manifest.json          what the index covers (spectra table version and parts),
                                           its settings, segments per ion mode, spectra left out and why
    <lake>/_library/seg-<run>-<ionmode>/   one immutable segment (arrays: see segment.py), .npy, mmapped

Incremental, LSM-style: the ``spectra`` table only ever gains parts, so an update reads only the parts
the manifest does not list yet and writes their spectra as one new segment per ion mode; searches run
over every segment; when an ion mode has more than ``max_segments`` segments, the smallest are merged
into one (from the segments' own peaks, not from the lake). Publishing is atomic: new segments are
written under the run's staging folder and renamed in, then ``manifest.json`` is replaced in one
``os.replace``; a crash at any point leaves the previous manifest and its segments usable. Segments no
manifest lists (merged away, or left by a crash) are removed after the next publish.

A full rebuild happens only when the settings changed or a part the index covers left the table.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import duckdb
import numpy as np
import pyarrow as pa

from speclake.lake.catalog import Lake, LakeError, _fsync_dir
from speclake.lake.run import Progress, Run, RunReport
from speclake.serving.library.clean import FlatSpectra, clean_spectra
from speclake.serving.library.search import Hit, Query, search, search_batch
from speclake.serving.library.segment import Segment
from speclake.serving.library.settings import LibrarySettings

log = logging.getLogger(__name__)

LIBRARY_DIR = "_library"
MANIFEST = "manifest.json"
FORMAT = 2
#: Reason code of spectra left out because they are not MS2.
NOT_MS2 = "not_ms2"


@dataclass
class LibraryReport(RunReport):
    """What an index update did."""

    spectra_version: int = 0
    parts_read: int = 0
    spectra_read: int = 0                                  # rows of the new parts (all MS levels)
    spectra_indexed: int = 0                               # added by this run
    skipped: dict[str, int] = field(default_factory=dict)  # left out by this run, by reason
    segments_written: int = 0
    segments_merged: int = 0
    rebuilt: str = ""                                      # why everything was reindexed ('' if not)


class LibraryIndex:
    """An opened library index (read-only view of one manifest's segments).

    >>> index = LibraryIndex.open("mylake")            # builds or updates it if the lake moved on
    >>> hits = index.search(mz, intensities, 301.14, "positive", mode="identity", top_k=5)
    """

    def __init__(self, root: Path, manifest: dict[str, Any], segments: dict[str, list[Segment]]) -> None:
        self.root = root
        self.manifest = manifest
        self.settings = LibrarySettings.model_validate(manifest["settings"])
        self.segments = segments

    # -- opening and updating ----------------------------------------------------------------------
    @staticmethod
    def path(lake_dir: str | os.PathLike[str]) -> Path:
        return Path(lake_dir).resolve() / LIBRARY_DIR

    @classmethod
    def open(cls, lake_dir: str | os.PathLike[str], settings: LibrarySettings | None = None, *,
             update: bool = True, progress: Progress | None = None) -> "LibraryIndex":
        """Open the index of ``lake_dir``. ``update``: first index the spectra added since (building the
        index on first use, rebuilding it when ``settings`` differ from its own); else open it as it is
        (LakeError when there is none)."""
        if update:
            cls.update(lake_dir, settings, progress=progress)
        return cls.load(lake_dir)

    @classmethod
    def load(cls, lake_dir: str | os.PathLike[str], *, mmap: bool = True) -> "LibraryIndex":
        """Open the published index as it is (no update)."""
        root = cls.path(lake_dir)
        for attempt in range(3):  # an update may remove merged segments between manifest read and open
            manifest = _read_manifest(root)
            if manifest is None:
                raise LakeError(f"{lake_dir} has no library index yet ({root / MANIFEST}); open it with update=True")
            try:
                segments = {mode: [Segment.load(root / s["name"], mmap=mmap) for s in entry["segments"]]
                            for mode, entry in manifest["ionmodes"].items()}
                return cls(root, manifest, segments)
            except FileNotFoundError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def update(cls, lake_dir: str | os.PathLike[str], settings: LibrarySettings | None = None, *,
               progress: Progress | None = None) -> LibraryReport:
        """Index the spectra the index does not cover yet (everything on first use); publish atomically."""
        lake = Lake(lake_dir)
        root = cls.path(lake_dir)
        report = LibraryReport()
        with Run(lake, "library", settings, report, progress=progress, lock="library") as run:
            manifest = _read_manifest(root)
            if settings is None:
                settings = LibrarySettings.model_validate(manifest["settings"]) if manifest else LibrarySettings()
                run.settings = settings
            tv = lake.current("spectra")
            version, parts = (tv.version, list(tv.parts)) if tv else (0, [])
            report.spectra_version = version
            if manifest is not None and manifest.get("format") != FORMAT:
                report.rebuilt = f"index format {manifest.get('format')} is not {FORMAT}"
            elif manifest is not None and manifest["settings_digest"] != settings.digest():
                report.rebuilt = "settings changed"
            elif manifest is not None and (gone := set(manifest["spectra_parts"]) - set(parts)):
                report.rebuilt = f"{len(gone)} indexed part(s) of spectra are no longer in the table"
            if report.rebuilt:
                log.warning("library index of %s is rebuilt: %s", lake.root, report.rebuilt)
                manifest = None
            covered = set(manifest["spectra_parts"]) if manifest else set()
            new_parts = [p for p in parts if p not in covered]
            if manifest is not None and not new_parts and manifest["spectra_version"] == version:
                return report
            entries = {m: list(e["segments"]) for m, e in manifest["ionmodes"].items()} if manifest else {}
            skipped = Counter(manifest["spectra"]["skipped"]) if manifest else Counter()
            indexed = int(manifest["spectra"]["indexed"]) if manifest else 0
            with run.stage("read"):
                table = _read_parts(lake, new_parts)
            report.parts_read, report.spectra_read = len(new_parts), table.num_rows
            new_segments: dict[str, tuple[str, Segment]] = {}
            with run.stage("build"):
                by_mode, reasons = _build_segments(table, settings)
                for mode, seg in by_mode.items():
                    name = f"seg-{run.run_id}-{mode}"
                    seg.save(run.staging / name)
                    new_segments[mode] = (name, seg)
                    entries.setdefault(mode, []).append(_entry(name, seg))
                report.spectra_indexed = sum(len(s) for s in by_mode.values())
                report.skipped = dict(reasons)
                report.segments_written = len(by_mode)
            with run.stage("merge"):
                for mode, segs in entries.items():
                    if len(segs) <= settings.max_segments:
                        continue
                    smallest = sorted(segs, key=lambda e: e["spectra"])[: len(segs) - settings.max_segments + 1]
                    loaded = [new_segments[mode][1] if new_segments.get(mode, ("",))[0] == e["name"]
                              else Segment.load(root / e["name"]) for e in smallest]
                    merged = Segment.merge(loaded, settings.min_peak_distance_da)
                    name = f"seg-{run.run_id}-{mode}-merged"
                    merged.save(run.staging / name)
                    drop = {e["name"] for e in smallest}
                    entries[mode] = [e for e in segs if e["name"] not in drop] + [_entry(name, merged)]
                    report.segments_merged += len(smallest)
            with run.stage("publish"):
                root.mkdir(parents=True, exist_ok=True)
                listed = {e["name"] for segs in entries.values() for e in segs}
                for folder in sorted(run.staging.glob("seg-*")):
                    if folder.name in listed:
                        os.replace(folder, root / folder.name)
                _fsync_dir(root)
                skipped.update(reasons)
                new_manifest = {
                    "format": FORMAT, "settings": settings.model_dump(mode="json"),
                    "settings_digest": settings.digest(), "spectra_version": version, "spectra_parts": parts,
                    "ionmodes": {m: {"segments": segs, "spectra": sum(e["spectra"] for e in segs),
                                     "peaks": sum(e["peaks"] for e in segs)} for m, segs in sorted(entries.items())},
                    "spectra": {"indexed": indexed + report.spectra_indexed, "skipped": dict(sorted(skipped.items()))},
                    "run_id": run.run_id, "updated_at": time.time(),
                }
                _write_manifest(root, new_manifest)
                for folder in root.glob("seg-*"):  # merged away, or left by a crashed update
                    if folder.name not in listed:
                        shutil.rmtree(folder, ignore_errors=True)
        log.info("library index of %s: %d spectra added (%s skipped), %d segments written, %d merged",
                 lake.root, report.spectra_indexed, report.skipped, report.segments_written, report.segments_merged)
        return report

    # -- what it holds -----------------------------------------------------------------------------
    @property
    def spectra_version(self) -> int:
        """Version of the lake's ``spectra`` table this index covers."""
        return int(self.manifest["spectra_version"])

    @property
    def n_spectra(self) -> int:
        return sum(len(s) for segs in self.segments.values() for s in segs)

    @property
    def skipped(self) -> dict[str, int]:
        """Spectra of the lake left out of the index, by reason code."""
        return dict(self.manifest["spectra"]["skipped"])

    def segment_counts(self) -> dict[str, int]:
        return {mode: len(segs) for mode, segs in self.segments.items()}

    def nbytes(self) -> int:
        """Bytes of every array of every segment."""
        return sum(getattr(s, name).nbytes for segs in self.segments.values() for s in segs
                   for name in s.__dataclass_fields__)

    # -- searching ---------------------------------------------------------------------------------
    def search(self, mz: Sequence[float] | np.ndarray, intensities: Sequence[float] | np.ndarray,
               precursor_mz: float, ionmode: str | None = None, **kwargs: Any) -> list[Hit]:
        """Search one spectrum (see :func:`speclake.serving.library.search.search_batch` for the options)."""
        return search(self, mz, intensities, precursor_mz, ionmode, **kwargs)

    def search_batch(self, queries: Sequence[Query | tuple], **kwargs: Any) -> list[list[Hit]]:
        """Search many spectra at once; each query's hits, best first."""
        return search_batch(self, queries, **kwargs)


def _entry(name: str, seg: Segment) -> dict[str, Any]:
    return {"name": name, "spectra": len(seg), "peaks": seg.n_peaks}


def _read_manifest(root: Path) -> dict[str, Any] | None:
    path = root / MANIFEST
    if not path.exists():
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    tmp = root / (MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, root / MANIFEST)
    _fsync_dir(root)


_COLUMNS = ("spectrum_id", "ionmode", "ms_level", "precursor_mz", "mz", "intensities")


def _read_parts(lake: Lake, parts: list[str]) -> pa.Table:
    """spectrum_id, ionmode, ms_level, precursor_mz and peaks of every row of ``parts`` of ``spectra``."""
    files = sorted(str(f) for p in parts for f in (lake.root / p).rglob("*.parquet"))
    if not files:
        return pa.table({c: pa.array([], type=t) for c, t in (
            ("spectrum_id", pa.string()), ("ionmode", pa.string()), ("ms_level", pa.int32()),
            ("precursor_mz", pa.float64()), ("mz", pa.list_(pa.float64())), ("intensities", pa.list_(pa.float32())))})
    con = duckdb.connect()
    try:
        listed = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"
        result = con.sql(
            f"SELECT spectrum_id, CAST(ionmode AS VARCHAR) AS ionmode, CAST(ms_level AS INTEGER) AS ms_level, "
            f"precursor_mz, mz, intensities FROM read_parquet({listed}, hive_partitioning=true, union_by_name=true)"
        ).arrow()
        return result.read_all() if isinstance(result, pa.RecordBatchReader) else result
    finally:
        con.close()


def _flat(table: pa.Table) -> FlatSpectra:
    """The peak lists of ``table`` as flat arrays (no per-row Python)."""
    mz = table.column("mz").combine_chunks()
    it = table.column("intensities").combine_chunks()
    offsets = np.asarray(mz.offsets, dtype=np.int64)
    it_off = np.asarray(it.offsets, dtype=np.int64)
    values_mz = np.asarray(mz.values, dtype=np.float64)[offsets[0]:offsets[-1]]
    values_it = np.asarray(it.values, dtype=np.float64)[it_off[0]:it_off[-1]]
    if not np.array_equal(np.diff(offsets), np.diff(it_off)):
        raise LakeError("spectra rows with m/z and intensity lists of different lengths")
    return FlatSpectra(offsets - offsets[0], values_mz, values_it)


def _build_segments(table: pa.Table, settings: LibrarySettings) -> tuple[dict[str, Segment], Counter]:
    """One segment per ion mode of the MS2 rows of ``table``; counts of the rows left out, by reason."""
    reasons: Counter = Counter()
    if table.num_rows == 0:
        return {}, reasons
    if isinstance(table.column("mz"), pa.ChunkedArray) and table.column("mz").num_chunks > 1:
        table = table.combine_chunks()
    ms_level = np.asarray(table.column("ms_level").to_numpy(zero_copy_only=False))
    ms2 = ms_level == 2
    reasons[NOT_MS2] += int((~ms2).sum())
    table = table.filter(pa.array(ms2))
    if table.num_rows == 0:
        return {}, _drop_zero(reasons)
    precursor = table.column("precursor_mz").to_numpy(zero_copy_only=False).astype(np.float64)
    precursor = np.where(np.isnan(precursor), np.nan, precursor)
    cleaned, why = clean_spectra(_flat(table), precursor, settings)
    reasons.update(Counter(str(r) for r in why if r))
    usable = why == ""
    ids = np.asarray(table.column("spectrum_id").to_pylist(), dtype=str)
    modes = np.asarray(table.column("ionmode").to_pylist(), dtype=object)
    out: dict[str, Segment] = {}
    for mode in sorted(set(modes[usable].tolist())):
        rows = np.flatnonzero(usable & (modes == mode))
        out[mode] = Segment.build(ids[rows], precursor[rows], cleaned.take(rows), settings.min_peak_distance_da)
    return out, _drop_zero(reasons)


def _drop_zero(c: Counter) -> Counter:
    return Counter({k: v for k, v in c.items() if v})
