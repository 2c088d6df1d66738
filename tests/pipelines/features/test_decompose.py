"""Tests of mass decomposition and sub-formula candidates."""
import numpy as np
import pytest

from speclake.pipelines.features.decompose import (
    FormulaRules,
    TooManyCandidates,
    decompose_mass,
    formula_prior,
    passes_rules,
    subformula_candidates,
    subformula_grid,
)
from speclake.pipelines.features.formula import ELECTRON_MASS, MONO_MASS, format_formula, parse_formula, rdbe


@pytest.mark.parametrize("formula", ["C8H10N4O2", "C10H9N3O", "C17H19NO3", "C9H8ClNO", "C27H30O16", "C6H6O6S"])
def test_decomposition_finds_known_formula_and_all_within_tolerance(formula):
    """The true formula is among the candidates, and every candidate lies within the tolerance."""
    mass = float(parse_formula(formula)[0] @ MONO_MASS)
    tol = mass * 5e-6
    out, err = decompose_mass(mass, tol)
    names = [format_formula(x) for x in out]
    assert formula in names
    assert np.all(np.abs(out @ MONO_MASS - mass) <= tol + 1e-9)
    assert np.allclose(out @ MONO_MASS - mass, err)
    assert np.all(np.diff(np.abs(err)) >= -1e-12)  # sorted by |error|


def test_decomposition_obeys_rules_and_parity():
    """Every returned neutral formula has integer RDBE >= 0 and passes the golden-rule filter."""
    out, _ = decompose_mass(300.1, 300.1 * 10e-6)
    assert len(out) > 10
    r = rdbe(out)
    assert np.all(r >= 0) and np.all(r == np.floor(r))
    assert passes_rules(out, FormulaRules(), "integer", 0.0).all()
    assert all((x[6:10] > 0).sum() <= 1 for x in out)  # one halogen type by default


def test_decomposition_half_parity_for_even_electron_ions():
    """With rdbe_parity='half' only even-electron ion formulas come back (caffeine [M+H]+ atoms)."""
    ion = parse_formula("C8H11N4O2")[0]
    out, _ = decompose_mass(float(ion @ MONO_MASS), 0.001, rdbe_parity="half", min_rdbe=-0.5)
    assert "C8H11N4O2" in [format_formula(x) for x in out]
    assert np.all(rdbe(out) % 1 == 0.5)


def test_decomposition_grid_limit_raises():
    """An over-large grid raises TooManyCandidates (callers turn it into a Skipped)."""
    with pytest.raises(TooManyCandidates):
        decompose_mass(900.0, 0.01, rules=FormulaRules(max_halogen_types=4), max_grid=1000)


def test_subformula_candidates_caffeine_fragments():
    """138.0662 -> C6H8N3O+ and 110.0713 -> C5H8N3+ are sub-formulas of C8H11N4O2+ within 5 ppm."""
    ion = parse_formula("C8H11N4O2")[0]
    mz = np.array([138.0662, 110.0713])
    pk, forms, err = subformula_candidates(ion, mz + ELECTRON_MASS, mz * 5e-6)
    got = {(int(p), format_formula(f, 1)) for p, f in zip(pk, forms)}
    assert (0, "C6H8N3O+") in got and (1, "C5H8N3+") in got
    assert np.all(forms <= ion) and np.all(np.abs(err) <= mz[pk] * 5e-6)
    assert np.all(rdbe(forms) >= -0.5)


def test_subformula_grid_cached_and_complete():
    """The non-H grid of C2H4O2 has 3*3 rows and is cached by formula."""
    counts = tuple(int(x) for x in parse_formula("C2H4O2")[0])
    g = subformula_grid(counts)
    assert g.heavy.shape[0] == 9 and g.max_h == 4
    assert subformula_grid(counts) is g


def test_formula_prior_penalises_halogens_and_phosphorus():
    """Plain CHNO formulas score above the same-size formula with Cl or P."""
    p = formula_prior(np.vstack([parse_formula(f)[0] for f in ("C8H10N4O2", "C8H9ClN4O2", "C8H11N4O2P")]))
    assert p[0] > p[1] and p[0] > p[2]
