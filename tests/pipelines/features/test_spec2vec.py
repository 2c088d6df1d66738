"""Spec2Vec spectrum vectors from word vectors (hand-checked weighting) and the Arrow-batch form."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from speclake.pipelines.features.prepare import Skip
from speclake.pipelines.features.spec2vec import WORD_VECTORS, spec2vec_batches, spectrum_vector


def test_spectrum_vector_is_sqrt_intensity_weighted_mean() -> None:
    """Vector = sum(sqrt(w_i) v_i) / sum(sqrt(w_i)) over known words; unknown words are ignored."""
    vocab = {"peak@91.05": 0, "loss@18.01": 1}
    matrix = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    v = spectrum_vector(["peak@91.05", "loss@18.01", "peak@1.00"], [1.0, 0.25, 1.0], vocab, matrix, 0.5)
    np.testing.assert_allclose(v, [1.0 / 1.5, 0.5 / 1.5], rtol=1e-6)


def test_no_known_word_is_a_skip() -> None:
    """A document with no word in the vocabulary is skipped with a reason, not a zero vector."""
    out = spectrum_vector(["peak@1.00"], [1.0], {"peak@2.00": 0}, np.ones((1, 2), np.float32), 0.5)
    assert isinstance(out, Skip) and out.code == "no_known_words"


def test_spec2vec_batches_reads_saved_vectors(tmp_path) -> None:
    """The mapInArrow body loads saved word vectors and emits one vector or one skip per spectrum."""
    path = tmp_path / "wv.parquet"
    pq.write_table(pa.table({"word": ["peak@91.05"], "vector": [[0.5, 0.5]]}, schema=WORD_VECTORS), path)
    batch = pa.RecordBatch.from_pylist([
        {"spectrum_id": "a", "words": ["peak@91.05"], "word_weights": [1.0]},
        {"spectrum_id": "b", "words": ["peak@1.00"], "word_weights": [1.0]}])
    out = pa.Table.from_batches(list(spec2vec_batches(iter([batch]), vectors_path=str(path), intensity_power=0.5)))
    rows = {r["spectrum_id"]: r for r in out.to_pylist()}
    assert rows["a"]["spec2vec"] == [0.5, 0.5]
    assert rows["b"]["skip_code"] == "no_known_words"
