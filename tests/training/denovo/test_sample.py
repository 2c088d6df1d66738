"""Proposals of the trained de novo model: valid decodes, --near closer than free, formula filter, vocabulary."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from rdkit import Chem

from speclake.training.denovo.chem import formula_of, tanimoto_to
from speclake.training.denovo.sample import SampleSettings
from speclake.training.denovo.vocab import Vocab, canonical_smiles, selfies_tokens

pytestmark = pytest.mark.ray


def test_vocab_round_trip():
    """A SMILES spelled as SELFIES tokens and decoded again is the same canonical structure; unknown tokens refuse."""
    smiles = ["CC(=O)Oc1ccccc1C(=O)O", "CN1CCC[C@H]1c1cccnc1", "Clc1ccc(Cl)cc1"]
    tokens = [selfies_tokens(s) for s in smiles]
    vocab = Vocab.fit(tokens, max_len=40)
    for s, t in zip(smiles, tokens):
        assert vocab.decode(vocab.encode(t)[1:]) == canonical_smiles(s)
    assert vocab.encode(["[Xe]"]) is None
    assert vocab.encode(tokens[0] * 10) is None  # longer than max_len


def test_decoded_molecules_are_valid(denovo_model):
    """Prior draws decode to molecules RDKit reads (SELFIES: nothing unparsable), almost never to nothing."""
    z = np.random.default_rng(1).standard_normal((100, denovo_model.settings.vae.latent)).astype(np.float32)
    decoded = denovo_model.decode(z)
    valid = [s for s in decoded if s]
    assert len(valid) >= 90
    assert all(Chem.MolFromSmiles(s) is not None for s in valid)


def test_near_a_parent_is_closer_than_free_sampling(denovo_model):
    """Proposals around a parent's latent point have a higher mean Tanimoto to it than free prior samples."""
    parents = ["CC(C)Cc1ccc(C(C)C(=O)O)cc1", "COc1ccc2[nH]cc(CCNC(C)=O)c2c1", "CC(=O)Nc1ccc(O)cc1",
               "O=C(O)c1ccccc1O", "Cn1cnc2c1c(=O)n(C)c(=O)n2C"]
    latent = denovo_model.settings.vae.latent
    free = [s for s in denovo_model.decode(np.random.default_rng(0).standard_normal((100, latent)).astype(np.float32))
            if s]
    near, far = [], []
    for p in parents:
        point = denovo_model.encode([p])[0]
        assert not np.isnan(point).any()
        found = denovo_model.propose(point, 0.3, SampleSettings(n=20, draws=40, seed=0), exclude=[p])
        assert found and canonical_smiles(p) not in {f.smiles for f in found}
        near += list(tanimoto_to(p, [f.smiles for f in found]))
        far += list(tanimoto_to(p, free))
    assert np.nanmean(near) > np.nanmean(far) + 0.02, (np.nanmean(near), np.nanmean(far))


def test_formula_filter_keeps_only_that_formula(denovo_model):
    """With a formula, every proposal has exactly it; without, the same draws give other formulas too."""
    settings = SampleSettings(n=50, draws=150, seed=3)
    center = np.zeros(denovo_model.settings.vae.latent, np.float32)
    free = denovo_model.propose(center, 1.0, settings)
    formulas = Counter(f.formula for f in free)
    assert len(formulas) > 1
    target = formulas.most_common(1)[0][0]
    stats: dict[str, int] = {}
    unconstrained = settings.model_copy(update={"constrained": False})
    kept = denovo_model.propose(center, 1.0, unconstrained, formula=target, stats=stats)
    assert kept and all(formula_of(p.smiles) == target == p.formula for p in kept)
    assert len(kept) == formulas[target] < len(free)
    assert stats["draws"] == 150 and stats["formula_match"] <= stats["valid"] <= 150
    assert [p.score for p in kept] == sorted((p.score for p in kept), reverse=True)


def test_constrained_decoding_spells_the_formula(denovo_model):
    """Decoding inside a formula the model rarely makes freely (a test structure's): almost every decode has
    exactly its heavy atoms, and far more decodes match the whole formula than free decodes that are filtered."""
    from collections import Counter as C

    from rdkit import Chem

    target = "C13H18O2"   # ibuprofen: absent from the model's training structures
    z = np.random.default_rng(5).standard_normal((150, denovo_model.settings.vae.latent)).astype(np.float32)
    free = [s for s in denovo_model.decode(z) if s]
    inside = [s for s in denovo_model.decode(z, formula=target) if s]
    heavy = [C(a.GetSymbol() for a in Chem.MolFromSmiles(s).GetAtoms()) for s in inside]
    assert sum(h == C({"C": 13, "O": 2}) for h in heavy) >= 0.95 * len(inside) and len(inside) >= 140
    n_free = sum(formula_of(s) == target for s in free)
    n_inside = sum(formula_of(s) == target for s in inside)
    assert n_inside >= 10 and n_inside > 5 * max(n_free, 1), (n_inside, n_free)
