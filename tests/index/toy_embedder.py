"""A float embedder for tests only: MACCS keys as an L2-normalized float vector (cosine).

It shows how a learned embedder (arch5, descriptor vectors) plugs in: subclass, register, build.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from speclake.index.embed import Embedder, register_embedder


@register_embedder
class ToyMaccsFloat(Embedder):
    """MACCS keys (167) as float32, compared by cosine."""

    name = "toy_maccs_float"
    kind = "float"
    metric = "cosine"

    @property
    def dim(self) -> int:
        return 167

    @property
    def version(self) -> str:
        return "toy-maccs-1"

    def embed_smiles(self, smiles: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        from rdkit import Chem
        from rdkit.Chem import MACCSkeys

        out = np.zeros((len(smiles), 167), dtype=np.float32)
        ok = np.zeros(len(smiles), dtype=bool)
        for i, smi in enumerate(smiles):
            mol = Chem.MolFromSmiles(smi) if smi else None
            if mol is not None:
                out[i] = np.array(list(MACCSkeys.GenMACCSKeys(mol)), dtype=np.float32)
                ok[i] = True
        return out, ok
