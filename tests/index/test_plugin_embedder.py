"""A float embedder plugged in through the registry: build, ANN (float HNSW) and exact cosine search."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from speclake.index.build import build_index
from speclake.index.search import StructureIndex
from speclake.index.settings import IndexSettings
from tests.index import toy_embedder  # noqa: F401  (registers toy_maccs_float)
from tests.index.conftest import read_smiles


def test_float_embedder_end_to_end(ray_local, tmp_path: Path, shipped_smiles: Path) -> None:
    """A registered float embedder builds float shards (HNSW on large ones); window queries equal exact
    cosine search, and the manifest names the embedder and its version."""
    settings = IndexSettings(embedding="toy_maccs_float", shard_target_size=150, flat_max=100, exact_scan_max=10)
    report = build_index([shipped_smiles], tmp_path / "lake", settings=settings)
    idx = tmp_path / "lake" / "index" / "toy_maccs_float"
    with StructureIndex.open(idx) as ix:
        assert ix.embedding == {"name": "toy_maccs_float", "version": "toy-maccs-1", "kind": "float", "dim": 167,
                                "metric": "cosine"}
        assert len(ix) == report.structures
        assert {s.info.index_type for s in ix.shards} == {"hnsw"}
        codes = np.concatenate([np.asarray(s.codes) for s in ix.shards])
        masses = np.concatenate([np.asarray(s.mass) for s in ix.shards])
        np.testing.assert_allclose(np.linalg.norm(codes, axis=1), 1.0, rtol=1e-5)
        rows = np.arange(0, len(codes), 25)
        approx = ix.search(codes[rows], masses[rows].tolist(), ppm=100_000, k=5)
        exact = ix.search(codes[rows], masses[rows].tolist(), ppm=100_000, k=5, exact=True)
        assert approx.used_ann.any()
        recall = [np.sum(approx.scores[i] >= exact.scores[i][-1] - 1e-6) / 5 for i in range(len(rows))]
        assert np.mean(recall) >= 0.9
        smi, rid = read_smiles(shipped_smiles, 1)[0]
        hit = ix.query(smiles=smi, k=1).to_pylist()[0]
        assert abs(hit["score"] - 1.0) < 1e-5
