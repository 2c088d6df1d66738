"""MetFrag-style in-silico fragmentation of candidate structures, scored against a query's MS/MS peaks.

**Fragmentation** (:mod:`.fragmentation`, :func:`~.fragmentation.fragment_candidate`): MetFrag's
combinatorial bond disconnection to ``max_depth`` (default 2); each fragment's cost is the bond
dissociation energy of the bonds that separate it from the rest.

**Matching** (:func:`score_spectrum`): a fragment F explains a peak when one of its ions lies within
``max(ppm * m/z, abs_tol)``: F + proton (``[F+H]+``) or F - electron (``[F]+``) in positive mode,
F - proton or F + electron in negative mode, each shifted by k hydrogens (rearrangements), |k| <=
``max_h_shift`` (2) and, as in MetFrag, |k| <= the fragment's depth. The whole molecule carries the
candidate's adduct (``[M+Na]+`` ...) and only explains the precursor, which is left out of every score.

**Score** (MetFrag 2.2's ``NewFragmenterScore``, normalised): each peak p weighs
``w_p = (m/z_p / precursor m/z)^1.84 * I_p^0.59``; a matched peak contributes
``w_p / (1 + E / 100)^0.47`` with ``E`` = bond dissociation energy of its cheapest fragment plus 100 per
shifted hydrogen (MetFrag's hydrogen penalty); the score is the sum over peaks divided by the sum of
every peak's ``w_p``, in [0, 1]. Beside it: the fraction of (non-precursor) intensity explained, the
matched peak count, and, given the formulas a fragmentation tree assigned to the peaks
(:mod:`speclake.pipelines.features.fragtree`), the fraction of those formulas one of the candidate's
fragment ions reproduces exactly; such a match counts ``1 + tree_bonus`` times.

Unit-resolution spectra are not scored (reason given). Fragment sets are cached per SMILES (LRU), each
with its ion table per polarity sorted by m/z, so scoring one spectrum is two ``searchsorted`` and one
``minimum.reduceat`` (measured on 2 busy cores: 100 candidates x 1 spectrum 0.18 s CPU cold, 0.011 s
cached; ``benchmarks/fragmenter_check.py``).

**Evidence** for the ranker: :func:`fragmenter_features` gives the columns :data:`FRAGMENTER_FEATURES`
per candidate (score, explained intensity, matched peaks, tree formulas reproduced), e.g.
``Fragmenter().features(query, cands, trees=query_trees(query, cands))`` (hold one :class:`Fragmenter`:
it owns the fragment cache); :meth:`Fragmenter.scores` the score alone; :meth:`Fragmenter.details` the
:class:`FragScore` objects with the matched peaks (module functions of the same names for one-offs);
:class:`FragmenterScorer` is the score as a ``models=[...]`` column of :class:`.evidence.EvidenceBuilder`.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from speclake.pipelines.features.formula import ELEMENT_INDEX, N_ELEMENTS, VALENCE, format_formula
from speclake.pipelines.normalize import peaks as pk
from speclake.pipelines.normalize.masses import ELECTRON_MASS, ELEMENT_MASSES

from .fragmentation import DEFAULT_SETTINGS, FragmentCache, FragmenterSettings, FragmentSet, fragment_candidate
from .model import Candidate, Query

log = logging.getLogger(__name__)

H_MASS = ELEMENT_MASSES["H"]
PROTON_MASS = H_MASS - ELECTRON_MASS
_H = ELEMENT_INDEX["H"]


@dataclass(frozen=True)
class PeakMatch:
    """One explained peak: its m/z and relative intensity, the fragment ion (Hill formula with charge),
    the fragment's row, hydrogen shift, broken bonds, energy, and whether the ion is the tree's formula."""

    mz: float
    intensity: float
    ion_formula: str
    fragment: int
    h_shift: int
    n_broken: int
    energy: float
    tree_formula: bool
    contribution: float


@dataclass(frozen=True)
class FragScore:
    """A candidate's fragmentation evidence for one spectrum (all 0 with a ``reason`` when unscorable)."""

    score: float                      # normalised MetFrag-style score in [0, 1]
    explained_intensity: float        # matched share of the non-precursor intensity
    n_matched: int
    n_peaks: int                      # non-precursor peaks scored
    tree_agreement: float | None      # share of the tree's fragment formulas reproduced (None: no tree)
    matches: tuple[PeakMatch, ...] = ()
    reason: str | None = None
    precursor_ppm: float | None = None  # precursor m/z vs the molecule in the adduct ([M+Na]+ ...), ppm

    @classmethod
    def zero(cls, reason: str, n_peaks: int = 0) -> "FragScore":
        return cls(0.0, 0.0, 0, n_peaks, None, (), reason)


# --------------------------------------------------------------------------- matching and scoring

def _carriers(adduct: str) -> tuple[int, tuple[tuple[float, int], ...], float]:
    """(charge sign, ((mass added to a neutral fragment, hydrogens added), ...), the adduct's mass shift)
    of a singly charged adduct; fragments carry a proton or lose/gain an electron whatever the adduct."""
    from speclake.pipelines.features.formula import singly_charged_adduct

    add = singly_charged_adduct(adduct)
    if add.charge > 0:
        return 1, ((PROTON_MASS, 1), (-ELECTRON_MASS, 0)), add.mass_shift
    return -1, ((-PROTON_MASS, -1), (ELECTRON_MASS, 0)), add.mass_shift


@dataclass(frozen=True)
class _Ions:
    """Every fragment ion of one polarity, sorted by m/z: fragment row, hydrogens added (carrier + shift),
    shift k, and energy E (bonds + shifted hydrogens + radical penalty); ``energy`` ends with an inf sentinel."""

    mz: np.ndarray
    row: np.ndarray
    h_added: np.ndarray
    shift: np.ndarray
    energy: np.ndarray


def _ion_table(fragments: FragmentSet, carriers: tuple[tuple[float, int], ...],
               settings: FragmenterSettings) -> _Ions:
    """The fragment ions of ``fragments`` under ``carriers`` (cached on the fragment set per settings)."""
    key = (carriers, settings.max_h_shift, settings.h_shift_by_depth, settings.h_shift_energy,
           settings.radical_energy)
    hit = fragments.ions.get(key)
    if hit is not None:
        return hit
    frag_h = fragments.counts[:, _H]
    parity = (fragments.counts @ (VALENCE[:N_ELEMENTS] - 2)) % 2     # ion even-electron iff parity + H added odd
    parts = []
    for carrier_mass, carrier_h in carriers:
        for k in range(-settings.max_h_shift, settings.max_h_shift + 1):
            ok = (frag_h + carrier_h + k >= 0) & (fragments.depth > 0)
            if settings.h_shift_by_depth:
                ok &= fragments.depth >= abs(k)
            rows = np.flatnonzero(ok)
            energy = fragments.energy[rows] + abs(k) * settings.h_shift_energy
            if settings.radical_energy:
                energy = energy + np.where((parity[rows] + carrier_h + k) % 2 == 1, 0.0, settings.radical_energy)
            parts.append((fragments.masses[rows] + carrier_mass + k * H_MASS, rows,
                          np.full(len(rows), carrier_h + k), np.full(len(rows), k), energy))
    mz, row, h_added, shift, energy = (np.concatenate(x) for x in zip(*parts))
    order = np.argsort(mz, kind="stable")
    table = _Ions(mz[order], row[order], h_added[order].astype(np.int32), shift[order].astype(np.int32),
                  np.append(energy[order], np.inf))
    fragments.ions[key] = table
    return table


def _tree_lookup(tree_formulas: Mapping[float, str] | None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sorted m/z of the tree's peaks and their ion formula counts (neutral atoms, charge dropped)."""
    from speclake.pipelines.features.formula import parse_formula

    items = []
    for mz, formula in (tree_formulas or {}).items():
        try:
            items.append((float(mz), parse_formula(formula)[0]))
        except (TypeError, ValueError) as err:     # an element outside ELEMENTS, a garbled formula: no check
            log.debug("tree formula %r at m/z %r not used: %s", formula, mz, err)
    items.sort(key=lambda x: x[0])
    return np.array([m for m, _ in items]), [c for _, c in items]


def _peak_trees(mz: np.ndarray, tol: np.ndarray, tree_formulas: Mapping[float, str] | None) -> list[np.ndarray | None]:
    """The tree's ion formula counts of each peak (None: the tree did not explain it)."""
    tree_mz, tree_counts = _tree_lookup(tree_formulas)
    out: list[np.ndarray | None] = [None] * len(mz)
    if len(tree_mz):
        for p in range(len(mz)):
            j = int(np.argmin(np.abs(tree_mz - mz[p])))
            if abs(tree_mz[j] - mz[p]) <= tol[p]:
                out[p] = tree_counts[j]
    return out


def score_spectrum(fragments: FragmentSet, mzs: Sequence[float], intensities: Sequence[float],
                   precursor_mz: float, adduct: str, *, ppm: float | None = None, abs_tol: float | None = None,
                   tree_formulas: Mapping[float, str] | None = None,
                   settings: FragmenterSettings = DEFAULT_SETTINGS, details: bool = True) -> FragScore:
    """MetFrag-style score of one structure's fragments against one spectrum (see the module doc).

    ``tree_formulas``: peak m/z -> ion formula the query's fragmentation tree gave it (``C7H7O+``);
    ``details``: fill :attr:`FragScore.matches` (off: the figures only, faster).
    Never raises for bad input: an unscorable case gives :meth:`FragScore.zero` with the reason.
    """
    ppm = settings.ppm if ppm is None else ppm
    abs_tol = settings.abs_tol if abs_tol is None else abs_tol
    if fragments.error:
        return FragScore.zero(fragments.error)
    try:
        sign, carriers, adduct_shift = _carriers(adduct)
    except ValueError as err:
        return FragScore.zero(f"adduct {adduct!r}: {err}")
    try:
        mz = np.asarray(mzs, np.float64).ravel()
        inten = np.asarray(intensities, np.float64).ravel()
    except (TypeError, ValueError) as err:
        return FragScore.zero(f"peaks are not numeric: {err}")
    if mz.shape != inten.shape:
        return FragScore.zero(f"{len(mz)} m/z values but {len(inten)} intensities")
    try:
        prec_ok = math.isfinite(float(precursor_mz)) and float(precursor_mz) > 0
    except (TypeError, ValueError):
        prec_ok = False
    if not prec_ok:
        return FragScore.zero(f"invalid precursor m/z {precursor_mz!r}")
    precursor_mz = float(precursor_mz)
    theory = fragments.mass + adduct_shift      # singly charged monomer: m/z of the molecule's ion
    ok = np.isfinite(mz) & np.isfinite(inten) & (inten > 0) & (mz > 0)
    prec_tol = max(precursor_mz * ppm * 1e-6, abs_tol)
    ok &= mz < precursor_mz - prec_tol           # the precursor (and anything above) is not a fragment
    mz, inten = mz[ok], inten[ok]
    if len(mz) == 0:
        return FragScore.zero("no fragment peaks below the precursor m/z")
    if pk.is_unit_resolution(mz, 1):
        return FragScore.zero("unit-resolution peaks (at most 1 decimal): fragments are not matched at this "
                              "tolerance", len(mz))
    if len(mz) > settings.max_peaks:
        top = np.argsort(-inten, kind="stable")[: settings.max_peaks]
        mz, inten = mz[top], inten[top]
    order = np.argsort(mz, kind="stable")
    mz, inten = mz[order], inten[order]
    rel = inten / inten.max()
    weight = (mz / precursor_mz) ** settings.mz_exponent * rel ** settings.intensity_exponent
    tol = np.maximum(mz * ppm * 1e-6, abs_tol)
    ions = _ion_table(fragments, carriers, settings)
    start = np.searchsorted(ions.mz, mz - tol, "left")
    stop = np.searchsorted(ions.mz, mz + tol, "right")
    hit = np.flatnonzero(stop > start)
    gamma, scale = settings.energy_exponent, settings.energy_scale
    best = np.zeros(len(mz))
    if len(hit):   # cheapest ion per peak: one reduceat over the (start, stop) pairs of the sorted ion table
        bounds = np.column_stack([start[hit], stop[hit]]).ravel()
        e_min = np.minimum.reduceat(ions.energy, bounds)[::2]
        best[hit] = weight[hit] / (1.0 + e_min / scale) ** gamma
    peak_tree = _peak_trees(mz, tol, tree_formulas)
    n_tree = sum(t is not None for t in peak_tree)
    tree_hit = np.zeros(len(mz), bool)
    tree_best = np.zeros(len(mz))
    for p in hit:
        if peak_tree[p] is None:
            continue
        sl = slice(start[p], stop[p])
        ion = fragments.counts[ions.row[sl]].copy()
        ion[:, _H] += ions.h_added[sl]
        same = (ion == peak_tree[p]).all(axis=1)
        if same.any():
            tree_hit[p] = True
            e = ions.energy[sl][same].min()
            tree_best[p] = (1.0 + settings.tree_bonus) * weight[p] / (1.0 + e / scale) ** gamma
    use_tree = tree_best > best
    best = np.maximum(best, tree_best)
    matched = best > 0
    matches: list[PeakMatch] = []
    if details:
        for p in np.flatnonzero(matched):
            sl = np.arange(start[p], stop[p])
            if use_tree[p]:
                ion = fragments.counts[ions.row[sl]].copy()
                ion[:, _H] += ions.h_added[sl]
                sl = sl[(ion == peak_tree[p]).all(axis=1)]
            i = int(sl[np.argmin(ions.energy[sl])])
            row = int(ions.row[i])
            ion = fragments.counts[row].copy()
            ion[_H] += ions.h_added[i]
            in_tree = peak_tree[p] is not None and bool((ion == peak_tree[p]).all())
            matches.append(PeakMatch(float(mz[p]), float(rel[p]), format_formula(ion, sign), row, int(ions.shift[i]),
                                     int(fragments.n_broken[row]), float(ions.energy[i]), in_tree, float(best[p])))
    norm = (1.0 + settings.tree_bonus) if n_tree else 1.0
    return FragScore(
        score=float(best.sum() / (norm * weight.sum())),
        explained_intensity=float(inten[matched].sum() / inten.sum()),
        n_matched=int(matched.sum()),
        n_peaks=len(mz),
        tree_agreement=float(tree_hit.sum() / n_tree) if n_tree else None,
        matches=tuple(matches),
        precursor_ppm=float((precursor_mz - theory) / theory * 1e6),
    )


# --------------------------------------------------------------------------- evidence columns

#: Evidence columns of :func:`fragmenter_features`, one row per candidate.
FRAGMENTER_FEATURES: tuple[str, ...] = ("frag_score", "frag_explained", "frag_matched", "frag_tree")


def tree_formulas_of(tree: Any) -> dict[float, str]:
    """Peak m/z -> ion formula of a :class:`~speclake.pipelines.features.fragtree.FragTree`'s fragment nodes
    (the precursor node left out)."""
    return {float(n.mz): n.formula for n in tree.nodes[1:]}


def query_trees(query: Query, candidates: Sequence[Candidate], ppm: float | None = None) -> dict[tuple[str, str], dict]:
    """(formula, adduct) -> tree formulas (:func:`tree_formulas_of`) of each distinct pair among ``candidates``
    ({} where no tree can be made)."""
    from speclake.pipelines.features.fragtree import Skipped, compute_tree

    out: dict[tuple[str, str], dict] = {}
    for c in candidates:
        key = (c.formula, c.adduct)
        if key not in out:
            tree = compute_tree(c.formula, c.adduct, query.mz, query.intensities,
                                precursor_mz=float(query.precursor_mz), tolerance=ppm)
            out[key] = {} if isinstance(tree, Skipped) else tree_formulas_of(tree)
    return out


class Fragmenter:
    """Scores candidate lists with one settings object and one fragment cache (hold one per annotator)."""

    def __init__(self, settings: FragmenterSettings = DEFAULT_SETTINGS, cache_size: int = 20_000) -> None:
        self.settings = settings
        self.cache = FragmentCache(cache_size)

    def fragments(self, smiles: str) -> FragmentSet:
        """The cached fragment set of one structure under this fragmenter's settings."""
        st = self.settings
        return fragment_candidate(smiles, max_depth=st.max_depth, max_fragments=st.max_fragments,
                                  max_heavy_atoms=st.max_heavy_atoms, cache=self.cache)

    def details(self, query: Query, candidates: Sequence[Candidate], *,
                trees: Mapping[tuple[str, str], Mapping[float, str]] | None = None,
                details: bool = True) -> list[FragScore]:
        """:class:`FragScore` of every candidate against the query (its own adduct hypothesis each);
        ``trees``: (formula, adduct) -> tree formulas (:func:`query_trees`), None for no tree evidence;
        ``details``: with the matched peaks (:attr:`FragScore.matches`)."""
        return [score_spectrum(self.fragments(c.smiles), query.mz, query.intensities, float(query.precursor_mz),
                               c.adduct, tree_formulas=(trees or {}).get((c.formula, c.adduct)) or None,
                               settings=self.settings, details=details) for c in candidates]

    def features(self, query: Query, candidates: Sequence[Candidate], *,
                 trees: Mapping[tuple[str, str], Mapping[float, str]] | None = None) -> np.ndarray:
        """(len(candidates), len(:data:`FRAGMENTER_FEATURES`)) evidence: score, explained intensity, matched
        peaks, tree formulas reproduced (0 without a tree)."""
        X = np.zeros((len(candidates), len(FRAGMENTER_FEATURES)))
        for i, s in enumerate(self.details(query, candidates, trees=trees, details=False)):
            X[i] = (s.score, s.explained_intensity, s.n_matched, s.tree_agreement or 0.0)
        return X

    def scores(self, query: Query, candidates: Sequence[Candidate], *,
               trees: Mapping[tuple[str, str], Mapping[float, str]] | None = None) -> np.ndarray:
        """One MetFrag-style score per candidate (0 for a structure that cannot be fragmented)."""
        return self.features(query, candidates, trees=trees)[:, 0]


def fragmenter_details(query: Query, candidates: Sequence[Candidate], *, fragmenter: Fragmenter | None = None,
                       trees: Mapping[tuple[str, str], Mapping[float, str]] | None = None,
                       details: bool = True) -> list[FragScore]:
    """:meth:`Fragmenter.details` (a fresh default :class:`Fragmenter` when none is given)."""
    return (fragmenter or Fragmenter()).details(query, candidates, trees=trees, details=details)


def fragmenter_features(query: Query, candidates: Sequence[Candidate], *, fragmenter: Fragmenter | None = None,
                        trees: Mapping[tuple[str, str], Mapping[float, str]] | None = None) -> np.ndarray:
    """:meth:`Fragmenter.features` (a fresh default :class:`Fragmenter` when none is given)."""
    return (fragmenter or Fragmenter()).features(query, candidates, trees=trees)


def fragmenter_scores(query: Query, candidates: Sequence[Candidate], *, fragmenter: Fragmenter | None = None,
                      trees: Mapping[tuple[str, str], Mapping[float, str]] | None = None) -> np.ndarray:
    """:meth:`Fragmenter.scores` (a fresh default :class:`Fragmenter` when none is given)."""
    return (fragmenter or Fragmenter()).scores(query, candidates, trees=trees)


class FragmenterScorer:
    """The fragmenter as one evidence column of :class:`.evidence.EvidenceBuilder` (``models=[...]``: the
    ``feature`` name and ``scores(queries, candidates)`` of :class:`.evidence.ModelScorer`); with
    ``use_trees`` each query's candidate formulas get fragmentation trees (:func:`query_trees`) so matches
    reproducing the tree's formulas count more."""

    feature = "fragmenter"

    def __init__(self, fragmenter: Fragmenter | None = None, *, use_trees: bool = False) -> None:
        self.fragmenter = fragmenter or Fragmenter()
        self.use_trees = use_trees

    def scores(self, queries: Sequence[Query], candidates: Sequence[Sequence[Candidate]]) -> list[np.ndarray]:
        """One MetFrag-style score per candidate of every query."""
        return [self.fragmenter.scores(q, cands, trees=query_trees(q, cands) if self.use_trees else None)
                for q, cands in zip(queries, candidates)]
