"""Library search over the inverted fragment index: identity and analogue, one query or a batch.

For a batch of queries, every query peak finds its library peaks with two ``searchsorted`` calls on
the segment's m/z-sorted peaks (and, for analogue search, on its sorted neutral losses); the matched
pairs of all queries are scored at once and summed per (query, library spectrum) with one
``np.unique`` + ``bincount``. No step loops over library spectra; only the top hits of each query are
rescored exactly (cosine and modified cosine as :mod:`speclake.pipelines.features.similarity`, i.e. as
matchms' greedy ``CosineGreedy`` / ``ModifiedCosine``).

* **identity**: library spectra whose precursor m/z is within ``precursor_ppm`` (or
  ``precursor_tolerance_da``) of the query's, ranked by spectral entropy similarity;
* **analogue**: any precursor; ranked by hybrid entropy similarity (Flash entropy search's hybrid
  search): a query peak matches a library peak by m/z, or else by neutral loss (precursor - m/z),
  a library peak or query peak matched directly is not matched again by loss.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Literal, Sequence

import numpy as np

from speclake.pipelines.features import similarity as sim
from speclake.serving.library.clean import FlatSpectra, clean_spectra, entropy_weighted, offsets_of, validate_query
from speclake.serving.library.segment import Segment, xlog2

if TYPE_CHECKING:
    from speclake.serving.library.index import LibraryIndex

#: Search windows are widened by this, then matches decided exactly (as similarity.py and matchms).
_EPS = 1e-9
#: Queries scored together (bounds the memory of one batch step).
CHUNK = 256
#: Cells of the boolean tables of one analogue chunk (queries x library peaks, query peaks x spectra).
MARK_CELLS = 1 << 25
MODES = ("identity", "analogue")


@dataclass(frozen=True)
class Query:
    """One query spectrum (raw peaks; cleaned like the library before searching)."""

    mz: Sequence[float] | np.ndarray
    intensities: Sequence[float] | np.ndarray
    precursor_mz: float
    ionmode: str | None = None


@dataclass(frozen=True)
class Hit:
    """One library hit of one query."""

    query: int                        # index of the query in the batch
    rank: int                         # 1 = best
    spectrum_id: str
    ionmode: str
    score: float                      # ranking score: entropy (identity) or hybrid entropy (analogue)
    entropy: float                    # spectral entropy similarity (fragments matched by m/z only)
    cosine: float                     # greedy cosine (nan when not rescored)
    modified_cosine: float            # greedy modified cosine (nan when not rescored)
    shared_peaks: int                 # fragments matched by m/z
    matched_losses: int               # further fragments matched by neutral loss (analogue only)
    library_precursor_mz: float
    precursor_mz_difference: float    # library - query

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class _Prepared:
    """Cleaned queries of one chunk, flat."""

    spectra: FlatSpectra
    owner: np.ndarray       # query (chunk-local) of each peak
    half: np.ndarray        # entropy-weighted intensity / 2
    xlog: np.ndarray
    tol: np.ndarray         # fragment tolerance per peak
    precursor: np.ndarray   # per query


def _prepare(queries: Sequence[Query], first: int, index: "LibraryIndex", tolerance_da: float,
             tolerance_ppm: float | None) -> _Prepared:
    mzs, its, precs = [], [], []
    for i, q in enumerate(queries):
        mz, it, prec = validate_query(q.mz, q.intensities, q.precursor_mz, what=f"query {first + i}")
        mzs.append(mz)
        its.append(it)
        precs.append(prec)
    counts = np.array([len(m) for m in mzs], dtype=np.int64)
    raw = FlatSpectra(offsets_of(counts), np.concatenate(mzs), np.concatenate(its))
    precursor = np.asarray(precs, dtype=np.float64)
    spectra, _ = clean_spectra(raw, precursor, index.settings)
    half = entropy_weighted(spectra) / 2.0
    if tolerance_ppm is None:
        tol = np.full(len(spectra.mz), tolerance_da)
    else:
        tol = np.minimum(spectra.mz * tolerance_ppm * 1e-6, index.settings.max_tolerance_da)
    return _Prepared(spectra, spectra.owner(), half, xlog2(half), tol, precursor)


def _direct_pairs(seg: Segment, q: _Prepared) -> tuple[np.ndarray, np.ndarray]:
    """(query peak, ion position) of every query peak within tolerance of an indexed peak."""
    mz = q.spectra.mz
    lo = np.searchsorted(seg.ion_mz, mz - q.tol - _EPS, side="left")
    hi = np.searchsorted(seg.ion_mz, mz + q.tol + _EPS, side="right")
    qp, pos = sim.expand_ranges(lo, hi)
    return qp, pos


def _exact(qv: np.ndarray, rv: np.ndarray, tol: np.ndarray) -> np.ndarray:
    return (qv >= rv - tol) & (qv <= rv + tol)


def _identity_pairs(seg: Segment, q: _Prepared, window: tuple[np.ndarray, np.ndarray], bin_width: float,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(query peak, ion position) candidates of an identity search, read from the identity layout: in the
    (at most two) m/z bins of each query peak's window, the peaks of the spectra in its precursor window."""
    a, b = window
    qa, qb = a[q.owner], b[q.owner]
    n = max(len(seg), 1)
    mz = q.spectra.mz
    b_lo = np.floor((mz - q.tol - _EPS) / bin_width).astype(np.int64)
    b_hi = np.floor((mz + q.tol + _EPS) / bin_width).astype(np.int64)
    lo1 = np.searchsorted(seg.id_key, b_lo * n + qa, side="left")
    hi1 = np.searchsorted(seg.id_key, b_lo * n + qb, side="left")
    lo2 = np.searchsorted(seg.id_key, b_hi * n + qa, side="left")
    hi2 = np.where(b_hi != b_lo, np.searchsorted(seg.id_key, b_hi * n + qb, side="left"), lo2)
    qp1, k1 = sim.expand_ranges(lo1, hi1)
    qp2, k2 = sim.expand_ranges(lo2, hi2)
    return np.concatenate([qp1, qp2]), np.asarray(seg.id_ion[np.concatenate([k1, k2])], dtype=np.int64)


def _segment_pairs(seg: Segment, q: _Prepared, mode: str, window: tuple[np.ndarray, np.ndarray] | None,
                   bin_width: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Matched pairs of a chunk in one segment: (query, spectrum, gain, matched by m/z?)."""
    if window is not None:  # identity: library spectra in the query's precursor window only
        qp, pos = _identity_pairs(seg, q, window, bin_width)
    else:
        qp, pos = _direct_pairs(seg, q)
    ok = _exact(q.spectra.mz[qp], seg.ion_mz[pos], q.tol[qp])
    qp, pos = qp[ok], pos[ok]
    spec = np.asarray(seg.ion_spec[pos], dtype=np.int64)
    qown = q.owner[qp]
    gain = xlog2(seg.ion_int[pos] + q.half[qp]) - seg.ion_xlog[pos] - q.xlog[qp]
    direct = np.ones(len(qp), dtype=bool)
    if mode == "identity":
        return qown, spec, gain, direct
    # analogue: neutral losses, each library peak and each query peak used once per spectrum
    loss = q.precursor[q.owner] - q.spectra.mz
    lo = np.searchsorted(seg.nl_mass, loss - q.tol - _EPS, side="left")
    hi = np.searchsorted(seg.nl_mass, loss + q.tol + _EPS, side="right")
    lqp, lpos = sim.expand_ranges(lo, hi)
    ok = _exact(loss[lqp], seg.nl_mass[lpos], q.tol[lqp])
    lqp, lpos = lqp[ok], lpos[ok]
    ion = np.asarray(seg.nl_ion[lpos], dtype=np.int64)
    lspec = np.asarray(seg.ion_spec[ion], dtype=np.int64)
    lqown = q.owner[lqp]
    n_ion, n_spec = len(seg.ion_mz), len(seg)
    mark = np.zeros(len(q.precursor) * n_ion, dtype=bool)      # library peak matched by m/z (per query)
    mark[qown * n_ion + pos] = True
    used = mark[lqown * n_ion + ion]
    mark = np.zeros(len(q.spectra.mz) * n_spec, dtype=bool)    # query peak matched by m/z in that spectrum
    mark[qp * n_spec + spec] = True
    used |= mark[lqp * n_spec + lspec]
    keep = ~used
    lqp, ion, lspec, lqown = lqp[keep], ion[keep], lspec[keep], lqown[keep]
    lgain = xlog2(seg.ion_int[ion] + q.half[lqp]) - seg.ion_xlog[ion] - q.xlog[lqp]
    return (np.concatenate([qown, lqown]), np.concatenate([spec, lspec]), np.concatenate([gain, lgain]),
            np.concatenate([direct, np.zeros(len(lqp), dtype=bool)]))


#: Row stride of the composite (hit, m/z) keys of the rescoring (above any m/z).
_STRIDE = 1.0e5
#: Window widening of the composite keys (their float64 rounding), matches then decided exactly.
_KEY_EPS = 1e-6


def _rescore(q: _Prepared, segs: list[tuple[str, Segment]], bases: np.ndarray, qid: np.ndarray, row: np.ndarray,
             tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact greedy cosine and modified cosine of each (query, library row) hit, all hits at once.

    The same pairs and greedy choice as :func:`similarity.cosine_to_panel` and
    :func:`similarity.modified_cosine_to_panel` (matchms ``CosineGreedy`` / ``ModifiedCosine``, library
    spectrum as reference), on the cleaned peaks: every hit's peaks are laid out under one composite key
    ``hit * stride + m/z``, so each query peak finds its hit's peaks with one ``searchsorted``.
    """
    m = len(qid)
    seg_of = np.searchsorted(bases, row, side="right") - 1
    parts: list[tuple[np.ndarray, ...]] = []
    lib_prec = np.zeros(m)
    for g, (_, seg) in enumerate(segs):
        sel = np.flatnonzero(seg_of == g)
        if not len(sel):
            continue
        local = row[sel] - bases[g]
        lib_prec[sel] = seg.precursor[local]
        sub = seg.spectra.take(local)
        own = sub.owner()
        parts.append((sel[own], np.arange(len(own)) - sub.offsets[own], sub.mz, sub.intensities))
    item, rpeak, lmz, lint = (np.concatenate(x) for x in zip(*parts))
    order = np.lexsort((lmz, item))
    item, rpeak, lmz, lint = item[order], rpeak[order], lmz[order], lint[order]
    key = item * _STRIDE + lmz
    lib_norm = np.sqrt(np.bincount(item, weights=lint * lint, minlength=m))
    # query peaks of every hit
    qcounts = q.spectra.counts[qid]
    qitem = np.repeat(np.arange(m, dtype=np.int64), qcounts)
    qpeak = np.arange(len(qitem)) - np.repeat(np.cumsum(qcounts) - qcounts, qcounts)
    qpos = q.spectra.offsets[qid][qitem] + qpeak
    qmz, qint = q.spectra.mz[qpos], q.spectra.intensities
    qn = np.sqrt(np.bincount(q.owner, weights=q.spectra.intensities ** 2, minlength=len(q.precursor)))[qid]
    shift = lib_prec - q.precursor[qid]

    def pairs(centers: np.ndarray, shifted: bool) -> sim._Pairs:
        base = qitem * _STRIDE + centers
        lo = np.searchsorted(key, base - tolerance - _KEY_EPS, side="left")
        hi = np.searchsorted(key, base + tolerance + _KEY_EPS, side="right")
        qi, lp = sim.expand_ranges(lo, hi)
        ok = (item[lp] == qitem[qi]) & (centers[qi] >= lmz[lp] - tolerance) & (centers[qi] <= lmz[lp] + tolerance)
        if shifted:  # matchms: shifted pairs only where the precursors differ by more than the tolerance
            ok &= np.abs(shift[qitem[qi]]) > tolerance
        qi, lp = qi[ok], lp[ok]
        return sim._Pairs(qitem[qi], rpeak[lp], qpeak[qi], lp, np.full(len(qi), shifted))

    direct = pairs(qmz, False)
    shifted = pairs(qmz + shift[qitem], True)
    both = sim._concat(direct, shifted)
    denom = lib_norm * qn
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = sim._greedy_sum(direct, lint[direct.pos] * qint[direct.qpeak + q.spectra.offsets[qid][direct.ref]], m)
        mcos = sim._greedy_sum(both, lint[both.pos] * qint[both.qpeak + q.spectra.offsets[qid][both.ref]], m)
        return np.where(denom > 0, cos / denom, 0.0), np.where(denom > 0, mcos / denom, 0.0)


def search_batch(index: "LibraryIndex", queries: Iterable[Query | tuple], *, ionmode: str | None = None,
                 mode: Literal["identity", "analogue"] = "identity", tolerance_da: float = 0.02,
                 tolerance_ppm: float | None = None, precursor_ppm: float = 10.0,
                 precursor_tolerance_da: float | None = None, top_k: int = 10, rescore: bool = True,
                 min_score: float = 0.0) -> list[list[Hit]]:
    """Search many queries; returns each query's hits, best first.

    ``queries``: :class:`Query` objects or ``(mz, intensities, precursor_mz[, ionmode])`` tuples; a
    query's own ionmode wins over ``ionmode``; None searches every ion mode of the index.
    Fragment tolerance: ``tolerance_da``, or ``tolerance_ppm`` of each peak's m/z (capped at the index's
    ``max_tolerance_da``). ``rescore``: cosine and modified cosine of the top hits (else nan).
    Raises ValueError naming the query and the problem for bad peaks or settings.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not 0 < tolerance_da <= index.settings.max_tolerance_da:
        raise ValueError(f"tolerance_da must be in (0, {index.settings.max_tolerance_da}] (the index's "
                         f"max_tolerance_da), got {tolerance_da}")
    if tolerance_ppm is not None and not tolerance_ppm > 0:
        raise ValueError(f"tolerance_ppm must be positive, got {tolerance_ppm}")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    qs = [q if isinstance(q, Query) else Query(*q) for q in queries]
    out: list[list[Hit]] = [[] for _ in qs]
    # group queries by ion mode (each searches its mode's segments)
    modes: dict[str | None, list[int]] = {}
    for i, q in enumerate(qs):
        modes.setdefault(q.ionmode or ionmode, []).append(i)
    for mode_name, members in modes.items():
        names = list(index.segments) if mode_name in (None, "unknown") and mode_name not in index.segments \
            else [mode_name]
        segs = [(name, seg) for name in names for seg in index.segments.get(name, [])]
        size = CHUNK
        if mode == "analogue" and segs:  # bounds the per-chunk mark tables of the loss matching
            widest = max(max(s.n_peaks, 32 * len(s)) for _, s in segs)
            size = max(1, min(CHUNK, MARK_CELLS // max(widest, 1)))
        for start in range(0, len(members), size):
            chunk = members[start:start + size]
            _search_chunk(index, [qs[i] for i in chunk], chunk, segs, out, mode=mode, tolerance_da=tolerance_da,
                          tolerance_ppm=tolerance_ppm, precursor_ppm=precursor_ppm,
                          precursor_tolerance_da=precursor_tolerance_da, top_k=top_k, rescore=rescore,
                          min_score=min_score)
    return out


def _search_chunk(index: "LibraryIndex", queries: list[Query], numbers: list[int], segs: list[tuple[str, Segment]],
                  out: list[list[Hit]], *, mode: str, tolerance_da: float, tolerance_ppm: float | None,
                  precursor_ppm: float, precursor_tolerance_da: float | None, top_k: int, rescore: bool,
                  min_score: float) -> None:
    q = _prepare(queries, numbers[0], index, tolerance_da, tolerance_ppm)
    if not segs or not len(q.spectra.mz):
        return
    bases = np.cumsum([0] + [len(s) for _, s in segs])
    n_total = int(bases[-1])
    ptol = np.full(len(queries), precursor_tolerance_da) if precursor_tolerance_da is not None \
        else q.precursor * precursor_ppm * 1e-6
    keys, gains, directs = [], [], []
    for (name, seg), base in zip(segs, bases[:-1]):
        window = None
        if mode == "identity":
            window = (np.searchsorted(seg.precursor, q.precursor - ptol, side="left"),
                      np.searchsorted(seg.precursor, q.precursor + ptol, side="right"))
        qown, spec, gain, direct = _segment_pairs(seg, q, mode, window, index.settings.min_peak_distance_da)
        keys.append(qown * n_total + (int(base) + spec))
        gains.append(gain)
        directs.append(direct)
    key = np.concatenate(keys)
    if not len(key):
        return
    gain, direct = np.concatenate(gains), np.concatenate(directs)
    space = len(queries) * n_total
    if len(key) * 4 > space:
        # dense: one accumulator cell per (query, library spectrum); each query's top k by argpartition,
        # the other columns summed over the pairs of those cells only
        dense = np.bincount(key, weights=gain, minlength=space).reshape(len(queries), n_total)
        kk = min(top_k, n_total)
        cols = np.argpartition(-dense, kk - 1, axis=1)[:, :kk]
        cells = (np.arange(len(queries))[:, None] * n_total + cols).ravel()
        cells = np.sort(cells[dense.ravel()[cells] > 0])
        mark = np.zeros(space, dtype=bool)
        mark[cells] = True
        sel = mark[key]
        key, gain, direct = key[sel], gain[sel], direct[sel]
    uniq, inv = np.unique(key, return_inverse=True)
    score = np.bincount(inv, weights=gain, minlength=len(uniq))
    ent = np.bincount(inv, weights=np.where(direct, gain, 0.0), minlength=len(uniq))
    shared = np.bincount(inv, weights=direct, minlength=len(uniq)).astype(np.int64)
    losses = np.bincount(inv, weights=~direct, minlength=len(uniq)).astype(np.int64)
    qid, row = uniq // n_total, uniq % n_total
    order = np.lexsort((row, -score, qid))
    counts = np.bincount(qid, minlength=len(queries))
    rank = np.arange(len(order)) - (np.cumsum(counts) - counts)[qid[order]]
    keep = order[(rank < top_k) & (score[order] > min_score)]
    if rescore and len(keep):
        cos, mcos = _rescore(q, segs, bases, qid[keep], row[keep], tolerance_da)
    else:
        cos = mcos = np.full(len(keep), math.nan)
    seg_of = np.searchsorted(bases, row[keep], side="right") - 1
    for n, j in enumerate(keep.tolist()):
        local, g = int(qid[j]), int(seg_of[n])
        name, seg = segs[g]
        r = int(row[j] - bases[g])
        lib_prec = float(seg.precursor[r])
        number = numbers[local]
        out[number].append(Hit(
            query=number, rank=len(out[number]) + 1, spectrum_id=str(seg.ids[r]), ionmode=name,
            score=float(min(max(score[j], 0.0), 1.0)), entropy=float(min(max(ent[j], 0.0), 1.0)),
            cosine=float(cos[n]), modified_cosine=float(mcos[n]), shared_peaks=int(shared[j]),
            matched_losses=int(losses[j]), library_precursor_mz=lib_prec,
            precursor_mz_difference=lib_prec - float(q.precursor[local])))


def search(index: "LibraryIndex", mz: Sequence[float] | np.ndarray, intensities: Sequence[float] | np.ndarray,
           precursor_mz: float, ionmode: str | None = None, **kwargs: object) -> list[Hit]:
    """Search one query spectrum; keyword arguments as :func:`search_batch`."""
    return search_batch(index, [Query(mz, intensities, precursor_mz, ionmode)], **kwargs)[0]  # type: ignore[arg-type]
