"""Spec2Vec-style spectrum embeddings: Spark ML Word2Vec over spectrum documents.

A document is a spectrum's peak words and loss words (:func:`.prepare.spectrum_words`);
a spectrum's vector is the mean of its known word vectors weighted by the
word's peak intensity raised to ``intensity_power`` (Spec2Vec: 0.5). Word
vectors are saved as Parquet (``word``, ``vector``) so later runs embed new
spectra with the same model.
"""
from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from .prepare import Skip, rows_to_batches

log = logging.getLogger(__name__)


class Spec2VecSettings(BaseModel):
    """Word2Vec training and spectrum-vector settings."""

    model_config = ConfigDict(extra="forbid")

    vector_size: int = 100
    window_size: int = 10
    min_count: int = 5
    max_iter: int = 1
    num_partitions: int | None = None   # Word2Vec training partitions; None: Spark's cores
    step_size: float = 0.025
    max_sentence_length: int = 1000
    intensity_power: float = 0.5
    seed: int = 42


WORD_VECTORS = pa.schema([pa.field("word", pa.string()), pa.field("vector", pa.list_(pa.float32()))])

SPEC2VEC_OUT = pa.schema([
    pa.field("spectrum_id", pa.string()),
    pa.field("spec2vec", pa.list_(pa.float32())),
    pa.field("skip_code", pa.string()),
    pa.field("skip_reason", pa.string()),
])


def fit_word_vectors(spark: Any, documents: Any, settings: Spec2VecSettings, out_path: Path) -> int:
    """Train Word2Vec on a DataFrame with an array<string> column ``words``; save word vectors; return vocab size."""
    from pyspark.ml.feature import Word2Vec

    parts = settings.num_partitions or spark.sparkContext.defaultParallelism
    w2v = Word2Vec(vectorSize=settings.vector_size, windowSize=settings.window_size, minCount=settings.min_count,
                   maxIter=settings.max_iter, numPartitions=max(1, int(parts)), stepSize=settings.step_size,
                   maxSentenceLength=settings.max_sentence_length, seed=settings.seed,
                   inputCol="words", outputCol="_w2v")
    model = w2v.fit(documents.select("words"))
    rows = model.getVectors().collect()
    words = [r["word"] for r in rows]
    vectors = [r["vector"].toArray().astype(np.float32).tolist() for r in rows]
    table = pa.table({"word": words, "vector": vectors}, schema=WORD_VECTORS)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, out_path)
    log.info("spec2vec: %d word vectors of size %d saved to %s", len(words), settings.vector_size, out_path)
    return len(words)


@lru_cache(maxsize=2)
def load_word_vectors(path: str) -> tuple[dict[str, int], np.ndarray]:
    """(word -> row, matrix) of saved word vectors (cached per worker process)."""
    table = pq.read_table(path)
    words = table.column("word").to_pylist()
    flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    matrix = np.asarray(flat, dtype=np.float32).reshape(len(words), -1) if words else np.zeros((0, 0), np.float32)
    return {w: i for i, w in enumerate(words)}, matrix


def spectrum_vector(words: list[str], weights: list[float], vocab: dict[str, int], matrix: np.ndarray,
                    intensity_power: float) -> np.ndarray | Skip:
    """Intensity-weighted mean of the known word vectors of one document, or a Skip when none is known."""
    idx = [vocab.get(w, -1) for w in words]
    known = np.fromiter((i >= 0 for i in idx), dtype=bool, count=len(idx))
    if not known.any():
        return Skip("no_known_words", "none of the spectrum's words is in the Word2Vec vocabulary")
    rows = np.asarray(idx, dtype=np.int64)[known]
    w = np.power(np.asarray(weights, dtype=np.float64)[known], intensity_power)
    if w.sum() <= 0:
        w = np.ones_like(w)
    return (w @ matrix[rows].astype(np.float64) / w.sum()).astype(np.float32)


def spec2vec_batches(batches: Iterator[pa.RecordBatch], *, vectors_path: str,
                     intensity_power: float) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: prepared spectra (``spectrum_id``, ``words``, ``word_weights``) in, vectors out."""
    vocab, matrix = load_word_vectors(vectors_path)

    def rows() -> Iterator[dict[str, Any]]:
        for batch in batches:
            ids = batch.column("spectrum_id").to_pylist()
            words = batch.column("words").to_pylist()
            weights = batch.column("word_weights").to_pylist()
            for sid, w, ww in zip(ids, words, weights):
                v = spectrum_vector(w or [], ww or [], vocab, matrix, intensity_power)
                if isinstance(v, Skip):
                    yield {"spectrum_id": sid, "skip_code": v.code, "skip_reason": v.reason}
                else:
                    yield {"spectrum_id": sid, "spec2vec": v.tolist()}

    yield from rows_to_batches(rows(), SPEC2VEC_OUT)
