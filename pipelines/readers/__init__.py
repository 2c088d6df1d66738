"""Streaming readers for spectral-library files, one module per format.

:func:`read_split` dispatches a :class:`~speclake.pipelines.readers.base.Split`
to the reader of its format; :mod:`.splits` plans the splits.
"""
from __future__ import annotations

from typing import Iterator

from speclake.pipelines.readers import gnps_json, massbank, mgf, msp, mzml
from speclake.pipelines.readers.base import RAW_KEYS, RawRecord, Reader, ReadResult, RecordError, Split

#: Format name → reader function.
READERS: dict[str, Reader] = {
    "massbank": massbank.read_split,
    "mgf": mgf.read_split,
    "msp": msp.read_split,
    "gnps_json": gnps_json.read_split,
    "mzml": mzml.read_split,
    "mzxml": mzml.read_split,
}


def read_split(split: Split) -> Iterator[ReadResult]:
    """Read one split with the reader of ``split.fmt``."""
    try:
        reader = READERS[split.fmt]
    except KeyError:
        raise ValueError(f"unknown format {split.fmt!r}; supported: {', '.join(sorted(READERS))}") from None
    return reader(split)


__all__ = ["RAW_KEYS", "READERS", "RawRecord", "ReadResult", "RecordError", "Split", "read_split"]
