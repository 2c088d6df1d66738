"""The contract every spectral-library reader follows.

A reader turns one *split* of one input file (a byte range aligned to record
boundaries, see :mod:`speclake.pipelines.readers.splits`) into a stream of
:class:`RawRecord` (parsed, keys mapped to matchms names, values still raw
text) or :class:`RecordError` (the record could not be parsed: it goes to
quarantine with the reason). Readers never raise for bad data; they raise only
for programming errors or an unreadable file system.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol, Union

#: Metadata keys a reader may fill, named as in matchms. Values stay raw text;
#: :mod:`speclake.pipelines.normalize` parses them.
RAW_KEYS: tuple[str, ...] = (
    "compound_name",      # first name
    "synonyms",           # list[str]
    "smiles",
    "inchi",
    "inchikey",
    "formula",
    "exact_mass",         # reported neutral monoisotopic mass
    "precursor_mz",       # "188.0818" (MGF PEPMASS: first token only)
    "precursor_intensity",
    "adduct",             # precursor type / ion type as written, e.g. "[M+H]+", "M-H"
    "charge",             # "1", "2-", "0"
    "ionmode",            # "positive", "POSITIVE", "n/a", ...
    "ms_level",           # "2", "MS2", "MS3"
    "collision_energy",   # "35 % (nominal)", "20 eV", "30HCD" ...
    "fragmentation_mode", # CID, HCD, ...
    "instrument",
    "instrument_type",    # "LC-ESI-ITFT"
    "ionization",         # ESI, EI, APCI
    "resolution",
    "retention_time",     # as written, with unit if given: "5.1 min", "302.1"
    "accession",          # MassBank ACCESSION, GNPS SPECTRUMID, MSP DB#
    "usi",
    "scan_number",
    "splash",             # the record's own SPLASH (PK$SPLASH, Splash:)
    "license",
    "authors",
    "copyright",
    "title",              # RECORD_TITLE, MGF TITLE
    "chemont",            # list[str]: "CHEMONTID:0004107; Organic compounds; ..."
    "compound_class",
    "precursor_mz_chain", # list[str]: precursor m/z of each stage for MSn (mzML, MassBank MS3+)
    "peak_annotations",   # list[tuple[float, str, float | None]]: (mz, tentative formula, ppm)
    "date",
    "library",            # GNPS library_membership, MoNA library name
)


@dataclass(frozen=True)
class RawRecord:
    """One parsed record: matchms-named raw metadata and its peaks."""

    source_file: str
    locator: str                      # "record 17 (line 1234)" or "scan=12"
    fmt: str                          # massbank | mgf | msp | gnps_json | mzml | mzxml
    metadata: dict[str, object]       # keys from RAW_KEYS only
    extra: dict[str, str]             # every other key of the record, nothing dropped
    mz: tuple[float, ...]
    intensities: tuple[float, ...]
    raw_excerpt: str = ""             # first ~2 kB of the record text (for quarantine later)


@dataclass(frozen=True)
class RecordError:
    """A record the reader could not parse; lands in quarantine."""

    source_file: str
    locator: str
    fmt: str
    reason_code: str                  # short stable code, e.g. "peak_parse_error"
    reason: str                       # one clear sentence naming what is wrong
    raw_excerpt: str = ""


ReadResult = Union[RawRecord, RecordError]


@dataclass(frozen=True)
class Split:
    """A byte range of one file that starts and ends on record boundaries.

    ``path`` is the file to open (for compressed inputs: a staged, decompressed
    chunk), ``source_file`` the file the user named, ``first_record`` and
    ``first_line`` the 0-based index and 1-based line of the split's first
    record in the original file, so locators stay true to the user's file.
    ``start``/``end`` of -1/-1 mean the whole file.
    """

    path: str
    source_file: str
    fmt: str
    start: int = 0
    end: int = -1
    first_record: int = 0
    first_line: int = 1
    extra: dict[str, str] = field(default_factory=dict)


class Reader(Protocol):
    """Reads one split. Must be a pure function of the split's bytes."""

    def __call__(self, split: Split) -> Iterator[ReadResult]: ...
