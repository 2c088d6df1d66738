"""Tests of index.shards: shard planning, top-k, and exact vs ANN search restricted by IDSelector."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from speclake.index.embed import get_embedder, vectors_to_arrow
from speclake.index.settings import IndexSettings
from speclake.index.shards import (
    Shard,
    ShardInfo,
    _topk,
    build_shard,
    choose_index_type,
    global_ids,
    plan_edges,
    split_ids,
)
from tests.index.conftest import read_smiles


def test_plan_edges_sizes_and_ties() -> None:
    """Edges give about target-size shards and never split equal masses."""
    masses = np.repeat(np.arange(100, dtype=float), 10)  # 10 structures per mass
    edges = plan_edges(masses, 250)
    assert len(edges) == 3
    counts = np.bincount(np.searchsorted(edges, masses, side="right"))
    assert counts.sum() == 1000 and counts.max() <= 260
    for e in edges:
        assert not np.any(masses == e)
    assert plan_edges(masses, 5000) == []


def test_topk_ties_by_position() -> None:
    """Top-k keeps the best scores and breaks ties by the smaller position."""
    s, p = _topk(np.array([0.5, 0.9, 0.5, 0.5, 0.1]), np.array([7, 3, 2, 9, 1]), 3)
    assert p.tolist() == [3, 2, 7] and s.tolist() == [0.9, 0.5, 0.5]


def test_global_ids_roundtrip() -> None:
    """Global ids pack shard serial and position and split back."""
    ids = global_ids(5, np.array([0, 17]))
    serials, pos = split_ids(ids)
    assert serials.tolist() == [5, 5] and pos.tolist() == [0, 17]


def test_binary_ivf_refused() -> None:
    """IVF for fingerprints is refused (IndexBinaryIVF takes no IDSelector); small shards are flat."""
    s = IndexSettings(ann="ivf", flat_max=10)
    with pytest.raises(ValueError, match="IDSelector"):
        choose_index_type(100, "binary", s)
    assert choose_index_type(5, "binary", s) == "flat"
    assert choose_index_type(100, "float", s) == "hnsw"  # too small to train IVF-PQ
    assert choose_index_type(50_000, "float", s) == "ivf_pq"


@pytest.fixture(scope="module")
def hnsw_shard(tmp_path_factory: pytest.TempPathFactory, shipped_smiles: Path) -> Shard:
    """A 400-structure shard with a binary HNSW index (fake masses: the row number)."""
    emb = get_embedder("fingerprint")
    smiles = [s for s, _ in read_smiles(shipped_smiles)]
    codes, ok = emb.embed_smiles(smiles)
    n = len(smiles)
    table = pa.table({
        "position": np.arange(n), "vector": vectors_to_arrow(codes, emb),
        "inchikey": [f"K{i}" for i in range(n)], "smiles": smiles, "formula": ["C"] * n,
        "monoisotopic_mass": np.arange(n, dtype=float), "source": ["smiles"] * n,
        "record_id": [str(i) for i in range(n)], "compound_name": [None] * n,
    })
    d = tmp_path_factory.mktemp("shard")
    pq.write_table(table, d / "in.parquet")
    settings = IndexSettings(flat_max=10, exact_scan_max=20, oversample=8, hnsw_ef_search=64)
    info = build_shard(str(d / "in.parquet"), str(d / "s0"), 0, emb.describe(), settings.model_dump_json())
    assert info["index_type"] == "binary_hnsw" and info["count"] == n
    sinfo = ShardInfo(dir="s0", lo_edge=0.0, hi_edge=1e12, **{k: v for k, v in info.items() if k != "dir"})
    return Shard(d, sinfo, "binary", 2048, settings)


def test_mass_range_is_exact(hnsw_shard: Shard) -> None:
    """mass_range returns exactly the positions whose mass lies in the closed interval."""
    assert hnsw_shard.mass_range(10.0, 20.0) == (10, 21)
    assert hnsw_shard.mass_range(10.5, 10.7) == (11, 11)


def test_ann_with_range_selector_agrees_with_exact(hnsw_shard: Shard) -> None:
    """HNSW restricted by IDSelectorRange returns only ids in range; re-ranked hits carry exact scores.

    Binary HNSW ranks by Hamming distance, not Tanimoto, so its recall is below 1 (measured here >= 0.9);
    precursor-window queries do not depend on it (they are scored exactly, see test_search).
    """
    recall = []
    for q in range(0, 400, 20):
        query = np.asarray(hnsw_shard.codes[q])
        s_ann, p_ann, used = hnsw_shard.search(query, 100, 300, 10)
        s_ex, p_ex, used_ex = hnsw_shard.search(query, 100, 300, 10, exact=True)
        assert used and not used_ex
        assert np.all((p_ann >= 100) & (p_ann < 300))
        recall.append(np.sum(s_ann >= s_ex[-1] - 1e-12) / 10)
        np.testing.assert_allclose(s_ann, hnsw_shard.exact_scores(query, 0, 0, p_ann))
    assert np.mean(recall) >= 0.9


def test_subset_selector(hnsw_shard: Shard) -> None:
    """A DuckDB-style id subset (IDSelectorBatch) restricts the ANN search to those positions."""
    subset = np.arange(0, 400, 3)
    s, p, used = hnsw_shard.search(np.asarray(hnsw_shard.codes[6]), 0, 0, 5, subset=subset)
    assert used and set(p.tolist()) <= set(subset.tolist())
    assert p[0] == 6 and s[0] == 1.0
