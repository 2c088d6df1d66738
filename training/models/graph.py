"""Molecular graphs from SMILES (RDKit) and a small message-passing network over them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

ELEMENTS = ("C", "N", "O", "S", "P", "F", "Cl", "Br", "I", "Si", "B", "Se")
ATOM_DIM = len(ELEMENTS) + 1 + 6 + 3 + 4 + 1 + 1 + 3
BOND_DIM = 6


def _one_hot(value: object, choices: Sequence[object]) -> list[float]:
    return [1.0 if value == c else 0.0 for c in choices]


@dataclass
class MolGraph:
    """One molecule: atom features (n_atoms, ATOM_DIM), directed edges (2, E), edge features (E, BOND_DIM)."""

    atoms: np.ndarray
    edges: np.ndarray
    bonds: np.ndarray


def mol_graph(smiles: str) -> MolGraph | None:
    """Graph of a SMILES string, or None when RDKit cannot parse it."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles) if smiles else None
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    hyb = (Chem.HybridizationType.SP, Chem.HybridizationType.SP2, Chem.HybridizationType.SP3)
    atoms = []
    for a in mol.GetAtoms():
        sym = a.GetSymbol()
        atoms.append(
            _one_hot(sym, ELEMENTS) + [0.0 if sym in ELEMENTS else 1.0]
            + _one_hot(min(a.GetDegree(), 5), range(6)) + _one_hot(a.GetFormalCharge(), (-1, 0, 1))
            + _one_hot(min(a.GetTotalNumHs(), 3), range(4)) + [float(a.GetIsAromatic()), float(a.IsInRing())]
            + _one_hot(a.GetHybridization(), hyb))
    bt = (Chem.BondType.SINGLE, Chem.BondType.DOUBLE, Chem.BondType.TRIPLE, Chem.BondType.AROMATIC)
    src, dst, feats = [], [], []
    for b in mol.GetBonds():
        f = _one_hot(b.GetBondType(), bt) + [float(b.GetIsConjugated()), float(b.IsInRing())]
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        src += [i, j]
        dst += [j, i]
        feats += [f, f]
    return MolGraph(np.asarray(atoms, np.float32), np.asarray([src, dst], np.int64).reshape(2, -1),
                    np.asarray(feats, np.float32).reshape(-1, BOND_DIM))


def collate(graphs: Sequence[MolGraph]) -> dict[str, torch.Tensor]:
    """Disjoint union of graphs: atoms, edges (offset), bonds and the graph index of every atom."""
    offsets = np.cumsum([0] + [len(g.atoms) for g in graphs[:-1]])
    return {
        "atoms": torch.from_numpy(np.concatenate([g.atoms for g in graphs])),
        "edges": torch.from_numpy(np.concatenate([g.edges + o for g, o in zip(graphs, offsets)], axis=1)),
        "bonds": torch.from_numpy(np.concatenate([g.bonds for g in graphs])),
        "graph_of": torch.from_numpy(np.repeat(np.arange(len(graphs)), [len(g.atoms) for g in graphs])),
        "n_graphs": torch.tensor(len(graphs)),
    }


class MessagePassing(nn.Module):
    """One MPNN layer: m_v = sum_u ReLU(W_m [h_u, e_uv]); h_v <- h_v + ReLU(W_u [h_v, m_v])."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.message = nn.Linear(hidden + BOND_DIM, hidden)
        self.update = nn.Linear(2 * hidden, hidden)

    def forward(self, h: torch.Tensor, edges: torch.Tensor, bonds: torch.Tensor) -> torch.Tensor:
        src, dst = edges[0], edges[1]
        msg = torch.relu(self.message(torch.cat([h[src], bonds], dim=-1)))
        agg = torch.zeros_like(h).index_add_(0, dst, msg)
        return h + torch.relu(self.update(torch.cat([h, agg], dim=-1)))


class GraphEncoder(nn.Module):
    """Atom embedding, ``layers`` message-passing steps, sum and mean readout, projection, L2 norm."""

    def __init__(self, hidden: int, layers: int, dim: int) -> None:
        super().__init__()
        self.embed = nn.Linear(ATOM_DIM, hidden)
        self.layers = nn.ModuleList([MessagePassing(hidden) for _ in range(layers)])
        self.project = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, atoms: torch.Tensor, edges: torch.Tensor, bonds: torch.Tensor, graph_of: torch.Tensor,
                n_graphs: int) -> torch.Tensor:
        h = torch.relu(self.embed(atoms))
        for layer in self.layers:
            h = layer(h, edges, bonds)
        total = torch.zeros(n_graphs, h.shape[1], device=h.device, dtype=h.dtype).index_add_(0, graph_of, h)
        count = torch.zeros(n_graphs, device=h.device, dtype=h.dtype).index_add_(
            0, graph_of, torch.ones_like(graph_of, dtype=h.dtype)).clamp(min=1)
        readout = torch.cat([total, total / count[:, None]], dim=-1)
        return nn.functional.normalize(self.project(readout), dim=-1)
