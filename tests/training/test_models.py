"""Model building blocks: arch1 independence, arch2 grouping, pair sampling, graphs, losses (no Ray)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from speclake.training.inputs import sample_tanimoto_pairs, tanimoto_matrix
from speclake.training.models import ModelContext, build_model
from speclake.training.models.arch1 import IndependentMLPs
from speclake.training.models.arch2 import descriptor_groups
from speclake.training.models.arch5 import triplet_loss
from speclake.training.models.graph import ATOM_DIM, collate, mol_graph


@pytest.mark.parametrize("sparse", [False, True])
def test_arch1_descriptor_loss_touches_only_its_own_network(sparse):
    """The gradient of descriptor 2's output is non-zero on network 2 and exactly zero on every other network."""
    torch.manual_seed(0)
    net = IndependentMLPs(n_in=20, n_nets=5, hidden=[8, 4])
    x = torch.rand(6, 20)
    out = net(x.to_sparse() if sparse else x)
    assert out.shape == (6, 5)
    out[:, 2].sum().backward()
    for d in range(5):
        grads = [g for g in (
            net.w0.grad[:, d], net.b0.grad[d], *[w.grad[d] for w in net.ws], *[b.grad[d] for b in net.bs])]
        total = sum(float(g.abs().sum()) for g in grads)
        assert (total > 0) if d == 2 else (total == 0.0), (d, total)


def test_arch1_sparse_and_dense_inputs_agree():
    """The sparse first layer computes the same outputs as the dense one."""
    torch.manual_seed(1)
    net = IndependentMLPs(n_in=30, n_nets=3, hidden=[5])
    x = torch.rand(4, 30) * (torch.rand(4, 30) > 0.7)
    assert torch.allclose(net(x), net(x.to_sparse()), atol=1e-6)


def test_arch2_groups_follow_cooccurrence():
    """Descriptors that always co-occur on training structures land in one group, unrelated ones apart."""
    rng = np.random.default_rng(0)
    a, b = rng.random(200) < 0.3, rng.random(200) < 0.3
    y = np.stack([a, a, a, b, b, b], axis=1).astype(np.uint8)
    groups = descriptor_groups(y, n_groups=2)
    assert groups[0] == groups[1] == groups[2]
    assert groups[3] == groups[4] == groups[5]
    assert groups[0] != groups[3]


def test_arch2_model_uses_group_layer_of_each_descriptor():
    """A descriptor's head reads only its group's layer: changing another group's weights leaves it unchanged."""
    torch.manual_seed(0)
    ctx = ModelContext(arch="arch2", model={"trunk": [8], "group_hidden": 4, "n_groups": 2, "dropout": 0.0},
                       bins={"max_mz": 50.0}, descriptors=["a", "b", "c"], groups=[0, 1, 1])
    model = build_model(ctx).eval()
    x = torch.rand(3, 50)
    before = model(x)
    with torch.no_grad():
        model.group_w[1] += 1.0
    after = model(x)
    assert torch.allclose(before[:, 0], after[:, 0])
    assert not torch.allclose(before[:, 1:], after[:, 1:])


def test_pairs_are_sampled_evenly_over_tanimoto_bins():
    """With many dissimilar and few similar pairs, each Tanimoto bin gets at most per_bin pairs."""
    fps = [[0, 1, 2, 3]] * 3 + [[10 * i + 100, 10 * i + 101] for i in range(20)]
    sim = tanimoto_matrix(fps)
    assert sim[0, 1] == 1.0 and sim[0, 5] == 0.0
    i, j = sample_tanimoto_pairs(sim, np.ones(len(fps), bool), n_bins=4, per_bin=3, rng=np.random.default_rng(0))
    bins = np.minimum((sim[i, j] * 4).astype(int), 3)
    assert sorted(np.bincount(bins, minlength=4).tolist()) == [0, 0, 3, 3]


def test_molecular_graph_features():
    """Benzoic acid: 9 heavy atoms, 9 bonds (18 directed edges), aromatic ring atoms flagged; bad SMILES give None."""
    g = mol_graph("OC(=O)c1ccccc1")
    assert g.atoms.shape == (9, ATOM_DIM)
    assert g.edges.shape == (2, 18)
    assert int(g.atoms[:, -5].sum()) == 6  # aromatic flag (before in-ring and 3 hybridisation columns)
    assert mol_graph("not a smiles") is None
    batch = collate([g, mol_graph("CCO")])
    assert batch["graph_of"].tolist() == [0] * 9 + [1] * 3
    assert int(batch["edges"].max()) == 11


def test_triplet_loss_zero_when_positive_is_much_closer():
    """Hardest-negative triplet loss is 0 when every anchor sits on its structure, positive when swapped."""
    s = torch.nn.functional.normalize(torch.eye(3), dim=-1)
    mask = ~torch.eye(3, dtype=torch.bool)
    assert float(triplet_loss(s, s, torch.arange(3), mask, 0.2)) == 0.0
    assert float(triplet_loss(s, s, torch.tensor([1, 2, 0]), mask, 0.2)) > 0.0


def test_contrastive_term_is_infonce_over_positive_and_allowed_negatives():
    """With contrastive_weight, the loss is the triplet loss plus the cross-entropy of the positive against the
    allowed negatives only (masked-out structures do not enter the softmax)."""
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(3, 4), dim=1)
    s = torch.nn.functional.normalize(torch.randn(4, 4), dim=1)
    pos = torch.tensor([0, 1, 2])
    mask = torch.tensor([[False, True, False, True], [True, False, True, False], [True, True, False, False]])
    plain = triplet_loss(a, s, pos, mask, 0.2)
    both = triplet_loss(a, s, pos, mask, 0.2, contrastive_weight=0.5, temperature=0.1)
    logits = a @ s.T / 0.1
    ce = []
    for i in range(3):
        allowed = [j for j in range(4) if mask[i, j] or j == pos[i]]
        ce.append(-torch.log_softmax(logits[i, allowed], 0)[allowed.index(int(pos[i]))])
    assert float(both) == pytest.approx(float(plain) + 0.5 * float(torch.stack(ce).mean()), rel=1e-5)
