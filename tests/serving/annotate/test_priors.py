"""Precomputed library priors: the bfloat16 kernel is exact, shard files are made once, annotation reads them."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from speclake.serving.annotate.priors import (BF16_EXACT, IndexPriors, ReferenceBits, ensure_shard_priors,
                                              reference_digest, shard_prior_path)
from speclake.training import metrics as M
from tests.conftest import SAMPLE


def _random_fps(rng, n: int, density: float) -> np.ndarray:
    return M.pack_fingerprints([np.nonzero(rng.random(2048) < density)[0] for _ in range(n)], 2048)


def test_kernel_equals_the_exact_maximum_also_past_the_bfloat16_range():
    """Max Tanimoto from the bfloat16 product equals the exact float computation, for sparse rows and for rows
    with more than 256 bits set (float32 path), and is 0 against an empty reference."""
    rng = np.random.default_rng(0)
    ref = _random_fps(rng, 300, 0.03)
    rows = np.concatenate([_random_fps(rng, 50, 0.03), _random_fps(rng, 5, 0.3), np.zeros((1, 32), np.uint64)])
    assert np.bitwise_count(rows).sum(1).max() > BF16_EXACT
    got = ReferenceBits(ref).max_tanimoto(rows, chunk=16)
    want = M.tanimoto_matrix(rows, ref).max(axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert got[-1] == 0.0
    assert not ReferenceBits(ref[:0]).max_tanimoto(rows).any()


@pytest.mark.ray
def test_shard_priors_are_made_once_and_match_the_per_candidate_prior(suspect_lake, tmp_path):
    """ensure_shard_priors writes one file per shard named by the reference digest, reuses it the next time,
    and the values read back by FAISS id equal the priors EvidenceBuilder computes per candidate; annotation
    rows are the same with and without the files (annotate_study made them for its index before scoring)."""
    from speclake.serving.annotate.queries import read_queries
    from speclake.serving.annotate.steps import Annotator, StepSettings

    fresh_lake = tmp_path / "lake"    # the pesticides' structures are in its index
    shutil.copytree(suspect_lake[0], fresh_lake, ignore=shutil.ignore_patterns("_staging"))
    made = sorted((fresh_lake / "index").rglob("priors-*.npy"))
    assert made and suspect_lake[1].priors["computed"] > 0, "annotate_study precomputes them before scoring"
    for f in made:   # start without them
        f.unlink()

    queries = read_queries(SAMPLE / "gnps_pesticides.mgf", study="p").queries[:40]
    plain = Annotator(fresh_lake, StepSettings(top_k=5))
    assert plain.ranker.evidence.index_priors is None
    rows_plain, _ = plain.annotate(queries)
    ev = plain.ranker.evidence
    index = plain.source.index
    first = plain.ensure_priors()
    assert first == {"computed": len(index), "reused": 0} and ev.index_priors is not None
    digest = reference_digest(ev.reference.keys, ev.reference.fps)
    assert all(shard_prior_path(s, digest).is_file() for s in index.shards)
    assert plain.ensure_priors() == {"computed": 0, "reused": len(index)}
    cands = [c for lst in plain.source.candidates(queries) for c in lst]
    fresh = {c.inchikey14: v for c, v in zip(cands, ev.kernel.max_tanimoto(ev.fps.of(cands)))}
    read = IndexPriors.open(index, digest).lookup([c.faiss_id for c in cands])
    assert len(cands) >= 10
    np.testing.assert_allclose(read, [fresh[c.inchikey14] for c in cands], rtol=1e-6)
    with_files = Annotator(fresh_lake, StepSettings(top_k=5))
    assert with_files.ranker.evidence.index_priors is not None
    rows_files, _ = with_files.annotate(queries)
    key = [(r["query_id"], r["rank"], r["inchikey14"], round(r["score"] or 0, 9)) for r in rows_plain]
    assert key == [(r["query_id"], r["rank"], r["inchikey14"], round(r["score"] or 0, 9)) for r in rows_files]
    plain.close()
    with_files.close()
