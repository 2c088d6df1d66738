"""Learned embedders in the structure index: arch5 (joint spectrum/structure space) and descriptor vectors.

A real index is built over the sample lake's compounds with a trained model's encoder, then queried
with lake spectra and with a spectrum file through the CLI.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from speclake.index.build import build_index
from speclake.index.embed import EmbedderUnavailable, embedder_class
from speclake.index.search import StructureIndex
from speclake.index.settings import IndexSettings
from speclake.lake import sql
from speclake.training.registry import load_model

pytestmark = pytest.mark.ray


def _lake_spectra(lake: Path, n: int) -> list[dict]:
    """``n`` positive-mode MS2 lake spectra of known compounds, with their compound's mass."""
    con = sql.connect(lake)
    try:
        return con.execute(
            "SELECT s.spectrum_id, s.mz, s.intensities, s.precursor_mz, s.adduct, s.ionmode, s.inchikey, "
            "c.monoisotopic_mass FROM spectra s JOIN compounds c USING (inchikey) "
            "WHERE s.ms_level = 2 AND s.ionmode = 'positive' AND s.adduct = '[M+H]+' AND s.num_peaks >= 5 "
            f"ORDER BY s.spectrum_id LIMIT {n}").df().to_dict("records")
    finally:
        con.close()


@pytest.fixture(scope="module")
def arch5_index(trained, sample_feature_lake, ray_session):
    """An index named arch5 over the lake compounds, embedded by the newest arch5 model of the lake."""
    lake, _ = sample_feature_lake
    result = trained("arch5")
    settings = IndexSettings(embedding="arch5", embedding_model=result.model_id, shard_target_size=60, flat_max=40,
                             exact_scan_max=10)
    report = build_index([lake], lake, settings=settings)
    assert report.structures > 50
    return lake / "index" / "arch5", result


def test_no_model_is_a_clear_error(tmp_path: Path) -> None:
    """Asking for arch5 vectors in a lake without a trained arch5 model says which command makes one."""
    with pytest.raises(EmbedderUnavailable, match="speclake train --arch arch5"):
        embedder_class("arch5").resolve_model(str(tmp_path), None)


def test_arch5_index_holds_the_graph_encoder_vectors(arch5_index, sample_feature_lake) -> None:
    """The manifest names the model (version = model id); stored vectors are the model's own structure
    embeddings of the catalog SMILES."""
    lake, _ = sample_feature_lake
    path, result = arch5_index
    model = load_model(lake, result.model_id)
    with StructureIndex.open(path) as ix:
        assert ix.embedding["name"] == "arch5" and ix.embedding["version"] == result.model_id
        assert Path(ix.embedding["model"]).name == result.model_id
        assert ix.kind == "float" and ix.dim == model.context.model["embedding_dim"]
        shard = ix.shards[0]
        smiles = shard.meta.column("smiles").to_pylist()[:10]
        expected = model.embed_structures(smiles)
        np.testing.assert_allclose(np.asarray(shard.codes[:10]), expected, atol=1e-5)


def test_spectrum_query_ranks_by_the_joint_embedding(arch5_index, sample_feature_lake) -> None:
    """Querying by spectra: every hit lies in the query's mass window and its score is the cosine of the
    model's spectrum embedding with the structure embedding; exact and ANN search agree here."""
    lake, _ = sample_feature_lake
    path, result = arch5_index
    model = load_model(lake, result.model_id)
    spectra = _lake_spectra(lake, 8)
    assert spectra, "the sample lake has positive [M+H]+ spectra"
    masses = [r["monoisotopic_mass"] for r in spectra]
    with StructureIndex.open(path) as ix:
        hits = ix.query_batch(masses=masses, ppm=50_000, spectra=spectra, k=5, exact=True).to_pylist()
        approx = ix.query_batch(masses=masses, ppm=50_000, spectra=spectra, k=5).to_pylist()
    assert hits and len({h["query"] for h in hits}) == len(spectra)
    q_emb = model.embed_spectra(__import__("pyarrow").table(
        {"mz": [r["mz"] for r in spectra], "intensities": [r["intensities"] for r in spectra]}))
    for h in hits:
        m = masses[h["query"]]
        assert abs(h["monoisotopic_mass"] - m) <= m * 0.05 + 1e-9
        s_emb = model.embed_structures([h["smiles"]])[0]
        assert h["score"] == pytest.approx(float(q_emb[h["query"]] @ s_emb), abs=1e-4)
    assert [h["faiss_id"] for h in approx] == [h["faiss_id"] for h in hits]


def test_cli_queries_an_mgf_file(arch5_index, sample_feature_lake, tmp_path: Path) -> None:
    """`speclake index query --spectrum FILE.mgf` reads the file, centres each window on the neutral mass from
    PEPMASS and the adduct, and prints one block of hits per spectrum."""
    from speclake.index.cli import index_cli

    lake, _ = sample_feature_lake
    path, _ = arch5_index
    spectra = _lake_spectra(lake, 2)
    mgf = tmp_path / "queries.mgf"
    with open(mgf, "w") as fh:
        for i, r in enumerate(spectra):
            fh.write(f"BEGIN IONS\nTITLE=query {i}\nPEPMASS={r['precursor_mz']}\nCHARGE=1+\nIONMODE=positive\n"
                     "ADDUCT=[M+H]+\nMSLEVEL=2\n")
            fh.writelines(f"{mz:.5f} {it:.4f}\n" for mz, it in zip(r["mz"], r["intensities"]))
            fh.write("END IONS\n")
    res = CliRunner().invoke(index_cli, ["query", "--index", str(path), "--spectrum", str(mgf), "--ppm", "20000",
                                         "-k", "3"])
    assert res.exit_code == 0, res.output
    lines = [ln.split("\t") for ln in res.output.strip().splitlines()]
    assert lines[0][:3] == ["query", "query_spectrum", "rank"]
    assert {ln[1] for ln in lines[1:]} == {"query 0", "query 1"}


def test_descriptor_vectors_index(trained, sample_feature_lake, ray_session) -> None:
    """The 'descriptors' embedding: structures are their descriptor vectors in an arch2 model's space,
    spectra the model's predicted probabilities; a spectrum query scores by their cosine."""
    lake, _ = sample_feature_lake
    result = trained("arch2")
    build_index([lake], lake, name="descriptors-test",
                settings=IndexSettings(embedding="descriptors", embedding_model=result.model_id, flat_max=10_000))
    model = load_model(lake, result.model_id)
    spectra = _lake_spectra(lake, 3)
    with StructureIndex.open(lake / "index" / "descriptors-test") as ix:
        assert ix.dim == len(model.descriptor_names)
        hits = ix.query_batch(masses=[None] * len(spectra), spectra=spectra, k=3).to_pylist()
    import pyarrow as pa

    from speclake.index.embed import get_embedder, normalize_rows

    p = model.predict_descriptors(pa.table({"mz": [spectra[0]["mz"]], "intensities": [spectra[0]["intensities"]]}))
    first = [h for h in hits if h["query"] == 0]
    assert len(first) == 3 and first[0]["score"] >= first[-1]["score"]
    vec, ok = get_embedder("descriptors", str(lake / "models" / result.model_id)).embed_smiles([first[0]["smiles"]])
    assert ok.all() and vec.sum() > 0
    assert first[0]["score"] == pytest.approx(float(normalize_rows(p)[0] @ normalize_rows(vec)[0]), abs=1e-4)
