"""In-silico fragmentation (MetFrag-style bond disconnection): fragments worked by hand, bond energies, limits."""
from __future__ import annotations

import numpy as np
import pytest

from speclake.pipelines.normalize.masses import ELEMENT_MASSES
from speclake.serving.annotate.fragmentation import (DEFAULT_BOND_ENERGY, FragmentCache, bond_energy,
                                                     fragment_candidate)

H, C, O = ELEMENT_MASSES["H"], ELEMENT_MASSES["C"], ELEMENT_MASSES["O"]
ACETOPHENONE = "CC(=O)c1ccccc1"


def test_acetophenone_fragments_by_hand():
    """Acetophenone's one-bond fragments have the formulas and neutral masses worked out by hand: benzoyl
    C7H5O (loss of CH3), phenyl C6H5 (loss of CH3CO), methyl CH3, each one broken C-C bond (348 kJ/mol);
    the whole molecule is C8H8O at depth 0; ring fragments break two ring bonds."""
    fs = fragment_candidate(ACETOPHENONE)
    assert fs.error is None and fs.formula == "C8H8O"
    assert fs.mass == pytest.approx(8 * C + 8 * H + O, abs=1e-9)
    by_formula = {}
    for i in range(len(fs)):
        by_formula.setdefault(fs.fragment_formula(i), []).append(i)
    expected = {"C7H5O": 7 * C + 5 * H + O, "C6H5": 6 * C + 5 * H, "CH3": C + 3 * H, "C2H3O": 2 * C + 3 * H + O}
    for formula, mass in expected.items():
        i = by_formula[formula][0]
        assert fs.masses[i] == pytest.approx(mass, abs=1e-9), formula
        assert (fs.depth[i], fs.n_broken[i], fs.energy[i]) == (1, 1, 348.0), formula
    whole = by_formula["C8H8O"]
    assert len(whole) == 1 and fs.depth[whole[0]] == 0 and fs.n_broken[whole[0]] == 0
    assert np.all(np.diff(fs.masses) >= 0), "fragments are sorted by mass"
    ring_pieces = [i for i in by_formula["C2H2"]]     # two adjacent ring CH atoms cut out of the ring
    assert ring_pieces and all(fs.n_broken[i] == 2 for i in ring_pieces)
    cache = FragmentCache()
    cached = fragment_candidate(ACETOPHENONE, cache=cache)
    assert fragment_candidate(ACETOPHENONE, cache=cache) is cached, "a second call is served from the cache"
    assert fragment_candidate("c1ccccc1C(C)=O", cache=cache) is cached, "another spelling: the canonical entry"
    assert np.array_equal(cached.masses, fs.masses)


def test_bond_energies_either_atom_order():
    """Bond energies are found whichever atom comes first (C-Cl 338, Cl-S 255, N-F 272 kJ/mol), aromatic
    C:C is the mean of C-C and C=C (480), an unknown pair takes the default."""
    assert bond_energy("Cl", "C", 1.0) == bond_energy("C", "Cl", 1.0) == 338.0
    assert bond_energy("Cl", "S", 1.0) == bond_energy("S", "Cl", 1.0) == 255.0
    assert bond_energy("F", "N", 1.0) == 272.0
    assert bond_energy("C", "C", 1.5) == 480.0
    assert bond_energy("Se", "Se", 1.0) == DEFAULT_BOND_ENERGY


def test_depth_and_size_limits():
    """Depth-1 fragments are a subset of the depth-2 ones (same atom sets); the fragment cap stops the
    expansion early and a structure above max_heavy_atoms is cleaved once only; every set keeps the whole
    molecule (caffeine, 14 heavy atoms, two fused rings); an RDKit molecule with explicit hydrogens gives
    the same fragments as its SMILES."""
    caffeine = "Cn1cnc2c1c(=O)n(C)c(=O)n2C"
    d1, d2 = fragment_candidate(caffeine, max_depth=1), fragment_candidate(caffeine, max_depth=2)
    assert set(d1.atoms) < set(d2.atoms) and d1.depth.max() == 1 and d2.depth.max() == 2
    capped = fragment_candidate(caffeine, max_fragments=20)
    assert len(capped) < len(d2) and 0 in capped.depth
    big = fragment_candidate(caffeine, max_heavy_atoms=10)
    assert set(big.atoms) == set(d1.atoms)
    from rdkit import Chem

    explicit_h = fragment_candidate(Chem.AddHs(Chem.MolFromSmiles(caffeine)))
    assert explicit_h.formula == d2.formula and set(explicit_h.atoms) == set(d2.atoms)
