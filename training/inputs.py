"""Turn example batches (Arrow tables or Ray Data numpy batches) into model input arrays.

The same functions serve training workers and :class:`~speclake.training.registry.LoadedModel`
prediction, so a model always sees its inputs built the same way.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from speclake.training.encoding import BinSettings, DescriptorSpace, bin_batch_csr

Batch = Mapping[str, Any]


def as_batch(examples: pa.Table | Batch) -> dict[str, list]:
    """Column name -> list of Python values (None for nulls), from an Arrow table or a numpy batch."""
    if isinstance(examples, pa.Table):
        return {name: examples.column(name).to_pylist() for name in examples.column_names}
    return {k: list(v) for k, v in examples.items()}


def batch_size(batch: Batch) -> int:
    return len(next(iter(batch.values()))) if batch else 0


def binned_csr(batch: Batch, bins: BinSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR parts (indptr, indices, data) of the binned spectra of a batch."""
    mzs = [np.asarray(m if m is not None else [], np.float64) for m in batch["mz"]]
    ints = [np.asarray(i if i is not None else [], np.float64) for i in batch["intensities"]]
    return bin_batch_csr(mzs, ints, bins)


def binned_dense(batch: Batch, bins: BinSettings) -> np.ndarray:
    """Dense (n, n_bins) float32 binned spectra of a batch."""
    indptr, indices, data = binned_csr(batch, bins)
    out = np.zeros((len(indptr) - 1, bins.n_bins), np.float32)
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    out[rows, indices] = data
    return out


def block_matrix(batch: Batch, block: str, dim: int) -> np.ndarray:
    """(n, dim) float32 matrix of one feature block; missing blocks are zeros, longer ones cut to ``dim``."""
    values = batch[block]
    out = np.zeros((len(values), dim), np.float32)
    for r, v in enumerate(values):
        if v is not None and len(v):
            arr = np.nan_to_num(np.asarray(v, np.float32)[:dim])
            out[r, : len(arr)] = arr
    return out


def descriptor_rows(batch: Batch) -> list[dict]:
    """``descriptors``-like rows of a batch (for :meth:`DescriptorSpace.targets`)."""
    cols = ("morgan_on", "maccs_on", "substructure_on", "chemont_classes")
    n = batch_size(batch)
    return [{c: (list(batch[c][i]) if batch[c][i] is not None else None) for c in cols if c in batch} for i in range(n)]


def descriptor_targets(batch: Batch, space: DescriptorSpace) -> np.ndarray:
    """(n, n_descriptors) float32 0/1 targets."""
    return space.targets(descriptor_rows(batch)).astype(np.float32)


def has_descriptors(batch: Batch) -> np.ndarray:
    """Bool mask of examples whose structure has a ``descriptors`` row."""
    return np.array([v is not None for v in batch["morgan_on"]], bool)


def has_inputs(batch: Batch, inputs: Sequence[str]) -> np.ndarray:
    """Bool mask of examples that have every per-example input of ``inputs`` (``descriptors``: a
    ``descriptors`` row; ``structures``: a SMILES). Feature blocks are not required per example: a
    spectrum without feature rows reads them as zeros."""
    keep = np.ones(batch_size(batch), bool)
    if "descriptors" in inputs:
        keep &= has_descriptors(batch)
    if "structures" in inputs:
        keep &= np.array([bool(s) for s in batch["smiles"]], bool)
    return keep


def tanimoto_matrix(on_bits: Sequence[Sequence[int] | None]) -> np.ndarray:
    """(n, n) Tanimoto similarity of fingerprints given as on-bit lists (empty or missing: 0)."""
    n = len(on_bits)
    width = 1 + max((int(max(b)) for b in on_bits if b is not None and len(b)), default=0)
    dense = np.zeros((n, width), np.float32)
    for r, b in enumerate(on_bits):
        if b is not None and len(b):
            dense[r, np.asarray(b, np.int64)] = 1.0
    inter = dense @ dense.T
    counts = dense.sum(1)
    union = counts[:, None] + counts[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0).astype(np.float32)


def sample_tanimoto_pairs(sim: np.ndarray, valid: np.ndarray, n_bins: int, per_bin: int,
                          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j), i < j, sampled evenly over ``n_bins`` Tanimoto bins (as in MS2DeepScore).

    Each bin contributes up to ``per_bin`` pairs, so rare high-similarity pairs are not swamped by
    the many unrelated ones.
    """
    iu, ju = np.triu_indices(len(sim), k=1)
    keep = valid[iu] & valid[ju]
    iu, ju = iu[keep], ju[keep]
    if len(iu) == 0:
        return iu, ju
    which = np.minimum((sim[iu, ju] * n_bins).astype(np.int64), n_bins - 1)
    out_i, out_j = [], []
    for b in range(n_bins):
        members = np.flatnonzero(which == b)
        if len(members):
            pick = rng.choice(members, size=min(per_bin, len(members)), replace=False)
            out_i.append(iu[pick])
            out_j.append(ju[pick])
    return np.concatenate(out_i), np.concatenate(out_j)
