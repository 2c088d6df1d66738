"""Scoring candidate structures of one query spectrum; every function returns one score per candidate.

* descriptor models (arch1-3, classical): :func:`descriptor_log_likelihood`, the CSI:FingerID
  score: log-likelihood of the candidate's descriptor vector under the predicted probabilities
  (clipped to [clip, 1 - clip]), optionally weighted per descriptor by its validation reliability
  (:func:`reliability_weights`). Only descriptors computable from a structure (Morgan, MACCS,
  substructure keys) are used: ChemOnt classes come from library records, not from candidates.
* analogue search (arch4 embeddings, library modified cosine): :func:`analogue_scores`, the
  similarity-weighted mean Tanimoto of a candidate to the structures of the top library hits;
* joint embeddings (arch5): :func:`embedding_scores`, cosine of spectrum and structure embeddings;
* references: :func:`random_scores` (seeded) and the library prior (a candidate's highest
  Tanimoto to the training structures, :func:`speclake.training.metrics.max_tanimoto`);
* :func:`combine_with_prior`: within-list z-scored model score + lambda * prior, lambda chosen on
  the validation split by :func:`choose_lambda`.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .metrics import column_auc, hit_at_k, rank_of_truth, tanimoto_matrix

#: Descriptor families a candidate structure yields (ChemOnt needs a library record).
STRUCTURE_FAMILIES: tuple[str, ...] = ("morgan", "maccs", "substructure")


def descriptor_matrix(rows: Sequence[dict], names: Sequence[str], *, sparse: bool = False) -> tuple[Any, np.ndarray]:
    """(candidates x descriptors) 0/1 matrix from on-bit rows, and the mask of structure-computable names.

    ``rows`` hold ``morgan_on``, ``maccs_on``, ``substructure_on`` lists (as in ``descriptors``);
    ``sparse=True`` gives a scipy CSR matrix (for many candidates), else a dense uint8 array.
    """
    index = {n: j for j, n in enumerate(names)}
    mask = np.array([n.partition(":")[0] in STRUCTURE_FAMILIES for n in names], dtype=bool)
    indptr, cols = [0], []
    for row in rows:
        for fam in STRUCTURE_FAMILIES:
            for v in row.get(f"{fam}_on") or ():
                j = index.get(f"{fam}:{v}")
                if j is not None:
                    cols.append(j)
        indptr.append(len(cols))
    from scipy.sparse import csr_matrix

    mat = csr_matrix((np.ones(len(cols), np.uint8), np.asarray(cols, np.int64), np.asarray(indptr, np.int64)),
                     shape=(len(rows), len(names)))
    return (mat if sparse else mat.toarray()), mask


def descriptor_log_likelihood(probs: np.ndarray, candidates: Any, *, mask: np.ndarray | None = None,
                              weights: np.ndarray | None = None, clip: float = 1e-3) -> np.ndarray:
    """sum_j w_j [y_j log p_j + (1 - y_j) log(1 - p_j)] per candidate row y (masked descriptors skipped).

    ``candidates`` is a dense 0/1 array or a scipy sparse matrix (computed as y . (log p - log q) + sum log q).
    """
    if not 0 < clip < 0.5:
        raise ValueError(f"clip must be in (0, 0.5), got {clip}")
    p = np.clip(np.asarray(probs, dtype=np.float64), clip, 1 - clip)
    if candidates.ndim != 2 or candidates.shape[1] != p.shape[0]:
        raise ValueError(f"candidates {candidates.shape} do not match {p.shape[0]} predicted descriptors")
    w = np.ones_like(p) if weights is None else np.asarray(weights, dtype=np.float64)
    if mask is not None:
        w = w * np.asarray(mask, dtype=np.float64)
    log_p, log_q = np.log(p) * w, np.log1p(-p) * w
    y = candidates if hasattr(candidates, "tocsr") else np.asarray(candidates, dtype=np.float64)
    return np.asarray(y @ (log_p - log_q), dtype=np.float64).ravel() + log_q.sum()


def reliability_weights(y_val: np.ndarray, p_val: np.ndarray, *, floor: float = 0.0) -> np.ndarray:
    """Per-descriptor weight max(floor, 2 AUC - 1) on validation data (the mean weight where AUC is undefined)."""
    y, p = np.asarray(y_val), np.asarray(p_val)
    if y.shape != p.shape:
        raise ValueError(f"validation targets {y.shape} and probabilities {p.shape} differ in shape")
    auc = column_auc(y, p)
    w = np.clip(2 * auc - 1, floor, 1.0)
    fill = float(np.nanmean(w)) if np.isfinite(w).any() else 1.0
    return np.where(np.isfinite(w), w, fill)


def analogue_scores(hit_similarities: np.ndarray, hit_fingerprints: np.ndarray,
                    candidate_fingerprints: np.ndarray) -> np.ndarray:
    """Similarity-weighted mean Tanimoto of each candidate to the structures of the library hits.

    Negative similarities count as 0; with no positive similarity the plain mean is used.
    """
    s = np.clip(np.asarray(hit_similarities, dtype=np.float64), 0.0, None)
    if len(s) == 0:
        return np.zeros(len(candidate_fingerprints))
    tan = tanimoto_matrix(candidate_fingerprints, hit_fingerprints).astype(np.float64)
    w = s / s.sum() if s.sum() > 0 else np.full(len(s), 1.0 / len(s))
    return tan @ w


def top_hits(similarities: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest similarities, best first (ties by index)."""
    s = np.asarray(similarities, dtype=np.float64)
    return np.lexsort((np.arange(len(s)), -s))[:k]


def embedding_scores(query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Cosine of one spectrum embedding to each candidate structure embedding."""
    q = np.asarray(query, dtype=np.float64)
    c = np.asarray(candidates, dtype=np.float64)
    qn = np.linalg.norm(q)
    cn = np.linalg.norm(c, axis=1)
    return (c @ q) / np.where(cn * qn > 0, cn * qn, 1.0)


def random_scores(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform random scores (a random ranking; ties have probability 0)."""
    return rng.random(n)


def zscore(scores: np.ndarray) -> np.ndarray:
    """Scores standardised within one list (a constant list gives zeros)."""
    s = np.asarray(scores, dtype=np.float64)
    sd = s.std()
    return (s - s.mean()) / sd if sd > 0 else np.zeros_like(s)


def combine_with_prior(model: np.ndarray, prior: np.ndarray, lam: float) -> np.ndarray:
    """z-scored model score + ``lam`` * prior (Tanimoto in [0, 1])."""
    return zscore(model) + lam * np.asarray(prior, dtype=np.float64)


def choose_lambda(model_scores: Sequence[np.ndarray], priors: Sequence[np.ndarray], truths: Sequence[int],
                  grid: Sequence[float]) -> float:
    """The lambda of ``grid`` with the best validation hit@1 (then hit@5, hit@20; then the smallest lambda)."""
    if not grid:
        raise ValueError("empty lambda grid")
    if not model_scores:
        return float(min(grid))
    best, best_key = None, None
    for lam in sorted(grid):
        ranks = [rank_of_truth(combine_with_prior(m, p, lam), t) for m, p, t in zip(model_scores, priors, truths)]
        key = (hit_at_k(ranks, 1), hit_at_k(ranks, 5), hit_at_k(ranks, 20))
        if best_key is None or key > best_key:
            best, best_key = lam, key
    return float(best)
