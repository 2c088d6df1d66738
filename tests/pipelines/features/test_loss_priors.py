"""Tests of neutral-loss priors: the built-in table, compilation and fitting."""
import math

import numpy as np
import pytest

from speclake.pipelines.features.formula import parse_formula
from speclake.pipelines.features.loss_priors import (
    DEFAULT_LOSS_PRIORS,
    compile_loss_priors,
    default_loss_table,
    fit_loss_priors,
)


def test_default_table_scores_common_losses_above_unknown():
    """H2O scores 0, HCN (spelled CHN or HCN) its table value, an odd loss the unknown score."""
    t = default_loss_table()
    rows = np.vstack([parse_formula(f)[0] for f in ("H2O", "CHN", "C5H3P")])
    s = t.score(rows)
    assert s[0] == 0.0
    assert s[1] == DEFAULT_LOSS_PRIORS["HCN"]
    assert s[2] == t.unknown and t.unknown < min(DEFAULT_LOSS_PRIORS.values())


def test_compile_drops_bad_keys():
    """Unparsable or non-finite entries are dropped, not raised."""
    t = compile_loss_priors({"H2O": 0.0, "Xx2": -1.0, "CO": float("nan")})
    assert len(t) == 1


def test_fit_from_pairs_and_rows():
    """Counts from (parent, child) pairs and tree rows: most frequent loss 0, rarer negative, rare dropped."""
    pairs = [("C8H11N4O2+", "C6H8N3O+")] * 3 + [("C6H8N3O+", "C5H8N3+")] * 9
    rows = [{"edges": [{"parent": 0, "child": 1, "loss": "CO", "score": 1.0}]}]
    priors = fit_loss_priors(pairs + rows + [("C2", "C3")], min_count=2)
    assert priors["CO"] == 0.0
    assert priors["C2H3NO"] == pytest.approx(math.log(4 / 11))
    assert set(priors) == {"CO", "C2H3NO"}


def test_fit_empty_gives_empty_table():
    """No items (or all below min_count) give an empty dict."""
    assert fit_loss_priors([]) == {}
