"""SELFIES tokens of a structure set: SMILES -> SELFIES -> integer arrays and back.

Every SELFIES string decodes to a valid molecule, so a decoder over this alphabet never emits an
unparsable structure; validity losses come only from empty decodes. Index 0 is padding, 1 the start
token, 2 the end token.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Iterable, Sequence

import numpy as np
import selfies as sf
from rdkit import Chem, RDLogger

log = logging.getLogger(__name__)
RDLogger.DisableLog("rdApp.*")

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SPECIALS = (PAD, BOS, EOS)


def canonical_smiles(smiles: str) -> str | None:
    """RDKit canonical SMILES of the largest fragment, or None when RDKit cannot read ``smiles``."""
    mol = Chem.MolFromSmiles(smiles) if smiles else None
    if mol is None:
        return None
    frags = Chem.GetMolFrags(mol, asMols=True)
    if len(frags) > 1:
        mol = max(frags, key=lambda m: m.GetNumHeavyAtoms())
    return Chem.MolToSmiles(mol)


def selfies_tokens(smiles: str) -> list[str] | None:
    """The SELFIES tokens of a SMILES, or None when it cannot be encoded (unsupported valence, charge)."""
    try:
        encoded = sf.encoder(smiles)
    except (sf.EncoderError, ValueError):
        return None
    return list(sf.split_selfies(encoded)) if encoded else None


class Vocab:
    """The token alphabet of a trained VAE (saved as a list with the model)."""

    def __init__(self, tokens: Sequence[str], max_len: int) -> None:
        if list(tokens[:3]) != list(SPECIALS):
            raise ValueError(f"a vocabulary starts with {SPECIALS}, got {list(tokens[:3])}")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.max_len = max_len            # tokens of a structure, without start and end

    @classmethod
    def fit(cls, token_lists: Iterable[Sequence[str]], max_len: int, min_count: int = 1) -> "Vocab":
        """The tokens seen at least ``min_count`` times, most frequent first."""
        counts = Counter(t for tokens in token_lists for t in tokens)
        return cls([*SPECIALS, *(t for t, n in counts.most_common() if n >= min_count)], max_len)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Sequence[str]) -> np.ndarray | None:
        """``<bos> tokens <eos> <pad>...`` as int64 of length ``max_len + 2``; None when too long or a token is unknown."""
        if len(tokens) > self.max_len or any(t not in self.index for t in tokens):
            return None
        out = np.zeros(self.max_len + 2, np.int64)
        out[0] = 1
        out[1:len(tokens) + 1] = [self.index[t] for t in tokens]
        out[len(tokens) + 1] = 2
        return out

    def decode(self, ids: Sequence[int]) -> str | None:
        """Canonical SMILES of token ids (stops at ``<eos>``), or None for an empty molecule."""
        parts = []
        for i in ids:
            i = int(i)
            if i == 2:
                break
            if i > 2:
                parts.append(self.tokens[i])
        if not parts:
            return None
        try:
            smiles = sf.decoder("".join(parts))
        except sf.DecoderError:
            return None
        return canonical_smiles(smiles) if smiles else None


def encode_smiles(smiles: Sequence[str], vocab: Vocab) -> tuple[np.ndarray, np.ndarray]:
    """(rows of the encodable SMILES, (n, max_len + 2) token array); the others are left out."""
    keep, rows = [], []
    for i, s in enumerate(smiles):
        tokens = selfies_tokens(s)
        arr = vocab.encode(tokens) if tokens is not None else None
        if arr is not None:
            keep.append(i)
            rows.append(arr)
    arr = np.stack(rows) if rows else np.zeros((0, vocab.max_len + 2), np.int64)
    return np.asarray(keep, np.int64), arr


__all__ = ["BOS", "EOS", "PAD", "Vocab", "canonical_smiles", "encode_smiles", "selfies_tokens"]
