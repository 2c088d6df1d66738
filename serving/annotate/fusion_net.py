"""Non-linear listwise fusion: a small network scores each candidate from its evidence and its list's
context, trained with the same listwise softmax loss as :class:`.fusion.LinearFusion`.

A linear listwise score cannot use a query-level column (the same for every candidate of a list, e.g. the
best library hit's similarity ``analogue_top``): it cancels in the softmax. Yet that is what should decide how
far to trust the library prior against spectrum evidence (a strong library analogue: prior and analogue
evidence; none: spectrum models and fragmentation). The network sees, per candidate, the standardised
evidence ``x`` and its distance to the list's best value ``x - max(x over the list)``, and scores

    s = z @ w + tanh(z @ W.T + b) @ v

(a linear part, started from the linear fusion's weights, plus ``hidden`` tanh units that model interactions).
An ensemble of ``members`` networks from different random starts is averaged. Fitted with L-BFGS (scipy) on
each list's top ``max_rows`` candidates by the linear fusion plus the truth (the softmax mass further down is
negligible; it keeps a fit on 2,000 lists of 900 candidates to seconds per member); deterministic per seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .fusion import LinearFusion, fit_listwise, usable_lists

KIND = "net_listwise"


def expand(X: np.ndarray) -> np.ndarray:
    """Evidence of one list with its list-relative columns: ``[X, X - max over the list]``."""
    X = np.asarray(X, dtype=np.float64)
    if len(X) == 0:
        return np.zeros((0, 2 * X.shape[1] if X.ndim == 2 else 0))
    return np.hstack([X, X - X.max(axis=0, keepdims=True)])


@dataclass
class NetFusion:
    """Ensemble of listwise tanh networks over :func:`expand`-ed evidence; ``members``: (w, W, b, v) each."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    members: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    l2: float = 1e-2
    hidden: int = 16
    n_queries: int = 0

    def score(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.features):
            raise ValueError(f"evidence has shape {X.shape}, expected (n, {len(self.features)}) for {self.features}")
        Z = (expand(X) - self.mean) / self.scale
        return np.mean([_forward(Z, *m)[0] for m in self.members], axis=0) if len(X) else np.zeros(0)

    @property
    def weights(self) -> np.ndarray:
        """The mean linear weights of the evidence columns themselves (for reports; the network adds to them)."""
        return np.mean([m[0][: len(self.features)] for m in self.members], axis=0)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, "features": list(self.features), "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "l2": self.l2, "hidden": self.hidden, "n_queries": self.n_queries,
                "members": [{"w": w.tolist(), "W": W.tolist(), "b": b.tolist(), "v": v.tolist()}
                            for w, W, b, v in self.members]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NetFusion":
        if d.get("kind") != KIND:
            raise ValueError(f"unknown fusion kind {d.get('kind')!r}; expected {KIND!r}")
        members = [tuple(np.asarray(m[k], np.float64) for k in ("w", "W", "b", "v")) for m in d["members"]]
        return cls(tuple(d["features"]), np.asarray(d["mean"], np.float64), np.asarray(d["scale"], np.float64),
                   members, float(d.get("l2", 0.0)), int(d.get("hidden", 0)), int(d.get("n_queries", 0)))


def _forward(Z: np.ndarray, w: np.ndarray, W: np.ndarray, b: np.ndarray, v: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    A = np.tanh(Z @ W.T + b)
    return Z @ w + A @ v, A


def _pack(w, W, b, v) -> np.ndarray:
    return np.concatenate([w, W.ravel(), b, v])


def _unpack(theta: np.ndarray, nf: int, h: int):
    w = theta[:nf]
    W = theta[nf:nf + h * nf].reshape(h, nf)
    b = theta[nf + h * nf:nf + h * nf + h]
    v = theta[nf + h * nf + h:]
    return w, W, b, v


def _fit_rows(X_list: Sequence[np.ndarray], truths: Sequence[int | None], use: list[int], linear: LinearFusion,
              max_rows: int) -> tuple[list[np.ndarray], list[int]]:
    """Per usable list: its top ``max_rows`` candidates by ``linear`` plus the truth (expanded over the whole
    list first, so the relative columns keep their meaning), and the truth's row among them."""
    Xs, ts = [], []
    for i in use:
        E = expand(X_list[i])
        t = int(truths[i])
        if len(E) > max_rows:
            keep = np.argsort(-linear.score(X_list[i]), kind="stable")[:max_rows]
            if t not in keep:
                keep = np.append(keep[:-1], t)
            keep = np.sort(keep)
            t = int(np.flatnonzero(keep == t)[0])
            E = E[keep]
        Xs.append(E)
        ts.append(t)
    return Xs, ts


def fit_listwise_net(X_list: Sequence[np.ndarray], truths: Sequence[int | None], features: Sequence[str], *,
                     hidden: int = 16, members: int = 3, l2: float = 1e-2, max_rows: int = 200,
                     max_iter: int = 300, seed: int = 0, linear: LinearFusion | None = None) -> NetFusion:
    """Fit :class:`NetFusion` on candidate lists (as :func:`.fusion.fit_listwise`); ``linear``: the linear
    fusion of the same lists (fitted here when None) that starts the linear part and picks the fit rows."""
    from scipy.optimize import minimize

    use = usable_lists(X_list, truths)
    if not use:
        raise ValueError("no query has its true structure among two or more candidates: nothing to fit")
    linear = linear or fit_listwise(X_list, truths, features, l2=l2)
    Xs, ts = _fit_rows(X_list, truths, use, linear, max_rows)
    allE = np.vstack(Xs)
    nf = allE.shape[1]
    mean = allE.mean(axis=0)
    scale = allE.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    Z = (allE - mean) / scale
    sizes = np.array([len(x) for x in Xs])
    owner = np.repeat(np.arange(len(Xs)), sizes)
    truth_rows = np.concatenate([[0], np.cumsum(sizes)[:-1]]) + np.array(ts)
    nq = len(Xs)
    # the linear part starts at the linear fusion's weights, mapped to this standardisation (relative columns 0)
    w0 = np.zeros(nf)
    n0 = len(features)
    w0[:n0] = linear.weights / linear.scale * scale[:n0]

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, W, b, v = _unpack(theta, nf, hidden)
        s, A = _forward(Z, w, W, b, v)
        mx = np.full(nq, -np.inf)
        np.maximum.at(mx, owner, s)
        e = np.exp(s - mx[owner])
        den = np.bincount(owner, weights=e, minlength=nq)
        gs = e / den[owner]
        loss = float(np.mean(np.log(den) + mx - s[truth_rows]))
        gs[truth_rows] -= 1.0
        gs /= nq
        dpre = np.outer(gs, v) * (1.0 - A * A)
        grad = _pack(Z.T @ gs + l2 * w, dpre.T @ Z + l2 * W, dpre.sum(axis=0), A.T @ gs + l2 * v)
        loss += 0.5 * l2 * float(w @ w + (W * W).sum() + v @ v)
        return loss, grad

    out = []
    for m in range(members):
        rng = np.random.default_rng(seed + m)
        theta0 = _pack(w0, rng.normal(0.0, 1.0 / np.sqrt(nf), (hidden, nf)), np.zeros(hidden),
                       rng.normal(0.0, 0.1, hidden))
        res = minimize(loss_grad, theta0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
        out.append(tuple(np.asarray(a, np.float64).copy() for a in _unpack(res.x, nf, hidden)))
    return NetFusion(tuple(features), mean, scale, out, l2, hidden, nq)


__all__ = ["KIND", "NetFusion", "expand", "fit_listwise_net"]


# -- one entry point for both kinds ----------------------------------------------------------------------
KINDS = ("linear", "net", "auto")
#: Either fusion: ``score(X)``, ``features``, ``weights`` (linear part), ``to_dict()``.
Fusion = LinearFusion | NetFusion


def fit_fusion(X_list: Sequence[np.ndarray], truths: Sequence[int | None], features: Sequence[str], *,
               kind: str = "net", l2: float = 1e-2, hidden: int = 16, members: int = 3, seed: int = 0
               ) -> Fusion:
    """The fusion of ``kind`` (``linear`` or ``net``; ``auto`` is chosen out of fold by the caller, see
    :func:`better_kind`) fitted on the lists."""
    if kind == "linear":
        return fit_listwise(X_list, truths, features, l2=l2)
    if kind == "net":
        return fit_listwise_net(X_list, truths, features, hidden=hidden, members=members, l2=l2, seed=seed)
    raise ValueError(f"unknown fusion kind {kind!r}; choose from linear, net")


def load_fusion(d: dict[str, Any]) -> Fusion:
    """A fusion from its ``to_dict`` form, either kind."""
    return NetFusion.from_dict(d) if d.get("kind") == KIND else LinearFusion.from_dict(d)


def oof_loss(model: Any, X_list: Sequence[np.ndarray], truths: Sequence[int | None]) -> np.ndarray:
    """Per list, -log softmax probability of the truth under ``model`` (NaN for a list that cannot teach)."""
    from .fusion import softmax

    out = np.full(len(X_list), np.nan)
    for i in usable_lists(X_list, truths):
        out[i] = -np.log(max(softmax(model.score(X_list[i]))[truths[i]], 1e-300))
    return out


def better_kind(losses: dict[str, np.ndarray]) -> str:
    """The kind with the lower mean out-of-fold listwise loss over the lists every kind scored; ``linear``
    unless ``net`` is lower (the simpler model wins ties)."""
    ok = np.logical_and.reduce([np.isfinite(v) for v in losses.values()])
    if not ok.any():
        return "linear"
    means = {k: float(v[ok].mean()) for k, v in losses.items()}
    return "net" if means.get("net", np.inf) < means["linear"] else "linear"


__all__ += ["Fusion", "KINDS", "better_kind", "fit_fusion", "load_fusion", "oof_loss"]
