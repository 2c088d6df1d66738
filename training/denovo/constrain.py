"""Formula-constrained decoding: the decoder may only spell the heavy atoms of a target formula.

At each step a token is allowed or masked (logit -inf) from the SELFIES grammar state of each row:

* after ``[Branch<k>]`` / ``[Ring<k>]`` (any bond prefix) the next ``k`` tokens are read as an index,
  not atoms: they are free and cost nothing;
* otherwise an atom token is allowed only while its element has atoms left in the target (explicit
  hydrogen tokens never); when every atom is placed only ring closures (which add unsaturation, not
  atoms) and the end token remain, and the end only once the target's unsaturation is reached (or
  nothing else is possible);
* the degree of unsaturation (rings + double bonds + 2 x triple bonds) spelt so far may not exceed
  the target's; bond orders are the ones selfies will make (capped by the valence left);
* the main chain may not end early: an atom or ring that would use up the chain's last valence is
  refused while other atoms remain (they would be dropped); a branch or ring symbol that selfies
  would ignore (no valence for it) is refused too.

SELFIES may still drop a symbol whose valence is used up, and hydrogens are implicit, so the decoded
formula is checked exactly afterwards (:func:`~.chem.same_formula`); the constraint only makes a
match far likelier than filtering free decodes (MSNovelist and formula-conditioned generators do the
same: decode inside the formula).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

def formula_counts(formula: str) -> tuple[dict[str, int], int]:
    """(element counts, charge) of a molecular formula, e.g. ``C28H60N+`` (a quaternary ammonium) -> (..., 1);
    ValueError naming an unreadable formula or an unsupported element."""
    from speclake.pipelines.features.formula import ELEMENTS, parse_formula

    counts, charge = parse_formula(formula)
    return {e: int(n) for e, n in zip(ELEMENTS, counts) if n}, int(charge)


def unsaturation(counts: dict[str, int], charge: int = 0) -> float:
    """Rings plus double bonds (triple bonds twice) of a formula (:func:`~speclake.pipelines.features.formula.rdbe`,
    plus half the charge: a permanent cation such as R4N+ or an anion such as RCOO- is an even-electron species)."""
    from speclake.pipelines.features.formula import ELEMENT_INDEX, N_ELEMENTS, rdbe

    vec = np.zeros(N_ELEMENTS, np.int64)
    for e, n in counts.items():
        vec[ELEMENT_INDEX[e]] = n
    return float(rdbe(vec)) + charge / 2


@dataclass
class TokenInfo:
    """What the SELFIES grammar does with each vocabulary token (selfies' own rules, :mod:`selfies.grammar_rules`)."""

    kind: np.ndarray        # 0 special, 1 atom, 2 branch, 3 ring
    element: list[str | None]
    order: np.ndarray       # atom: bond order of its prefix; branch/ring: its bond order
    cap: np.ndarray         # atom: bonding capacity
    n_index: np.ndarray     # branch/ring: index symbols that follow
    symbols: list[str]


def token_info(tokens: Sequence[str]) -> TokenInfo:
    """:class:`TokenInfo` of a vocabulary (specials first, as :class:`~.vocab.Vocab` orders them)."""
    from selfies.grammar_rules import process_atom_symbol, process_branch_symbol, process_ring_symbol

    n = len(tokens)
    kind, order, cap, n_index = (np.zeros(n, np.int64) for _ in range(4))
    element: list[str | None] = [None] * n
    for i, tok in enumerate(tokens):
        if not tok.startswith("["):
            continue
        if tok[-4:-2] == "ch" and process_branch_symbol(tok):
            kind[i] = 2
            order[i], n_index[i] = process_branch_symbol(tok)
        elif tok[-4:-2] == "ng" and process_ring_symbol(tok):
            kind[i] = 3
            order[i], n_index[i], _ = process_ring_symbol(tok)
        else:
            out = process_atom_symbol(tok)
            if out is None:
                continue
            (bond, _), atom = out
            kind[i], order[i], cap[i], element[i] = 1, bond, atom.bonding_capacity, atom.element
    return TokenInfo(kind, element, order, cap, n_index, list(tokens))


class _Row:
    """One decoding row's SELFIES derivation: a stack of [state, symbols left] frames (the main chain and
    open branches), index symbols still to read, atoms left per element, unsaturation spelt."""

    __slots__ = ("frames", "pending", "pend_kind", "pend_order", "digits", "left", "dbe")

    def __init__(self, left: list[int]) -> None:
        self.frames: list[list] = [[0, float("inf")]]
        self.pending, self.pend_kind, self.pend_order = 0, 0, 0
        self.digits: list[str] = []
        self.left, self.dbe = left, 0.0

    def _consume(self) -> None:
        """One symbol read: every open frame has one fewer left; finished branches close (not while an
        index is being read: selfies reads it, and the branch it opens, past its frame's end)."""
        for f in self.frames:
            f[1] -= 1
        while not self.pending and len(self.frames) > 1 and self.frames[-1][1] <= 0:
            self.frames.pop()

    def step(self, t: int, info: TokenInfo, col: dict[str, int]) -> None:
        """Advance by token ``t`` exactly as selfies' decoder would read it."""
        from selfies.grammar_rules import (get_index_from_selfies, next_atom_state, next_branch_state,
                                           next_ring_state)

        top = self.frames[-1]
        if self.pending:
            self.digits.append(info.symbols[t])
            self.pending -= 1
            if not self.pending:
                q = get_index_from_selfies(*self.digits)
                if self.pend_kind == 2:
                    init, top[0] = next_branch_state(self.pend_order, top[0])
                    for f in self.frames:
                        f[1] -= 1
                    self.frames.append([init, q + 1])
                    return
                bond, top[0] = next_ring_state(self.pend_order, top[0])
                self.dbe += bond
            self._consume()
            return
        state, kind = top[0], info.kind[t]
        if state is not None:
            if kind == 1:
                bond, top[0] = next_atom_state(int(info.order[t]), int(info.cap[t]), state)
                self.left[col[info.element[t]]] -= 1
                self.dbe += max(bond - 1, 0)
            elif (kind == 2 and state > 1) or (kind == 3 and state > 0):
                self.pending, self.pend_kind, self.pend_order = int(info.n_index[t]), kind, int(info.order[t])
                self.digits = []
        self._consume()


class FormulaConstraint:
    """The mask state of a batch decoding towards one formula (see the module doc)."""

    def __init__(self, tokens: Sequence[str], formula: str) -> None:
        import torch

        counts, charge = formula_counts(formula)
        self.info = info = token_info(tokens)
        names = sorted({e for e in info.element if e} | {e for e in counts if e != "H"})
        self.col = {e: j for j, e in enumerate(names)}
        self.target = [counts.get(e, 0) if e != "H" else 0 for e in names]   # hydrogens stay implicit
        self.max_dbe = unsaturation(counts, charge)
        self.element = torch.tensor([self.col[e] if e else 0 for e in info.element], dtype=torch.long)
        self.kind = torch.from_numpy(info.kind)
        self.order = torch.from_numpy(info.order)
        self.cap = torch.from_numpy(info.cap)
        self.formula = formula

    def start(self, n: int) -> list[_Row]:
        """The derivations of ``n`` rows before the first token."""
        return [_Row(list(self.target)) for _ in range(n)]

    def mask(self, rows: list[_Row]) -> "torch.Tensor":  # noqa: F821 - torch imported lazily
        """(n, vocab) bool: True where a token is not allowed now."""
        import torch

        n = len(rows)
        left = torch.tensor([r.left for r in rows], dtype=torch.long).reshape(n, -1)
        atoms_left = left.clamp(min=0).sum(1)[:, None]
        top = [r.frames[-1] for r in rows]
        reading = torch.tensor([r.pending > 0 for r in rows])[:, None]
        stopped = torch.tensor([f[0] is None for f in top])[:, None]
        main = torch.tensor([len(r.frames) == 1 for r in rows])[:, None]
        s = torch.tensor([f[0] if f[0] is not None else 0 for f in top], dtype=torch.long)[:, None]
        dbe_left = self.max_dbe - torch.tensor([r.dbe for r in rows])[:, None]
        kind, order, cap = self.kind[None, :], self.order[None, :], self.cap[None, :]
        bond = torch.where(s == 0, torch.zeros_like(order), torch.minimum(torch.minimum(order, s), cap))
        ends_chain = main & (atoms_left > 1)
        atom_ok = ((kind == 1) & (left.gather(1, self.element.expand(n, -1)) > 0)
                   & ((bond - 1).clamp(min=0) <= dbe_left + 1e-6) & ~(ends_chain & (cap - bond == 0)))
        branch_ok = (kind == 2) & (s > 1) & (atoms_left >= 1)
        ring_bond = torch.minimum(order, s)
        ring_ok = ((kind == 3) & (s > 0) & (ring_bond <= dbe_left + 1e-6)
                   & ~(main & (atoms_left > 0) & (s - ring_bond == 0)))
        allowed = (atom_ok | branch_ok | ring_ok) & ~stopped
        allowed = torch.where(reading, kind > 0, allowed)                  # index symbols: any non-special
        allowed = torch.where(stopped & ~main & ~reading, kind > 0, allowed)  # a finished branch's leftovers
        # the end once every heavy atom is placed and the unsaturation reached (rings close it before)
        allowed[:, 2] = (atoms_left[:, 0] == 0) & ~reading[:, 0] & ((dbe_left[:, 0] < 0.5) | ~allowed.any(1))
        allowed[:, 2] |= ~allowed.any(1)                                     # dead end: stop, filtered later
        return ~allowed

    def update(self, rows: list[_Row], tok: "torch.Tensor", active: "torch.Tensor") -> None:  # noqa: F821
        """Advance the ``active`` rows by their chosen token."""
        for i in active.nonzero().flatten().tolist():
            rows[i].step(int(tok[i]), self.info, self.col)


__all__ = ["FormulaConstraint", "TokenInfo", "formula_counts", "token_info", "unsaturation"]
