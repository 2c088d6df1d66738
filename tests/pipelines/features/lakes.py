"""Small hand-made lakes for the feature tests: real compounds, spectra with hand-checkable fragments."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from speclake.lake.catalog import Lake, PendingVersion, publish_part
from speclake.lake.schema import COMPOUNDS, SPECTRA

PROTON = 1.007276

#: name -> (SMILES, neutral formula, monoisotopic mass, fragment m/z of [M+H]+ with relative intensities)
COMPOUNDS_SPEC: dict[str, tuple[str, str, float, list[tuple[float, float]]]] = {
    "phenylalanine": ("N[C@@H](Cc1ccccc1)C(=O)O", "C9H11NO2", 165.078979,
                      [(120.080776, 1.0), (103.054227, 0.3), (91.054227, 0.25), (77.038577, 0.1)]),
    "amphetamine": ("CC(N)Cc1ccccc1", "C9H13N", 135.104799,
                    [(119.085527, 1.0), (91.054227, 0.8), (65.038577, 0.1)]),
    "benzylamine": ("NCc1ccccc1", "C7H9N", 107.073499, [(91.054227, 1.0), (65.038577, 0.2)]),
    "phenethylamine": ("NCCc1ccccc1", "C8H11N", 121.089149, [(105.069877, 1.0), (103.054227, 0.3), (91.054227, 0.4),
                                                             (77.038577, 0.1)]),
    "caffeine": ("Cn1c(=O)c2c(ncn2C)n(C)c1=O", "C8H10N4O2", 194.080376,
                 [(138.066190, 1.0), (110.071275, 0.3), (123.042715, 0.1)]),
    "nicotine": ("CN1CCC[C@H]1c1cccnc1", "C10H14N2", 162.115698,
                 [(130.065126, 0.6), (106.065126, 0.5), (84.080776, 1.0), (80.049476, 0.2)]),
}


def inchikey(smiles: str) -> str:
    from rdkit import Chem

    return Chem.MolToInchiKey(Chem.MolFromSmiles(smiles))


def spectrum_row(sid: str, *, mz: list[float], intensities: list[float], precursor_mz: float | None,
                 ms_level: int = 2, ionmode: str = "positive", ikey: str | None = None, adduct: str | None = "[M+H]+",
                 chain: list[float] | None = None, instrument_type: str | None = "LC-ESI-QTOF") -> dict[str, Any]:
    it = np.asarray(intensities, dtype=np.float64)
    rel = (it / it.max()).tolist() if len(it) else []
    return {
        "spectrum_id": sid, "source": "test", "source_file": "test.txt", "record_locator": sid,
        "source_format": "massbank", "inchikey": ikey, "inchikey14": ikey[:14] if ikey else None,
        "ms_level": ms_level, "ionmode": ionmode, "precursor_mz": precursor_mz,
        "precursor_mz_chain": chain if chain is not None else ([precursor_mz] if precursor_mz else None),
        "adduct": adduct, "charge": 1, "instrument_type": instrument_type, "num_peaks": len(mz), "mz": list(mz),
        "intensities": rel, "intensities_raw": list(intensities), "ingest_run_id": "test",
    }


def compound_spectra(name: str, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` MS2 spectra of a compound: its fragments (ppm-level jitter) plus the precursor peak."""
    smiles, formula, mass, frags = COMPOUNDS_SPEC[name]
    ikey = inchikey(smiles)
    rng = np.random.default_rng(seed)
    prec = mass + PROTON
    out = []
    for k in range(n):
        peaks = frags + [(prec, 0.2 + 0.1 * (k % 3))]
        mz = [m * (1 + rng.normal(0, 2e-6)) for m, _ in peaks]
        it = [i * (0.8 + 0.4 * rng.random()) for _, i in peaks]
        sid = hashlib.sha256(f"{name}-{k}".encode()).hexdigest()[:24]
        out.append(spectrum_row(sid, mz=mz, intensities=it, precursor_mz=prec, ikey=ikey))
    return out


def bad_spectra() -> list[dict[str, Any]]:
    """Spectra every feature must skip (MS1, unit resolution, one peak) and one unannotated spectrum."""
    return [
        spectrum_row("bad-ms1", mz=[41.0, 43.0, 57.0, 71.0], intensities=[0.5, 1.0, 0.8, 0.2], precursor_mz=None,
                     ms_level=1, adduct=None, instrument_type="GC-EI-TOF"),
        spectrum_row("bad-lowres", mz=[91.0, 119.0, 65.0], intensities=[1.0, 0.5, 0.1], precursor_mz=136.1,
                     instrument_type="LC-ESI-IT"),
        spectrum_row("bad-onepeak", mz=[91.054227], intensities=[1.0], precursor_mz=136.11208),
        spectrum_row("unannotated", mz=[91.054227, 119.085527, 65.038577], intensities=[1.0, 0.6, 0.1],
                     precursor_mz=136.112075),
    ]


def msn_spectra() -> list[dict[str, Any]]:
    """An MS3 spectrum of phenylalanine (MS2 precursor 166.0863, MS3 of fragment 120.0808)."""
    smiles, _, mass, _ = COMPOUNDS_SPEC["phenylalanine"]
    prec = mass + PROTON
    return [spectrum_row("phe-ms3", mz=[103.054227, 93.069877, 91.054227], intensities=[1.0, 0.4, 0.6],
                         precursor_mz=120.080776, ms_level=3, ikey=inchikey(smiles), chain=[prec, 120.080776])]


def compound_rows(names: list[str]) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        smiles, formula, mass, _ = COMPOUNDS_SPEC[name]
        ikey = inchikey(smiles)
        rows.append({"inchikey": ikey, "inchikey14": ikey[:14], "smiles": smiles, "formula": formula,
                     "monoisotopic_mass": mass, "compound_name": name, "chemont_id": "CHEMONTID:0000000",
                     "chemont_classes": ["Organic compounds", name], "n_spectra": 1})
    return rows


def write_table(lake: Lake, table: str, schema: pa.Schema, rows: list[dict[str, Any]], run_id: str) -> PendingVersion:
    out = lake.staging(run_id) / table
    out.mkdir(parents=True)
    full = [{f.name: r.get(f.name) for f in schema} for r in rows]
    pq.write_table(pa.Table.from_pylist(full, schema=schema), out / "part-0.parquet")
    return PendingVersion(new_parts=(publish_part(lake, table, run_id, out),), row_count=len(rows))


def make_lake(root: Path, spectra: list[dict[str, Any]], compounds: list[dict[str, Any]], run_id: str = "r1") -> Lake:
    """Create (or add to) a lake with the given spectra and the whole compounds table."""
    lake = Lake(root, create=True)
    pending = {"spectra": write_table(lake, "spectra", SPECTRA, spectra, run_id),
               "compounds": write_table(lake, "compounds", COMPOUNDS, compounds, run_id)}
    lake.commit(pending, run_id=run_id)
    lake.clean_staging(run_id)
    return lake


def small_lake(root: Path, n_per_compound: int = 12) -> Lake:
    names = list(COMPOUNDS_SPEC)
    spectra = [s for i, name in enumerate(names) for s in compound_spectra(name, n_per_compound, seed=i)]
    spectra += bad_spectra() + msn_spectra()
    return make_lake(root, spectra, compound_rows(names))
