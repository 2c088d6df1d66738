"""What the de novo models learn from: a structure set for the VAE and training-split library spectra.

The VAE's structure set is a SMILES file (e.g. ``../shared/data/structures/zinc_moses_1.9M.smi.gz``,
``SMILES<TAB>ID`` per line, first ``limit`` lines) plus the lake's compounds. Structures whose
InChIKey-14 the lake's split puts in validation or test are dropped from both sources
(:func:`held_out_keys`), so the decoder has never seen an evaluation structure. The spectrum-to-latent
mapping learns from training-split spectra only (:func:`training_spectra`).
"""
from __future__ import annotations

import gzip
import logging
import os
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
from rdkit import Chem

from speclake.lake import sql
from speclake.training.encoding import BinSettings, bin_batch
from speclake.training.split import SplitSettings, assign_split

from .vocab import canonical_smiles

log = logging.getLogger(__name__)


@dataclass
class StructureSet:
    """Canonical SMILES (one per InChIKey-14) the VAE trains on, and what was left out and why."""

    smiles: list[str]
    inchikey14: list[str]
    counts: dict[str, int] = field(default_factory=dict)   # read, unparsable, held_out, duplicate, kept


def inchikey14(smiles: str) -> str | None:
    """First block of the InChIKey of a SMILES (None when RDKit cannot make one)."""
    mol = Chem.MolFromSmiles(smiles) if smiles else None
    if mol is None:
        return None
    key = Chem.MolToInchiKey(mol)
    return key[:14] if key else None


def read_smiles_file(path: str | os.PathLike[str], limit: int | None = None) -> Iterator[str]:
    """The SMILES column of a ``SMILES<TAB>ID`` file (gzip or plain), at most ``limit`` lines."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as fh:
        for n, line in enumerate(fh):
            if limit is not None and n >= limit:
                return
            smiles = line.split("\t", 1)[0].split(" ", 1)[0].strip()
            if smiles and not smiles.startswith("#"):
                yield smiles


def lake_compounds(lake_dir: str | os.PathLike[str]) -> pa.Table:
    """``inchikey14, smiles, formula`` of every lake compound (empty when the lake has none)."""
    return sql.query(lake_dir, "SELECT inchikey14, smiles, formula FROM compounds ORDER BY inchikey14")


def held_out_keys(keys: Sequence[str], split: SplitSettings) -> set[str]:
    """The InChIKey-14s of ``keys`` that the split puts in validation or test."""
    return {k for k in keys if k and len(k) == 14 and assign_split(k, split) != "train"}


def structure_set(lake_dir: str | os.PathLike[str], files: Sequence[str | os.PathLike[str]], split: SplitSettings,
                  limit: int | None = None) -> StructureSet:
    """The VAE's training structures: ``files`` (``limit`` lines each) then the lake's training compounds.

    A structure is dropped when RDKit cannot read it, when its InChIKey-14 is a lake compound of the
    validation or test split (or hashes there: :func:`~speclake.training.split.assign_split` is a pure
    function of the key, so an unseen MOSES key is held out exactly as a lake key would be), or when
    its key was already taken.
    """
    counts = {"read": 0, "unparsable": 0, "held_out": 0, "duplicate": 0}
    out_smiles, out_keys, seen = [], [], set()

    def take(smiles: str, key: str | None) -> None:
        counts["read"] += 1
        canon = canonical_smiles(smiles)
        key = key or (inchikey14(canon) if canon else None)
        if canon is None or key is None:
            counts["unparsable"] += 1
        elif assign_split(key, split) != "train":
            counts["held_out"] += 1
        elif key in seen:
            counts["duplicate"] += 1
        else:
            seen.add(key)
            out_smiles.append(canon)
            out_keys.append(key)

    for path in files:
        for smiles in read_smiles_file(path, limit):
            take(smiles, None)
    compounds = lake_compounds(lake_dir).to_pydict()
    for smiles, key in zip(compounds["smiles"], compounds["inchikey14"]):
        take(smiles, key)
    counts["kept"] = len(out_smiles)
    log.info("VAE structure set: %s", counts)
    return StructureSet(out_smiles, out_keys, counts)


def training_spectra(lake_dir: str | os.PathLike[str], split: SplitSettings, which: str = "train",
                     limit: int | None = None) -> pa.Table:
    """MS2 library spectra of one split with their structure: spectrum_id, inchikey14, smiles, formula,
    ionmode, precursor_mz, mz, intensities (positive and negative mode, precursor m/z known)."""
    table = sql.query(lake_dir, """
        SELECT s.spectrum_id, s.inchikey14, c.smiles, c.formula, s.ionmode, s.precursor_mz, s.mz, s.intensities,
               s.adduct
        FROM spectra s JOIN compounds c ON c.inchikey = s.inchikey
        WHERE s.ms_level = 2 AND s.ionmode IN ('positive', 'negative') AND s.precursor_mz > 0
          AND s.inchikey14 IS NOT NULL
        ORDER BY s.spectrum_id""")
    keys = table.column("inchikey14").to_pylist()
    mask = pa.array([assign_split(k, split) == which for k in keys], pa.bool_())
    table = table.filter(mask)
    return table.slice(0, limit) if limit is not None else table


def spectrum_inputs(mz: Sequence, intensities: Sequence, ionmode: Sequence[str], precursor_mz: Sequence[float],
                    bins: BinSettings) -> np.ndarray:
    """The mapper's input per spectrum: the binned spectrum, then ion mode (+1/-1) and precursor m/z / 1000."""
    binned = bin_batch(mz, intensities, bins)
    extra = np.stack([np.where(np.asarray(ionmode) == "positive", 1.0, -1.0),
                      np.asarray(precursor_mz, np.float64) / 1000.0], axis=1).astype(np.float32)
    return np.concatenate([binned, extra.reshape(len(binned), 2)], axis=1)


__all__ = ["StructureSet", "held_out_keys", "inchikey14", "lake_compounds", "read_smiles_file", "spectrum_inputs",
           "structure_set", "training_spectra"]
