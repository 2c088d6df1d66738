"""Formula-constrained decoding: the grammar simulation agrees with selfies, the masks keep the formula."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import selfies as sf
from rdkit import Chem

from speclake.training.denovo.constrain import FormulaConstraint, _Row, formula_counts, token_info, unsaturation
from speclake.training.denovo.vocab import Vocab, selfies_tokens
from tests.conftest import REPO

MOSES = REPO / "tests" / "data" / "zinc_moses_400.smi"


def _heavy_atoms(smiles: str) -> Counter:
    mol = Chem.MolFromSmiles(smiles)
    return Counter(a.GetSymbol() for a in mol.GetAtoms() if a.GetSymbol() != "H")


def _vocab() -> Vocab:
    lines = [line.split()[0] for line in MOSES.read_text().splitlines() if line.strip()][:300]
    return Vocab.fit([t for t in map(selfies_tokens, lines) if t], max_len=80)


def test_formula_counts_and_unsaturation():
    """Formulas read into counts and charge; unsaturation counts rings + pi bonds (benzene 4, caffeine 6,
    CCl4 0, a tetraalkylammonium cation 0, acetate 1)."""
    assert formula_counts("C8H10N4O2") == ({"C": 8, "H": 10, "N": 4, "O": 2}, 0)
    assert unsaturation(*formula_counts("C6H6")) == 4 and unsaturation(*formula_counts("C8H10N4O2")) == 6
    assert unsaturation(*formula_counts("CCl4")) == 0
    assert formula_counts("C28H60N+")[1] == 1 and unsaturation(*formula_counts("C28H60N+")) == 0
    assert unsaturation(*formula_counts("C2H3O2-")) == 1
    with pytest.raises(ValueError):
        formula_counts("C6Hx")


def test_token_info_reads_the_selfies_grammar():
    """Branch, ring and atom tokens are told apart ([Branch1] is no bromine), with bond orders and valences."""
    info = token_info(["<pad>", "<bos>", "<eos>", "[Branch1]", "[=Ring1]", "[Cl]", "[=C]", "[NH1+1]", "[Br]"])
    assert list(info.kind) == [0, 0, 0, 2, 3, 1, 1, 1, 1]
    assert info.element[3] is None and info.element[5] == "Cl" and info.element[8] == "Br"
    assert info.order[4] == 2 and info.order[6] == 2 and info.cap[6] == 4 and info.cap[5] == 1


def test_row_simulation_places_the_atoms_selfies_decodes():
    """Random token strings (ignored branches, rings without valence, terminated chains) and real molecules:
    the heavy atoms the simulation counts as placed are exactly those selfies' decoder puts in the molecule."""
    vocab = _vocab()
    constraint = FormulaConstraint(vocab.tokens, "C40N10O10S5F5Cl5Br5")
    rng = np.random.default_rng(0)
    strings = [rng.integers(3, len(vocab), size=int(rng.integers(3, 40))).tolist() for _ in range(300)]
    strings += [[vocab.index[t] for t in selfies_tokens(line.split()[0])]
                for line in MOSES.read_text().splitlines()[:100]]
    checked = 0
    for ids in strings:
        smiles = sf.decoder("".join(vocab.tokens[i] for i in ids))
        if not smiles or Chem.MolFromSmiles(smiles) is None:
            continue
        row = _Row([100] * len(constraint.target))
        for t in ids:
            row.step(t, constraint.info, constraint.col)
        placed = Counter({e: 100 - row.left[j] for e, j in constraint.col.items() if 100 - row.left[j]})
        assert placed == _heavy_atoms(smiles), (ids, smiles)
        checked += 1
    assert checked > 300
