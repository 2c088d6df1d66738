"""Skip-unchanged: each flow stage's inputs as a fingerprint, kept in the lake beside its last success.

``<lake>/_catalog/flows/<stage>.json`` holds the fingerprint of the stage's last successful run (the
versions of the lake tables it read, its settings, the sha256 of its input files), the digest of that
fingerprint, what the run produced and when. A stage is skipped when its fingerprint digest equals the
recorded one and its outputs are still there; otherwise it runs and, only when it succeeds, replaces
the record. The record lives in the lake, so it travels (and vanishes) with the lake's data, whatever
Prefect server (or none) ran the flow.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from speclake.lake.catalog import CATALOG_DIR, Lake
from speclake.serving.annotate.job import file_sha256

log = logging.getLogger(__name__)

FLOWS_DIR = "flows"


def ledger_dir(lake_dir: str | os.PathLike[str]) -> Path:
    """``<lake>/_catalog/flows``: one record per stage."""
    return Path(lake_dir) / CATALOG_DIR / FLOWS_DIR




def files_digest(paths: Iterable[str | os.PathLike[str]]) -> dict[str, str]:
    """``{path: sha256}`` of every file named or found under a folder (sorted; hidden files left out).

    A missing path raises FileNotFoundError naming it: a stage must not pass for unchanged when its
    source is gone."""
    out: dict[str, str] = {}
    for item in paths:
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        elif p.exists():
            files = [p]
        else:
            raise FileNotFoundError(f"input not found: {p}")
        for f in files:
            out[str(f)] = file_sha256(f)
    return out


def table_versions(lake_dir: str | os.PathLike[str], tables: Iterable[str]) -> dict[str, int]:
    """Current version of each named table (0: not in the lake)."""
    lake = Lake(lake_dir)
    out = {}
    for name in tables:
        tv = lake.current(name)
        out[name] = tv.version if tv else 0
    return out


def digest(fingerprint: Mapping[str, Any]) -> str:
    """Stable digest of a fingerprint (JSON with sorted keys)."""
    body = json.dumps(fingerprint, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def read_record(lake_dir: str | os.PathLike[str], stage: str) -> dict[str, Any] | None:
    """The record of ``stage``'s last successful run, or None (never run, or an unreadable record)."""
    path = ledger_dir(lake_dir) / f"{stage}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring the unreadable flow record %s (%s): the stage runs again", path, exc)
        return None


def unchanged(lake_dir: str | os.PathLike[str], stage: str, fingerprint: Mapping[str, Any],
              outputs: Iterable[str | os.PathLike[str]] = ()) -> dict[str, Any] | None:
    """The last record of ``stage`` when its fingerprint equals ``fingerprint`` and every output exists."""
    record = read_record(lake_dir, stage)
    if record is None or record.get("digest") != digest(fingerprint):
        return None
    if not all(Path(p).exists() for p in outputs):
        return None
    return record


def write_record(lake_dir: str | os.PathLike[str], stage: str, fingerprint: Mapping[str, Any],
                 summary: Mapping[str, Any]) -> Path:
    """Save ``stage``'s fingerprint and summary after a successful run (temporary file, then rename)."""
    folder = ledger_dir(lake_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stage}.json"
    record = {"stage": stage, "digest": digest(fingerprint), "fingerprint": fingerprint,
              "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "summary": dict(summary)}
    tmp = path.with_suffix(f".json.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, path)
    return path


def changed_keys(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """Top-level fingerprint keys that differ (what made a stage run again); ["never run"] without a record."""
    if old is None:
        return ["never run"]
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


__all__ = ["changed_keys", "digest", "file_sha256", "files_digest", "ledger_dir", "read_record", "table_versions",
           "unchanged", "write_record"]
