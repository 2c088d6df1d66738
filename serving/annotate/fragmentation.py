"""MetFrag-style in-silico fragmentation of candidate structures (scoring against spectra: :mod:`.fragmenter`).

Combinatorial bond disconnection of the heavy-atom graph (RDKit), as MetFrag does (Wolf et al. 2010,
*BMC Bioinformatics* 11:148; Ruttkies et al. 2016, *J. Cheminform.* 8:3). One *cleavage* is either one
non-ring single bond (a bridge), or two bonds of one ring (the SSSR ring, aromatic bonds included) whose
removal splits the molecule; cleavages are applied to fragments recursively up to ``max_depth`` (default 2).
A ring pair is applied only to a fragment that still holds the whole ring, and each cleavage's two sides are
precomputed on the whole molecule, so every piece is connected and splitting is two bit operations per
cut. Fragments are deduplicated by atom set (the smallest depth kept). A fragment keeps the hydrogens its
atoms carry in the molecule, so its neutral mass is that of the (radical) piece; its *cost* is the sum of
the bond dissociation energies of the bonds that separate it from the rest (:data:`BOND_ENERGIES`, kJ/mol,
textbook mean bond enthalpies, aromatic bonds between single and double, as MetFrag's table). Fragment
sets are cached per SMILES (:class:`FragmentCache`, LRU).
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

from speclake.pipelines.features.formula import ELEMENT_INDEX, ELEMENTS, MONO_MASS, N_ELEMENTS, format_formula

log = logging.getLogger(__name__)

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


__all__ = ["BOND_ENERGIES", "DEFAULT_BOND_ENERGY", "DEFAULT_SETTINGS", "FragmentCache", "FragmentSet",
           "FragmenterSettings", "bond_energy", "fragment_candidate"]
