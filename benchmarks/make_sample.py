"""Regenerate ``speclake/sample/massbank_sample.txt.gz`` from ``../shared/data/massbank``.

The bundled sample lets a fresh clone run end to end without the shared data.
It holds about 300 MassBank records whose ``LICENSE`` is ``CC BY`` or ``CC0``
only, taken deterministically (the first matching records in file order) from
a few contributors so that it mixes positive and negative LC-ESI MS2 (with
``PK$ANNOTATION``), GC-EI MS1, and MS3/MSn records::

    python benchmarks/make_sample.py            # writes speclake/sample/massbank_sample.txt.gz
    python benchmarks/make_sample.py --data DIR --out FILE

The output is byte-for-byte reproducible (gzip header without timestamp).
"""
from __future__ import annotations

import argparse
import gzip
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from speclake.pipelines.readers._segment import COMPLETE, segment_lines

log = logging.getLogger("make_sample")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "massbank"
DEFAULT_OUT = REPO / "speclake" / "sample" / "massbank_sample.txt.gz"
LICENSES = ("CC BY", "CC0")


@dataclass(frozen=True)
class Pick:
    """Take the first ``count`` records of ``contributor`` matching all conditions."""

    contributor: str
    count: int
    ms_type: str                   # MS, MS2, MS3, MSn
    ion_mode: str = ""             # POSITIVE / NEGATIVE / "" (any)
    ei: bool | None = None         # instrument type contains EI (GC-EI) / not / any
    annotated: bool = False        # must carry PK$ANNOTATION


PICKS: tuple[Pick, ...] = (
    Pick("Eawag", 70, "MS2", "POSITIVE", annotated=True),
    Pick("Eawag", 40, "MS2", "NEGATIVE", annotated=True),
    Pick("HBM4EU", 40, "MS2", "POSITIVE"),
    Pick("HBM4EU", 20, "MS2", "NEGATIVE"),
    Pick("UFZ", 30, "MS2", "POSITIVE"),
    Pick("NILU", 40, "MS", ei=True),
    Pick("NILU", 10, "MSn"),
    Pick("MSSJ", 30, "MS", ei=True),
    Pick("MSSJ", 3, "MS3"),
    Pick("Literature_Specs", 10, "MS2"),
)


def _field(record: str, pattern: str) -> str:
    match = re.search(pattern, record, re.MULTILINE)
    return match.group(1).strip() if match else ""


def matches(record: str, pick: Pick) -> bool:
    """Whether one record's text satisfies the licence rule and ``pick``."""
    if _field(record, r"^LICENSE: (.*)$") not in LICENSES:
        return False
    if _field(record, r"^AC\$MASS_SPECTROMETRY: MS_TYPE (.*)$") != pick.ms_type:
        return False
    if pick.ion_mode and _field(record, r"^AC\$MASS_SPECTROMETRY: ION_MODE (.*)$") != pick.ion_mode:
        return False
    if pick.ei is not None and ("EI" in _field(record, r"^AC\$INSTRUMENT_TYPE: (.*)$").split("-")) != pick.ei:
        return False
    return not pick.annotated or "\nPK$ANNOTATION:" in record


def records(path: Path) -> Iterator[str]:
    """Complete records of one MassBank file, as text."""
    with gzip.open(path, "rb") as fh:
        for seg in segment_lines(iter(fh), "massbank"):
            if seg.status == COMPLETE:
                yield seg.raw.decode("utf-8")


def select(data: Path) -> list[str]:
    """The sample's records, in PICKS order, without duplicates."""
    chosen: list[str] = []
    seen: set[str] = set()
    for pick in PICKS:
        taken = 0
        for record in records(data / f"{pick.contributor}.txt.gz"):
            accession = _field(record, r"^ACCESSION: (.*)$")
            if accession not in seen and matches(record, pick):
                chosen.append(record)
                seen.add(accession)
                taken += 1
                if taken == pick.count:
                    break
        log.info("%s %s: %d records", pick.contributor, pick.ms_type, taken)
    return chosen


def write(chosen: list[str], out: Path) -> None:
    """Write the records as one reproducible gzip file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as fh:
        for record in chosen:
            fh.write(record.encode("utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of MassBank *.txt.gz files")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .txt.gz")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    chosen = select(args.data)
    write(chosen, args.out)
    log.info("wrote %d records to %s (%d bytes)", len(chosen), args.out, args.out.stat().st_size)


if __name__ == "__main__":
    main()
