"""MetFrag-style in-silico fragmentation of candidate structures, scored against a query's MS/MS peaks.

**Fragmentation** (:func:`fragment_candidate`): combinatorial bond disconnection of the heavy-atom graph
(RDKit), as MetFrag does (Wolf et al. 2010, *BMC Bioinformatics* 11:148; Ruttkies et al. 2016, *J.
Cheminform.* 8:3). One *cleavage* is either one non-ring single bond (a bridge), or two bonds of one
ring (the SSSR ring, aromatic bonds included) whose removal splits the molecule; cleavages are applied
to fragments recursively up to ``max_depth`` (default 2). A ring pair is applied only to a fragment that
still holds the whole ring, and each cleavage's two sides are precomputed on the whole molecule, so every
piece is connected and splitting is two bit operations per cut. Fragments are deduplicated by atom set
(the smallest depth kept). A fragment keeps the hydrogens its atoms carry in the molecule, so its
neutral mass is that of the (radical) piece; its *cost* is the sum of the bond dissociation energies
of the bonds that separate it from the rest (:data:`BOND_ENERGIES`, kJ/mol, textbook mean bond
enthalpies, aromatic bonds between single and double, as MetFrag's table).

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
from collections import OrderedDict
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from speclake.pipelines.features.formula import (ELEMENT_INDEX, ELEMENTS, MONO_MASS, N_ELEMENTS, VALENCE,
                                                 format_formula)
from speclake.pipelines.normalize import peaks as pk
from speclake.pipelines.normalize.masses import ELECTRON_MASS, ELEMENT_MASSES

from .model import Candidate, Query

log = logging.getLogger(__name__)

H_MASS = ELEMENT_MASSES["H"]
PROTON_MASS = H_MASS - ELECTRON_MASS
_H = ELEMENT_INDEX["H"]

#: Mean bond dissociation energies (kJ/mol) by (element, element, order); order 1.5 = aromatic.
#: Textbook mean bond enthalpies (the values MetFrag's ``BondEnergies`` lists); aromatic bonds take the
#: mean of the single and double bond. Unknown pairs: :data:`DEFAULT_BOND_ENERGY`.
BOND_ENERGIES: Mapping[tuple[str, str, float], float] = MappingProxyType({
    ("C", "C", 1.0): 348.0, ("C", "C", 2.0): 612.0, ("C", "C", 3.0): 837.0,
    ("C", "N", 1.0): 305.0, ("C", "N", 2.0): 613.0, ("C", "N", 3.0): 890.0,
    ("C", "O", 1.0): 360.0, ("C", "O", 2.0): 743.0,
    ("C", "S", 1.0): 272.0, ("C", "S", 2.0): 573.0,
    ("C", "F", 1.0): 484.0, ("C", "Cl", 1.0): 338.0, ("C", "Br", 1.0): 276.0, ("C", "I", 1.0): 238.0,
    ("C", "P", 1.0): 264.0, ("C", "Si", 1.0): 318.0, ("C", "B", 1.0): 356.0, ("C", "Se", 1.0): 243.0,
    ("N", "N", 1.0): 163.0, ("N", "N", 2.0): 409.0, ("N", "N", 3.0): 944.0,
    ("N", "O", 1.0): 222.0, ("N", "O", 2.0): 607.0, ("N", "S", 1.0): 250.0, ("N", "F", 1.0): 272.0,
    ("O", "O", 1.0): 146.0, ("O", "P", 1.0): 335.0, ("O", "P", 2.0): 544.0, ("O", "S", 1.0): 265.0,
    ("O", "S", 2.0): 522.0, ("O", "Si", 1.0): 452.0, ("O", "B", 1.0): 536.0,
    ("P", "S", 1.0): 230.0, ("P", "S", 2.0): 335.0, ("P", "F", 1.0): 490.0, ("P", "Cl", 1.0): 326.0,
    ("S", "S", 1.0): 226.0, ("S", "Cl", 1.0): 255.0, ("S", "F", 1.0): 226.0,
})
DEFAULT_BOND_ENERGY = 350.0
_BDE: Mapping[tuple[str, str, float], float] = MappingProxyType(
    {(*sorted((a, b)), order): v for (a, b, order), v in BOND_ENERGIES.items()})


def bond_energy(a: str, b: str, order: float) -> float:
    """Dissociation energy (kJ/mol) of an ``a``-``b`` bond (either atom order) of ``order`` (1, 1.5
    aromatic, 2, 3); :data:`DEFAULT_BOND_ENERGY` for a pair the table lacks."""
    x, y = sorted((a, b))
    if order == 1.5:
        single = _BDE.get((x, y, 1.0), DEFAULT_BOND_ENERGY)
        return 0.5 * (single + _BDE.get((x, y, 2.0), single))
    return _BDE.get((x, y, order), DEFAULT_BOND_ENERGY)


class FragmenterSettings(BaseModel):
    """Fragmentation, matching and scoring settings (defaults: MetFrag 2.2's where MetFrag has one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_depth: int = 2                 # cleavages applied in sequence
    max_fragments: int = 20_000        # stop expanding a structure beyond this many fragments
    max_heavy_atoms: int = 120         # larger structures are scored on depth 1 only
    max_h_shift: int = 2               # hydrogen rearrangements: fragment ion +/- k H, |k| <= this
    h_shift_by_depth: bool = True      # and |k| <= the fragment's depth (MetFrag: shifts <= tree depth)
    ppm: float = 10.0                  # fragment m/z tolerance: max(ppm * m/z, abs_tol)
    abs_tol: float = 0.005
    max_peaks: int = 100               # most intense peaks scored
    mz_exponent: float = 1.84          # MetFrag 2.2 peak weight (m/z / precursor m/z)^a ...
    intensity_exponent: float = 0.59   # ... * relative intensity^b
    energy_exponent: float = 0.47      # contribution / (1 + E / energy_scale)^c
    energy_scale: float = 100.0        # kJ/mol; E includes h_shift_energy per shifted hydrogen
    h_shift_energy: float = 100.0      # MetFrag's hydrogen penalty
    tree_bonus: float = 1.0            # a match reproducing the tree's formula counts 1 + tree_bonus
    radical_energy: float = 0.0        # added to E of an odd-electron fragment ion (RDBE integer)


DEFAULT_SETTINGS = FragmenterSettings()


@dataclass(frozen=True)
class FragmentSet:
    """A structure's fragments, sorted by neutral mass (row i of every array is fragment i).

    ``counts``: neutral formula per fragment (columns :data:`~speclake.pipelines.features.formula.ELEMENTS`,
    hydrogens as attached in the molecule); ``energy``: bond dissociation energy (kJ/mol) of the bonds
    separating the fragment from the rest; ``n_broken``: their number; ``depth``: cleavages to reach it
    (0: the whole molecule); ``atoms``: heavy-atom bit masks (bit i = RDKit atom i). ``error`` says why a
    structure has no fragments (unparsable SMILES, unsupported element); it never raises.
    """

    smiles: str
    formula: str
    mass: float                       # neutral monoisotopic mass of the molecule
    counts: np.ndarray                # (n, N_ELEMENTS) int32
    masses: np.ndarray                # (n,) float64, ascending
    energy: np.ndarray                # (n,) float64
    n_broken: np.ndarray              # (n,) int16
    depth: np.ndarray                 # (n,) int8
    atoms: tuple[int, ...] = field(repr=False)
    error: str | None = None
    ions: dict = field(default_factory=dict, repr=False, compare=False)   # ion tables per polarity/settings

    def __len__(self) -> int:
        return len(self.masses)

    def fragment_formula(self, i: int) -> str:
        """Neutral Hill formula of fragment ``i``."""
        return format_formula(self.counts[i])

    @classmethod
    def failed(cls, smiles: str, reason: str) -> "FragmentSet":
        """An empty set that says why ``smiles`` was not fragmented."""
        return cls(smiles, "", math.nan, np.zeros((0, N_ELEMENTS), np.int32), np.zeros(0), np.zeros(0),
                   np.zeros(0, np.int16), np.zeros(0, np.int8), (), reason)


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


# --------------------------------------------------------------------------- fragmentation

@dataclass
class _Graph:
    """Heavy-atom graph of one molecule laid out for bit-mask cleavage."""

    n: int
    atom_counts: np.ndarray            # (n, N_ELEMENTS): each heavy atom plus its hydrogens
    bond_atoms: np.ndarray             # (m, 2)
    bond_energy: np.ndarray            # (m,)
    cuts: list[tuple[int, int]]        # (atoms a fragment must hold for the cut to apply, one side's atoms)


def _molecule(smiles_or_mol: Any) -> tuple[Any, str] | str:
    """(RDKit Mol, canonical SMILES) or the reason it cannot be fragmented."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    if isinstance(smiles_or_mol, str):
        mol = Chem.MolFromSmiles(smiles_or_mol) if smiles_or_mol.strip() else None
        if mol is None:
            return f"unparsable SMILES {smiles_or_mol!r}"
    elif smiles_or_mol is not None and hasattr(smiles_or_mol, "GetAtoms"):
        try:   # explicit hydrogens are not cleavable atoms: onto their heavy atoms
            mol = Chem.RemoveHs(smiles_or_mol)
        except Exception as err:  # noqa: BLE001 - RDKit raises several sanitization errors
            return f"RDKit molecule not usable: {err}"
    else:
        return f"not a SMILES string or RDKit molecule: {type(smiles_or_mol).__name__}"
    if len(Chem.GetMolFrags(mol)) != 1:
        return "disconnected structure (salt or mixture): fragment the parent component"
    return mol, Chem.MolToSmiles(mol)


def _component(start: int, allowed: int, adj: list[int]) -> int:
    """Bit mask of the atoms reachable from atom ``start`` inside ``allowed`` (neighbour masks ``adj``)."""
    comp = frontier = 1 << start
    while frontier:
        nxt = 0
        while frontier:
            low = frontier & -frontier
            nxt |= adj[low.bit_length() - 1]
            frontier ^= low
        nxt &= allowed & ~comp
        comp |= nxt
        frontier = nxt
    return comp


def _graph(mol: Any) -> _Graph | str:
    """The cleavable graph of ``mol``: atom formulas, bond energies and the molecule-level cuts."""
    n = mol.GetNumAtoms()
    counts = np.zeros((n, N_ELEMENTS), np.int32)
    for a in mol.GetAtoms():
        sym = a.GetSymbol()
        idx = ELEMENT_INDEX.get(sym)
        if idx is None:
            return f"unsupported element {sym} (supported: {', '.join(ELEMENTS)})"
        counts[a.GetIdx(), idx] += 1
        counts[a.GetIdx(), _H] += a.GetTotalNumHs()
    bonds = list(mol.GetBonds())
    m = len(bonds)
    bond_atoms = np.array([[b.GetBeginAtomIdx(), b.GetEndAtomIdx()] for b in bonds], np.int64).reshape(m, 2)
    energy = np.array([bond_energy(b.GetBeginAtom().GetSymbol(), b.GetEndAtom().GetSymbol(),
                                   1.5 if b.GetIsAromatic() else float(b.GetBondTypeAsDouble())) for b in bonds])
    adj = [0] * n
    for a, b in bond_atoms.tolist():
        adj[a] |= 1 << b
        adj[b] |= 1 << a
    full = (1 << n) - 1
    cuts: list[tuple[int, int]] = []
    for b in bonds:
        if not b.IsInRing() and b.GetBondTypeAsDouble() == 1.0:
            i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
            adj_i = adj[i] & ~(1 << j)
            side = _component(i, full & ~(1 << j), adj) if adj_i else 1 << i
            cuts.append(((1 << i) | (1 << j), side))
    ring_info = mol.GetRingInfo()
    for ring_bonds, ring_atoms in zip(ring_info.BondRings(), ring_info.AtomRings()):
        ring_mask = sum(1 << a for a in ring_atoms)
        for x in range(len(ring_bonds)):
            for y in range(x + 1, len(ring_bonds)):
                (i1, j1), (i2, j2) = bond_atoms[ring_bonds[x]].tolist(), bond_atoms[ring_bonds[y]].tolist()
                cut_adj = list(adj)
                for p, q in ((i1, j1), (i2, j2)):
                    cut_adj[p] &= ~(1 << q)
                    cut_adj[q] &= ~(1 << p)
                side = _component(i1, full, cut_adj)
                if side >> j1 & 1:       # still connected: this pair does not split the molecule
                    continue
                cuts.append((ring_mask, side))
    return _Graph(n, counts, bond_atoms, energy, cuts)


def _expand(graph: _Graph, max_depth: int, max_fragments: int) -> dict[int, int]:
    """Atom mask -> smallest depth, for every fragment reachable in ``max_depth`` cleavages."""
    full = (1 << graph.n) - 1
    seen = {full: 0}
    layer = [full]
    for depth in range(1, max_depth + 1):
        nxt = []
        for frag in layer:
            for need, side in graph.cuts:
                if frag & need != need:
                    continue
                for piece in (frag & side, frag & ~side):
                    if piece not in seen:
                        seen[piece] = depth
                        nxt.append(piece)
            if len(seen) >= max_fragments:
                log.debug("fragment cap %d reached at depth %d", max_fragments, depth)
                return seen
        layer = nxt
    return seen


def _masks_matrix(masks: Sequence[int], n: int) -> np.ndarray:
    """(len(masks), n) 0/1 matrix of atom bit masks."""
    nbytes = max(1, (n + 7) // 8)
    raw = np.frombuffer(b"".join(m.to_bytes(nbytes, "little") for m in masks), np.uint8).reshape(len(masks), nbytes)
    return np.unpackbits(raw, axis=1, bitorder="little")[:, :n]


def _fragment(mol: Any, smiles: str, max_depth: int, max_fragments: int, max_heavy_atoms: int) -> FragmentSet:
    graph = _graph(mol)
    if isinstance(graph, str):
        return FragmentSet.failed(smiles, graph)
    depth_limit = max_depth if graph.n <= max_heavy_atoms else min(max_depth, 1)
    seen = _expand(graph, depth_limit, max_fragments)
    masks = list(seen)
    member = _masks_matrix(masks, graph.n)
    counts = (member.astype(np.int32) @ graph.atom_counts).astype(np.int32)
    masses = counts @ MONO_MASS
    if len(graph.bond_atoms):
        boundary = member[:, graph.bond_atoms[:, 0]] ^ member[:, graph.bond_atoms[:, 1]]
        energy = boundary @ graph.bond_energy
        n_broken = boundary.sum(axis=1).astype(np.int16)
    else:
        energy, n_broken = np.zeros(len(masks)), np.zeros(len(masks), np.int16)
    depth = np.array([seen[k] for k in masks], np.int8)
    order = np.argsort(masses, kind="stable")
    total = counts[depth == 0][0]
    return FragmentSet(smiles, format_formula(total), float(total @ MONO_MASS), counts[order], masses[order],
                       energy[order], n_broken[order], depth[order], tuple(masks[i] for i in order))


class FragmentCache:
    """LRU of fragment sets per (SMILES, fragmentation settings): a SMILES as given and its canonical form
    both point at one set, so another spelling of a cached structure is not fragmented again."""

    def __init__(self, maxsize: int = 20_000) -> None:
        self.maxsize = maxsize
        self._d: OrderedDict[tuple, FragmentSet] = OrderedDict()

    def __len__(self) -> int:
        return len(self._d)

    def get(self, key: tuple) -> FragmentSet | None:
        hit = self._d.get(key)
        if hit is not None:
            self._d.move_to_end(key)
        return hit

    def put(self, key: tuple, value: FragmentSet) -> None:
        self._d[key] = value
        while len(self._d) > self.maxsize:
            self._d.popitem(last=False)


def fragment_candidate(smiles_or_mol: Any, *, max_depth: int = DEFAULT_SETTINGS.max_depth,
                       max_fragments: int = DEFAULT_SETTINGS.max_fragments,
                       max_heavy_atoms: int = DEFAULT_SETTINGS.max_heavy_atoms,
                       cache: FragmentCache | None = None) -> FragmentSet:
    """Fragments of one structure (SMILES or RDKit Mol); ``cache`` keeps them per SMILES (as given and
    canonical). Never raises for bad input (see :attr:`FragmentSet.error`)."""
    if max_depth < 0:
        raise ValueError(f"max_depth must be >= 0, got {max_depth}")
    opts = (max_depth, max_fragments, max_heavy_atoms)
    given = (smiles_or_mol, *opts) if isinstance(smiles_or_mol, str) and cache is not None else None
    if given is not None and (hit := cache.get(given)) is not None:
        return hit
    parsed = _molecule(smiles_or_mol)
    if isinstance(parsed, str):
        out = FragmentSet.failed(smiles_or_mol if isinstance(smiles_or_mol, str) else "", parsed)
    else:
        canonical = (parsed[1], *opts)
        out = cache.get(canonical) if cache is not None else None
        if out is None:
            out = _fragment(parsed[0], parsed[1], max_depth, max_fragments, max_heavy_atoms)
            if cache is not None:
                cache.put(canonical, out)
    if given is not None:
        cache.put(given, out)
    return out


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
