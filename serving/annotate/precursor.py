"""Precursor hypotheses of a blind scan: candidate adducts per ion mode, their neutral masses, an adduct
prior counted from the lake, and molecular formulas ranked by fragmentation trees.

* :data:`ADDUCTS`: the adducts tried per ion mode (canonical names of
  :func:`~speclake.pipelines.normalize.adduct.parse_adduct`, e.g. ``[M+H-H2O]+`` is ``[M-H2O+H]+``);
* :func:`hypotheses`: (adduct, neutral mass) per adduct of the scan's ion mode (and charge); a
  :class:`~.candidates.CandidateSource` also tries the lake's adducts with at least :data:`MIN_SHARE`
  of their ion mode's spectra (:func:`frequent_adducts`: on MassBank ``[M]+`` of permanently charged
  compounds and ``[M+CH3COO]-``);
* :func:`adduct_counts` / :func:`adduct_priors`: how often each adduct occurs among the lake's spectra
  per ion mode (``SELECT ionmode, adduct, count(*) FROM spectra``), add-one smoothed over
  :data:`ADDUCTS`: the prior of a hypothesis comes from data, never from typed-in numbers;
  :func:`uniform_priors` when the lake has no spectra;
* :func:`rank_formulas`: database-restricted formula ranking (as SIRIUS + CSI:FingerID effectively do):
  only the (formula, adduct) pairs present among a scan's structure candidates get a fragmentation
  tree (:func:`~speclake.pipelines.features.fragtree.compute_tree`), ranked by tree score; trees are
  cached per (scan, formula, adduct) in a :class:`TreeCache`.
"""
from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from typing import Iterable, Mapping, Sequence

from speclake.pipelines.normalize.adduct import Adduct, parse_adduct
from speclake.pipelines.normalize.errors import UnknownAdductError

from .model import Query

log = logging.getLogger(__name__)

#: Adducts tried per ion mode when the scan states none (the usual case), as written by analysts.
ADDUCT_TEXT: Mapping[str, tuple[str, ...]] = {
    "positive": ("[M+H]+", "[M+Na]+", "[M+NH4]+", "[M+H-H2O]+", "[M+K]+"),
    "negative": ("[M-H]-", "[M+Cl]-", "[M+FA-H]-", "[M-H2O-H]-"),
}
#: Extra adducts for a scan whose file states charge 2.
DOUBLY_CHARGED: Mapping[str, tuple[str, ...]] = {"positive": ("[M+2H]2+",), "negative": ("[M-2H]2-",)}
#: The same adducts, canonical names (what ``spectra.adduct`` and ``Candidate.adduct`` hold).
ADDUCTS: Mapping[str, tuple[str, ...]] = {
    mode: tuple(parse_adduct(t, mode).name for t in texts) for mode, texts in ADDUCT_TEXT.items()}
IONMODES = tuple(ADDUCTS)


def _modes(ionmode: str | None) -> tuple[str, ...]:
    """The ion modes a scan may be in: its own, or both when the file does not say."""
    return (ionmode,) if ionmode in ADDUCTS else IONMODES


def adducts_for(ionmode: str | None, charge: int | None = None,
                adducts: Mapping[str, Sequence[str]] | None = None) -> list[Adduct]:
    """Adduct hypotheses of a scan: ``adducts`` (default :data:`ADDUCTS`) of its ion mode (both modes when
    unknown), restricted to ``|charge|`` when the file states a charge (charge 2 tries :data:`DOUBLY_CHARGED`)."""
    table = adducts if adducts is not None else ADDUCTS
    out = []
    for mode in _modes(ionmode):
        names = tuple(table.get(mode, ())) + (DOUBLY_CHARGED[mode] if charge is not None and abs(charge) == 2 else ())
        for name in names:
            add = parse_adduct(name, mode)
            if charge is None or charge == 0 or abs(add.charge) == abs(charge):
                out.append(add)
    return out


def hypotheses(precursor_mz: float, ionmode: str | None, charge: int | None = None, *,
               adducts: Mapping[str, Sequence[str]] | None = None) -> list[tuple[Adduct, float]]:
    """(adduct, neutral monoisotopic mass) per adduct hypothesis (``adducts``: see :func:`adducts_for`);
    [] for a missing or non-positive m/z.

    Neutral masses that are not positive (a small ion under a heavy adduct) are left out.
    """
    if precursor_mz is None or not math.isfinite(float(precursor_mz)) or precursor_mz <= 0:
        return []
    out = []
    for add in adducts_for(ionmode, charge, adducts):
        m = add.neutral_mass(float(precursor_mz))
        if m > 0:
            out.append((add, m))
    return out


def mz_window(add: Adduct, precursor_mz: float, ppm: float) -> tuple[float, float]:
    """Neutral masses whose ion under ``add`` is within ``ppm`` of ``precursor_mz`` (the tolerance is on the
    measured m/z, as instruments state it)."""
    d = float(precursor_mz) * ppm * 1e-6
    return add.neutral_mass(precursor_mz - d), add.neutral_mass(precursor_mz + d)


# -- adduct prior -----------------------------------------------------------------------------------
def adduct_counts(lake: str | os.PathLike[str]) -> dict[str, dict[str, int]]:
    """Spectra per (ion mode, canonical adduct) in the lake's ``spectra`` table (unparsable adducts skipped)."""
    from speclake.lake import sql

    table = sql.query(lake, "SELECT ionmode, adduct, count(*) AS n FROM spectra WHERE adduct IS NOT NULL "
                            "GROUP BY ionmode, adduct")
    rows = zip(*(table.column(c).to_pylist() for c in ("ionmode", "adduct", "n")))
    out: dict[str, dict[str, int]] = {}
    for mode, text, n in rows:
        try:
            name = parse_adduct(text, mode).name
        except (UnknownAdductError, ValueError):
            continue
        by_mode = out.setdefault(str(mode), {})
        by_mode[name] = by_mode.get(name, 0) + int(n)
    return out


def frequent_adducts(counts: Mapping[str, Mapping[str, int]], min_share: float) -> dict[str, tuple[str, ...]]:
    """Per ion mode, lake adducts beyond :data:`ADDUCTS` with at least ``min_share`` of the mode's spectra
    (one molecule, charge 1: e.g. ``[M]+`` of permanently charged compounds, ``[M+CH3COO]-``)."""
    out = {}
    for mode in IONMODES:
        c = counts.get(mode, {})
        total = sum(c.values())
        extra = []
        for name, n in sorted(c.items(), key=lambda kv: -kv[1]):
            add = parse_adduct(name, mode)
            if (total and n / total >= min_share and name not in ADDUCTS[mode] and add.n_molecules == 1
                    and abs(add.charge) == 1 and not add.radical and (add.charge > 0) == (mode == "positive")):
                extra.append(name)
        out[mode] = tuple(extra)
    return out


def priors_from_counts(counts: Mapping[str, Mapping[str, int]], pseudo: float = 1.0,
                       min_share: float | None = None) -> dict[str, dict[str, float]]:
    """P(adduct | ion mode) over :data:`ADDUCTS` (+ :data:`DOUBLY_CHARGED`, + :func:`frequent_adducts` when
    ``min_share`` is set): (count + pseudo) / sum. Its keys are the hypotheses a scan is given."""
    extra = frequent_adducts(counts, min_share) if min_share is not None else {}
    out = {}
    for mode in IONMODES:
        names = ADDUCTS[mode] + extra.get(mode, ()) + DOUBLY_CHARGED[mode]
        c = {n: float(counts.get(mode, {}).get(n, 0)) + pseudo for n in names}
        total = sum(c.values())
        out[mode] = {n: v / total for n, v in c.items()}
    return out


def uniform_priors() -> dict[str, dict[str, float]]:
    """Every adduct of an ion mode equally likely (a lake without spectra)."""
    return priors_from_counts({})


#: Lake adducts with at least this share of their ion mode's spectra are tried too.
MIN_SHARE = 0.01


def adduct_priors(lake: str | os.PathLike[str] | None, min_share: float | None = MIN_SHARE) -> dict[str, dict[str, float]]:
    """Adduct prior per ion mode counted from the lake's spectra (uniform without a lake or spectra), over
    :data:`ADDUCTS`, :data:`DOUBLY_CHARGED` and the lake's adducts with at least ``min_share`` of the mode."""
    if lake is None:
        return uniform_priors()
    counts = adduct_counts(lake)
    if not counts:
        log.info("%s has no spectra with an adduct: uniform adduct prior", lake)
    return priors_from_counts(counts, min_share=min_share)


def active_adducts(priors: Mapping[str, Mapping[str, float]]) -> dict[str, tuple[str, ...]]:
    """The singly charged hypotheses of each ion mode in a prior table (doubly charged: by the scan's charge)."""
    return {mode: tuple(n for n in p if n not in DOUBLY_CHARGED.get(mode, ())) for mode, p in priors.items()}


def adduct_ranks(priors: Mapping[str, Mapping[str, float]]) -> dict[tuple[str, str], int]:
    """(ion mode, adduct) -> 1-based rank by prior within the ion mode (ties by :data:`ADDUCTS` order)."""
    out = {}
    for mode, p in priors.items():
        order = sorted(p, key=lambda n: -p[n])
        out.update({(mode, n): i + 1 for i, n in enumerate(order)})
    return out


# -- formulas ranked by fragmentation trees ---------------------------------------------------------
class TreeCache:
    """LRU of tree scores per (query id, precursor m/z, formula, adduct): a scan ranked again (another
    ranker, a resumed run) does not recompute its trees."""

    def __init__(self, maxsize: int = 200_000) -> None:
        self.maxsize = maxsize
        self._d: OrderedDict[tuple, float | None] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: tuple) -> tuple[bool, float | None]:
        if key in self._d:
            self._d.move_to_end(key)
            self.hits += 1
            return True, self._d[key]
        self.misses += 1
        return False, None

    def put(self, key: tuple, value: float | None) -> None:
        self._d[key] = value
        if len(self._d) > self.maxsize:
            self._d.popitem(last=False)


def tree_score(query: Query, formula: str, adduct: str, cache: TreeCache | None = None,
               ppm: float | None = None) -> float | None:
    """Fragmentation-tree score of (formula, adduct) for the scan; None when no tree can be made
    (too few peaks, precursor m/z inconsistent with the formula, unsupported element)."""
    from speclake.pipelines.features.fragtree import Skipped, compute_tree

    key = (query.query_id, query.source_file, round(float(query.precursor_mz), 6), formula, adduct)
    if cache is not None:
        found, value = cache.get(key)
        if found:
            return value
    tree = compute_tree(formula, adduct, query.mz, query.intensities, precursor_mz=float(query.precursor_mz),
                        tolerance=ppm)
    value = None if isinstance(tree, Skipped) else float(tree.score)
    if cache is not None:
        cache.put(key, value)
    return value


def rank_formulas(query: Query, formulas_by_adduct: Mapping[str, Iterable[str]], *, cache: TreeCache | None = None,
                  ppm: float | None = None) -> dict[tuple[str, str], tuple[int | None, float | None]]:
    """(formula, adduct) -> (rank, tree score) for the pairs present among a scan's candidates.

    Rank 1 is the best tree score; pairs without a tree (None score) get rank None. Ties share the
    better rank. ``ppm``: fragment tolerance of the trees (None: the Q-TOF default of the trees).
    """
    scores = {(f, a): tree_score(query, f, a, cache, ppm)
              for a, forms in formulas_by_adduct.items() for f in dict.fromkeys(forms)}
    treed = [s for s in scores.values() if s is not None]
    return {pair: (None if s is None else 1 + sum(1 for t in treed if t > s), s) for pair, s in scores.items()}
