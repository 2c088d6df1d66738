"""Structure sources: PubChem SDF, PubChem CID-SMILES, SMILES files and lake compounds.

Every reader yields Arrow tables of :data:`RAW_RECORDS` rows, one per input
record, each with a locator (``line:N`` or ``record:N,line:M``). A record that
cannot even be read carries ``reason_code``/``reason`` and goes to quarantine;
the structure itself is checked later, by standardization.
"""
from __future__ import annotations

import gzip
import io
import logging
import os
import re
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

RAW_RECORDS = pa.schema(
    [
        pa.field("file_no", pa.int32()),        # position of the source in the build's list (dedupe priority)
        pa.field("record_no", pa.int64()),      # position of the record in its source
        pa.field("source", pa.string()),        # pubchem_sdf | cid_smiles | smiles | lake
        pa.field("source_file", pa.string()),
        pa.field("record_locator", pa.string()),
        pa.field("record_id", pa.string()),
        pa.field("compound_name", pa.string()),
        pa.field("smiles_in", pa.string()),
        pa.field("inchi_in", pa.string()),
        pa.field("molblock", pa.string()),
        pa.field("reason_code", pa.string()),   # set when the record could not be read
        pa.field("reason", pa.string()),
        pa.field("raw_excerpt", pa.string()),
    ]
)

SOURCE_FORMATS = ("pubchem_sdf", "cid_smiles", "smiles", "lake")

#: SDF data items that name a record's id and name, in order of preference (PubChem first).
SDF_ID_TAGS = ("PUBCHEM_COMPOUND_CID", "ID", "id", "Name", "NAME")
SDF_NAME_TAGS = ("PUBCHEM_IUPAC_TRADITIONAL_NAME", "PUBCHEM_IUPAC_NAME", "Name", "NAME", "name")

_EXCERPT = 300


class SourceError(ValueError):
    """A structure source cannot be read at all (missing file, unknown format)."""


def detect_format(path: str | os.PathLike[str]) -> str:
    """Guess the format of a structure file from its name (and first line for ``.tsv``/``.txt``)."""
    p = Path(path)
    if p.is_dir():
        if (p / "compounds").is_dir() or (p / "_catalog").is_dir():
            return "lake"
        raise SourceError(f"{p} is a directory but not a lake (no compounds/ inside)")
    name = p.name.lower()
    stem = name[:-3] if name.endswith(".gz") else name
    if stem.endswith((".sdf", ".sd", ".mol")):
        return "pubchem_sdf"
    if "cid-smiles" in stem:
        return "cid_smiles"
    if stem.endswith((".smi", ".smiles", ".ism", ".can")):
        return "smiles"
    if stem.endswith((".tsv", ".txt", ".csv")):
        with _open_text(p) as fh:
            first = fh.readline().split("\t")
        return "cid_smiles" if len(first) >= 2 and first[0].strip().isdigit() else "smiles"
    raise SourceError(
        f"cannot tell the format of {p}: expected .sdf[.gz], CID-SMILES[.gz], .smi[.gz]/.smiles/.tsv or a lake directory"
    )


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


class _Batcher:
    """Collects raw record dicts and emits Arrow tables of ``batch_size`` rows."""

    def __init__(self, file_no: int, source: str, source_file: str, batch_size: int) -> None:
        self.base = {"file_no": file_no, "source": source, "source_file": source_file}
        self.batch_size = batch_size
        self.rows: list[dict[str, object]] = []
        self.count = 0

    def add(self, **fields: object) -> pa.Table | None:
        row = dict(self.base, record_no=self.count, **fields)
        self.count += 1
        self.rows.append(row)
        return self.flush() if len(self.rows) >= self.batch_size else None

    def flush(self) -> pa.Table | None:
        if not self.rows:
            return None
        table = pa.Table.from_pylist(self.rows, schema=RAW_RECORDS)
        self.rows = []
        return table


def iter_smiles_file(path: Path, file_no: int, batch_size: int, *, cid_first: bool = False) -> Iterator[pa.Table]:
    """SMILES files (``SMILES<ws>ID [name]``) and PubChem CID-SMILES (``CID<TAB>SMILES``)."""
    source = "cid_smiles" if cid_first else "smiles"
    b = _Batcher(file_no, source, str(path), batch_size)
    with _open_text(path) as fh:
        for line_no, line in enumerate(fh, start=1):
            text = line.rstrip("\r\n")
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            parts = text.split("\t") if "\t" in text else text.split(None, 2)
            parts = [p.strip() for p in parts]
            loc = f"line:{line_no}"
            if cid_first:
                rid, smi, name = parts[0], (parts[1] if len(parts) > 1 else ""), None
            else:
                if line_no == 1 and parts[0].upper() in {"SMILES", "CANONICAL_SMILES"}:
                    continue  # header line
                smi = parts[0]
                rid = parts[1] if len(parts) > 1 else None
                name = parts[2] if len(parts) > 2 else None
            if not smi:
                out = b.add(record_locator=loc, record_id=rid, reason_code="missing_smiles",
                            reason="record has no SMILES field", raw_excerpt=text[:_EXCERPT])
            else:
                out = b.add(record_locator=loc, record_id=rid or None, compound_name=name, smiles_in=smi)
            if out is not None:
                yield out
    last = b.flush()
    if last is not None:
        yield last


_TAG = re.compile(r"^>\s*.*?<([^>]+)>")


def iter_sdf(path: Path, file_no: int, batch_size: int) -> Iterator[pa.Table]:
    """SD files as PubChem distributes them (``Compound_*.sdf.gz``), read as text, record by record.

    A record without ``M  END`` (or a file that ends mid-record) is quarantined here;
    the mol block itself is parsed by RDKit during standardization.
    """
    b = _Batcher(file_no, "pubchem_sdf", str(path), batch_size)
    lines: list[str] = []
    start_line = 1
    line_no = 0

    def finish(truncated: bool) -> pa.Table | None:
        loc = f"record:{b.count + 1},line:{start_line}"
        excerpt = "".join(lines[:8])[:_EXCERPT]
        if truncated:
            return b.add(record_locator=loc, reason_code="truncated_record",
                         reason="file ends inside this record (no $$$$ terminator)", raw_excerpt=excerpt)
        end = next((i for i, line in enumerate(lines) if line.startswith("M  END")), None)
        data: dict[str, str] = {}
        i = end + 1 if end is not None else next((j for j, line in enumerate(lines) if _TAG.match(line)), len(lines))
        while i < len(lines):
            m = _TAG.match(lines[i])
            i += 1
            if not m:
                continue
            value: list[str] = []
            while i < len(lines) and lines[i].strip():
                value.append(lines[i].rstrip("\r\n"))
                i += 1
            data[m.group(1)] = "\n".join(value)
        rid = next((data[t] for t in SDF_ID_TAGS if data.get(t)), None) or lines[0].strip() or None
        name = next((data[t] for t in SDF_NAME_TAGS if data.get(t)), None)
        if end is None:
            return b.add(record_locator=loc, record_id=rid, compound_name=name, reason_code="malformed_sdf_record",
                         reason="record has no 'M  END' line ending its mol block", raw_excerpt=excerpt)
        return b.add(record_locator=loc, record_id=rid, compound_name=name, molblock="".join(lines[: end + 1]),
                     inchi_in=data.get("PUBCHEM_IUPAC_INCHI"))

    try:
        with _open_text(path) as fh:
            for line in fh:
                line_no += 1
                if line.startswith("$$$$"):
                    out = finish(False)
                    lines = []
                    start_line = line_no + 1
                    if out is not None:
                        yield out
                else:
                    lines.append(line)
    except (EOFError, OSError, gzip.BadGzipFile) as exc:
        log.warning("%s: read stopped at line %d: %s", path, line_no, exc)
        lines.append(f"[read error: {exc}]")
    if any(line.strip() for line in lines):
        out = finish(True)
        if out is not None:
            yield out
    last = b.flush()
    if last is not None:
        yield last


def read_lake_compounds(lake_dir: str | os.PathLike[str]) -> pa.Table:
    """The lake's ``compounds`` table. The one place that knows where lake compounds live.

    Today: every Parquet file under ``<lake>/compounds/`` (parts whose name starts with
    ``_`` or ``.`` are scratch and skipped). To be wired to the lake catalog.
    """
    root = Path(lake_dir) / "compounds"
    if not root.is_dir():
        raise SourceError(f"{lake_dir} has no compounds table ({root} missing)")
    files = sorted(
        p for p in root.rglob("*.parquet")
        if not any(part.startswith(("_", ".")) for part in p.relative_to(root).parts)
    )
    if not files:
        raise SourceError(f"{root} holds no Parquet files")
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")


def iter_lake(lake_dir: Path, file_no: int, batch_size: int) -> Iterator[pa.Table]:
    """Lake compounds as raw records (re-standardized by the same rules, so keys agree)."""
    table = read_lake_compounds(lake_dir)
    names = table.column("compound_name").to_pylist() if "compound_name" in table.column_names else [None] * len(table)
    inchis = table.column("inchi").to_pylist() if "inchi" in table.column_names else [None] * len(table)
    b = _Batcher(file_no, "lake", str(Path(lake_dir) / "compounds"), batch_size)
    for i, (key, smi) in enumerate(zip(table.column("inchikey").to_pylist(), table.column("smiles").to_pylist())):
        out = b.add(record_locator=f"inchikey:{key}", record_id=key, compound_name=names[i], smiles_in=smi,
                    inchi_in=inchis[i])
        if out is not None:
            yield out
    last = b.flush()
    if last is not None:
        yield last


def iter_source(path: str | os.PathLike[str], file_no: int, batch_size: int = 4096,
                fmt: str | None = None) -> Iterator[pa.Table]:
    """Raw records of one source, in batches, whatever its format."""
    p = Path(path)
    if not p.exists():
        raise SourceError(f"structure source {p} does not exist")
    fmt = fmt or detect_format(p)
    if fmt == "pubchem_sdf":
        return iter_sdf(p, file_no, batch_size)
    if fmt in ("smiles", "cid_smiles"):
        return iter_smiles_file(p, file_no, batch_size, cid_first=fmt == "cid_smiles")
    if fmt == "lake":
        return iter_lake(p, file_no, batch_size)
    raise SourceError(f"unknown structure format {fmt!r}; known: {', '.join(SOURCE_FORMATS)}")


class ReadSource:
    """Ray Data UDF: one row ``{path, file_no, fmt}`` in, that source's raw record batches out."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        for path, file_no, fmt in zip(batch.column("path").to_pylist(), batch.column("file_no").to_pylist(),
                                      batch.column("fmt").to_pylist()):
            yield from iter_source(path, file_no, self.batch_size, fmt)
