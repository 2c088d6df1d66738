"""Tests of index.embed: the embedder registry and the Morgan fingerprint embedder."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator

from speclake.index.embed import (
    EmbedActor,
    EmbedderUnavailable,
    arrow_to_vectors,
    available_embedders,
    get_embedder,
    vectors_to_arrow,
)
from tests.index.conftest import read_smiles


def test_registry_names_and_pending() -> None:
    """'fingerprint' is registered; the learned ones load from the training package and ask for a model;
    the fingerprint takes none; an unknown name lists the registered ones."""
    assert "fingerprint" in available_embedders()
    with pytest.raises(EmbedderUnavailable, match="needs a trained model"):
        get_embedder("arch5")
    with pytest.raises(EmbedderUnavailable, match="takes no model"):
        get_embedder("fingerprint", "/some/model")
    with pytest.raises(EmbedderUnavailable, match="unknown embedding 'nope'; available: .*arch5.*fingerprint"):
        get_embedder("nope")


def test_fingerprint_matches_rdkit_tanimoto(shipped_smiles) -> None:
    """Tanimoto on the packed bits equals RDKit's BulkTanimotoSimilarity on Morgan r=2/2048 fingerprints."""
    smiles = [s for s, _ in read_smiles(shipped_smiles, 50)]
    emb = get_embedder("fingerprint")
    codes, ok = emb.embed_smiles(smiles)
    assert ok.all() and codes.shape == (50, 256) and codes.dtype == np.uint8
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    fps = [gen.GetFingerprint(Chem.MolFromSmiles(s)) for s in smiles]
    ref = np.array(DataStructs.BulkTanimotoSimilarity(fps[0], fps))
    inter = np.unpackbits(codes & codes[0], axis=1).sum(1)
    union = np.unpackbits(codes | codes[0], axis=1).sum(1)
    np.testing.assert_allclose(inter / union, ref, rtol=0, atol=1e-12)
    assert emb.version.startswith("morgan-r2-2048-rdkit")


def test_bad_smiles_not_ok() -> None:
    """A SMILES RDKit cannot parse is flagged, not raised."""
    _, ok = get_embedder("fingerprint").embed_smiles(["CCO", "C1CC("])
    assert ok.tolist() == [True, False]


def test_arrow_roundtrip_and_actor() -> None:
    """Vectors survive Arrow (fixed-size and variable binary); the Ray actor returns inchikey, vector, ok."""
    emb = get_embedder("fingerprint")
    codes, _ = emb.embed_smiles(["CCO", "c1ccccc1"])
    arr = vectors_to_arrow(codes, emb)
    np.testing.assert_array_equal(arrow_to_vectors(arr, "binary", 2048), codes)
    np.testing.assert_array_equal(arrow_to_vectors(arr.cast(pa.binary()), "binary", 2048), codes)
    out = EmbedActor("fingerprint")(pa.table({"inchikey": ["a", "b"], "smiles": ["CCO", "C1CC("]}))
    assert out.column_names == ["inchikey", "vector", "ok"]
    assert out.column("ok").to_pylist() == [True, False]
