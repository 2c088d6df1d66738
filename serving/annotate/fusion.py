"""Learned fusion of evidence features: a linear score per candidate trained with a listwise
(per-query softmax) objective, i.e. multinomial logistic regression over each candidate list
(ListNet with a one-hot target, the conditional logit of discrete choice):

    loss = mean over queries of  -log softmax(X_q w)[truth_q]  +  l2 * |w|^2 / 2

Features are standardised with the training rows' mean and spread; queries whose truth is not in
the list, or whose list has one candidate, carry no ranking signal and are skipped. Fitted with
L-BFGS (scipy) from zero weights, so a fit is deterministic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass
class LinearFusion:
    """score(X) = ((X - mean) / scale) @ weights."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    l2: float = 1e-2
    n_queries: int = 0

    def score(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.features):
            raise ValueError(f"evidence has shape {X.shape}, expected (n, {len(self.features)}) for {self.features}")
        return ((X - self.mean) / self.scale) @ self.weights

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "linear_listwise", "features": list(self.features), "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "weights": self.weights.tolist(), "l2": self.l2,
                "n_queries": self.n_queries}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LinearFusion":
        if d.get("kind") != "linear_listwise":
            raise ValueError(f"unknown fusion kind {d.get('kind')!r}; expected 'linear_listwise'")
        return cls(tuple(d["features"]), np.asarray(d["mean"], np.float64), np.asarray(d["scale"], np.float64),
                   np.asarray(d["weights"], np.float64), float(d.get("l2", 0.0)), int(d.get("n_queries", 0)))


def softmax(scores: np.ndarray) -> np.ndarray:
    """Softmax of one list (empty in, empty out)."""
    s = np.asarray(scores, dtype=np.float64)
    if len(s) == 0:
        return s
    e = np.exp(s - s.max())
    return e / e.sum()


def usable_lists(X_list: Sequence[np.ndarray], truths: Sequence[int | None]) -> list[int]:
    """Indexes of the lists that can teach a ranking: the truth among two or more candidates."""
    return [i for i, (X, t) in enumerate(zip(X_list, truths)) if t is not None and t >= 0 and len(X) > 1]


def fit_listwise(X_list: Sequence[np.ndarray], truths: Sequence[int | None], features: Sequence[str], *,
                 l2: float = 1e-2, max_iter: int = 500) -> LinearFusion:
    """Fit :class:`LinearFusion` on candidate lists (``truths[i]``: the truth's row in ``X_list[i]``, or
    None when absent). ValueError when no list can teach anything."""
    from scipy.optimize import minimize

    use = usable_lists(X_list, truths)
    nf = len(features)
    if not use:
        raise ValueError("no query has its true structure among two or more candidates: nothing to fit")
    allX = np.vstack([X_list[i] for i in use])
    if allX.shape[1] != nf:
        raise ValueError(f"evidence has {allX.shape[1]} columns, expected {nf}")
    mean = allX.mean(axis=0)
    scale = allX.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    Z = (allX - mean) / scale
    sizes = np.array([len(X_list[i]) for i in use])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    owner = np.repeat(np.arange(len(use)), sizes)
    truth_rows = starts + np.array([truths[i] for i in use])
    nq = len(use)

    def loss_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
        s = Z @ w
        mx = np.full(nq, -np.inf)
        np.maximum.at(mx, owner, s)
        e = np.exp(s - mx[owner])
        den = np.bincount(owner, weights=e, minlength=nq)
        p = e / den[owner]
        loss = float(np.mean(np.log(den) + mx - s[truth_rows])) + 0.5 * l2 * float(w @ w)
        g = (Z.T @ p - Z[truth_rows].sum(axis=0)) / nq + l2 * w
        return loss, g

    res = minimize(loss_grad, np.zeros(nf), jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    return LinearFusion(tuple(features), mean, scale, np.asarray(res.x, np.float64), l2, nq)


def listwise_loss(model: LinearFusion, X_list: Sequence[np.ndarray], truths: Sequence[int | None]) -> float:
    """Mean -log softmax probability of the truth over usable lists (NaN with none)."""
    use = usable_lists(X_list, truths)
    if not use:
        return float("nan")
    return float(np.mean([-np.log(max(softmax(model.score(X_list[i]))[truths[i]], 1e-300)) for i in use]))


# -- training and evaluation data from the lake --------------------------------------------------------
def lake_queries(lake: Any, split: str, split_settings: Any, cap: int | None, seed: int = 0) -> tuple[list, list[dict]]:
    """Queries (blind: m/z, ion mode, charge and peaks only) of the lake's MS2 spectra of one split, at most
    ``cap`` (a fixed hash-ordered subset), and per query its true structure (inchikey14, smiles)."""
    import hashlib

    from speclake.lake import sql
    from speclake.training.split import assign_split

    from .model import Query

    con = sql.connect(lake, threads=2)
    try:
        rows = con.sql(
            "SELECT s.spectrum_id, s.precursor_mz, s.ionmode, s.charge, s.mz, s.intensities, c.inchikey14, "
            "c.smiles FROM spectra s JOIN compounds c USING (inchikey) WHERE s.ms_level = 2 AND "
            "s.precursor_mz IS NOT NULL AND s.precursor_mz > 0 AND c.inchikey14 IS NOT NULL AND "
            "s.num_peaks > 0 ORDER BY s.spectrum_id").fetchall()
    finally:
        con.close()
    rows = [r for r in rows if len(r[6]) == 14 and assign_split(r[6], split_settings) == split]
    if cap is not None and len(rows) > cap:
        rows.sort(key=lambda r: hashlib.sha256(f"{seed}:{r[0]}".encode()).hexdigest())
        rows = sorted(rows[:cap], key=lambda r: r[0])
    queries, truths = [], []
    for sid, pmz, mode, charge, mz, inten, k14, smi in rows:
        it = np.asarray(inten, np.float64)
        it = it / it.max() if len(it) and it.max() > 0 else it
        queries.append(Query(query_id=sid, source_file="lake", record_locator=sid, precursor_mz=float(pmz),
                             ionmode=mode, mz=np.asarray(mz, np.float64), intensities=it,
                             charge=int(charge) if charge else None))
        truths.append({"spectrum_id": sid, "inchikey14": k14, "smiles": smi, "ionmode": mode})
    return queries, truths


def library_hits(lake: Any, queries: Sequence[Any], *, top_k: int = 10, precursor_ppm: float = 10.0,
                 progress: Any = None) -> dict[str, list[list[Any]]]:
    """Identity and analogue hits of every query against the lake's library index (built / updated on
    first use): mode -> per query list of :class:`speclake.serving.library.Hit`."""
    from speclake.serving.library import LibraryIndex, search_batch
    from speclake.serving.library.search import Query as LibQuery

    index = LibraryIndex.open(lake, progress=progress)
    lq = [LibQuery(q.mz, q.intensities, q.precursor_mz, q.ionmode) for q in queries]
    out = {}
    for mode in ("identity", "analogue"):
        try:
            out[mode] = search_batch(index, lq, mode=mode, top_k=top_k, precursor_ppm=precursor_ppm)
        except ValueError:  # a query the library cleaner refuses: search one by one, no hits for it
            res = []
            for q in lq:
                try:
                    res.append(search_batch(index, [q], mode=mode, top_k=top_k, precursor_ppm=precursor_ppm)[0])
                except ValueError:
                    res.append([])
            out[mode] = res
    return out


def truth_rows(candidates: Sequence[Sequence[Any]], truths: Sequence[dict]) -> list[int | None]:
    """Row of each query's true structure (InChIKey-14) in its candidate list, None when absent."""
    out: list[int | None] = []
    for cands, t in zip(candidates, truths):
        out.append(next((i for i, c in enumerate(cands) if c.inchikey14 == t["inchikey14"]), None))
    return out


def ranks_of_truth(scores: Sequence[np.ndarray], truths: Sequence[int | None]) -> np.ndarray:
    """Pessimistic 1-based rank of the truth per query (a truth missing from the list: a miss, rank 10**9)."""
    from speclake.training.metrics import rank_of_truth

    return np.array([10**9 if t is None else rank_of_truth(s, t) for s, t in zip(scores, truths)], np.int64)


def hit_summary(ranks: np.ndarray, idx: np.ndarray | None = None) -> dict[str, float]:
    """n and hit@1/5/20 of the selected queries."""
    r = ranks if idx is None else ranks[idx]
    return {"n": int(len(r)), **{f"hit{k}": float(np.mean(r <= k)) if len(r) else float("nan") for k in (1, 5, 20)}}
