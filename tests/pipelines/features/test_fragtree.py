"""Tests of fragmentation trees, precursor-formula ranking and MSn linking."""
import gzip
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from speclake.pipelines.features.formula import parse_formula
from speclake.pipelines.features.fragtree import (
    FRAGTREE_TYPE,
    FragTree,
    Skipped,
    compute_tree,
)
from speclake.pipelines.features.msn import link_msn
from speclake.pipelines.features.precursor_formula import rank_precursor_formulas

CAFFEINE_MZ = [110.0713, 138.0662, 195.0877]
CAFFEINE_INT = [20.0, 100.0, 50.0]
# MassBank Eawag record of Metamitron-desamino, [M+H]+ of C10H9N3O (188.0818)
METAMITRON_MZ = [77.0385, 104.0495, 119.0604, 160.0871, 188.0818]
METAMITRON_INT = [120.0, 260.0, 180.0, 999.0, 650.0]
DATA = Path("/work/shared/data/massbank")


def _by_mz(tree: FragTree) -> dict[float, str]:
    return {round(n.mz, 4): n.formula for n in tree.nodes}


def test_caffeine_tree_hand_checked():
    """Protonated caffeine: root C8H11N4O2+, 138.0662 C6H8N3O+, 110.0713 C5H8N3+ (138 -> 110 by CO)."""
    tree = compute_tree("C8H10N4O2", "[M+H]+", CAFFEINE_MZ, CAFFEINE_INT, precursor_mz=195.0877, tolerance=10)
    assert isinstance(tree, FragTree)
    assert tree.ion_formula == "C8H11N4O2+" and tree.nodes[0].formula == "C8H11N4O2+"
    assert _by_mz(tree) == {195.0877: "C8H11N4O2+", 138.0662: "C6H8N3O+", 110.0713: "C5H8N3+"}
    losses = {(tree.nodes[e.parent].formula, tree.nodes[e.child].formula): e.loss for e in tree.edges}
    assert losses[("C6H8N3O+", "C5H8N3+")] == "CO"
    assert tree.explained_intensity == pytest.approx(1.0)
    assert all(abs(n.ppm_error) < 1.0 for n in tree.nodes)
    assert tree.score == pytest.approx(sum(e.score for e in tree.edges))


def test_metamitron_desamino_matches_massbank_annotation():
    """Eawag record: 77.0385 C6H5+, 104.0495 C7H6N+, 119.0604 C7H7N2+, 160.0871 C9H10N3+ as annotated."""
    tree = compute_tree("C10H9N3O", "[M+H]+", METAMITRON_MZ, METAMITRON_INT, instrument_type="LC-ESI-QFT")
    got = _by_mz(tree)
    assert got[77.0385] == "C6H5+" and got[104.0495] == "C7H6N+"
    assert got[119.0604] == "C7H7N2+" and got[160.0871] == "C9H10N3+"
    for e in tree.edges:  # every edge is a proper sub-formula step labelled with its loss
        parent, child = parse_formula(tree.nodes[e.parent].formula)[0], parse_formula(tree.nodes[e.child].formula)[0]
        assert np.all(child <= parent) and e.loss


def test_tree_is_colorful_and_rooted():
    """Each peak appears at most once, every non-root node has exactly one parent, parents are heavier."""
    tree = compute_tree("C10H9N3O", "[M+H]+", METAMITRON_MZ, METAMITRON_INT, tolerance=20)
    mzs = [n.mz for n in tree.nodes]
    assert len(set(mzs)) == len(mzs)
    children = [e.child for e in tree.edges]
    assert sorted(children) == list(range(1, len(tree.nodes)))
    assert all(tree.nodes[e.parent].mz > tree.nodes[e.child].mz for e in tree.edges)


def test_negative_mode_and_sodium_adduct():
    """[M-H]- ion formulas end in '-', [M+Na]+ ones keep Na; m/z consistent with the electron mass."""
    # 4-hydroxybenzoic acid C7H6O3 [M-H]- 137.0244, loss of CO2 -> C6H5O- 93.0346
    neg = compute_tree("C7H6O3", "[M-H]-", [93.0346, 137.0244], [100, 40], tolerance=10)
    assert _by_mz(neg) == {137.0244: "C7H5O3-", 93.0346: "C6H5O-"}
    assert neg.edges[0].loss == "CO2"
    # glucose [M+Na]+ 203.0526, loss of H2O -> C6H10NaO5+ 185.0420
    na = compute_tree("C6H12O6", "[M+Na]+", [185.0420, 203.0526], [30, 100], tolerance=10)
    assert _by_mz(na)[185.042] == "C6H10NaO5+"


def test_nh4_and_intrinsic_cation():
    """[M+NH4]+ adds NH4; [M]+ with a charged formula ([C5H14NO]+ choline) uses it as is."""
    t = compute_tree("C6H12O6", "[M+NH4]+", [163.0601, 198.0972], [100, 30], tolerance=10)
    assert t.ion_formula == "C6H16NO6+" and _by_mz(t)[163.0601] == "C6H11O5+"
    ch = compute_tree("[C5H14NO]+", "[M]+", [60.0808, 104.1070], [100, 20], tolerance=10)
    assert ch.ion_formula == "C5H14NO+" and _by_mz(ch)[60.0808] == "C3H10N+"


def test_to_row_fits_arrow_type():
    """to_row() gives plain python types that Arrow converts with FRAGTREE_TYPE."""
    tree = compute_tree("C8H10N4O2", "[M+H]+", CAFFEINE_MZ, CAFFEINE_INT, tolerance=10)
    row = tree.to_row()
    arr = pa.array([row], type=FRAGTREE_TYPE)
    assert arr[0]["nodes"][1]["formula"].as_py() in {"C6H8N3O+", "C5H8N3+"}
    assert isinstance(row["edges"][0]["parent"], int)


@pytest.mark.parametrize("kwargs,code", [
    (dict(instrument_type="LC-ESI-IT"), "low_resolution"),
    (dict(mz=[77.0, 105.1, 195.1], intensities=[1, 2, 3], tolerance=10), "low_resolution"),
    (dict(mz=[195.0877], intensities=[1.0], tolerance=10), "too_few_peaks"),
    (dict(formula=None, tolerance=10), "missing_formula"),
    (dict(adduct="[M+2H]2+", tolerance=10), "unsupported_adduct"),
    (dict(adduct=None, tolerance=10), "missing_adduct"),
    (dict(formula="C8H10N4O2Hg", tolerance=10), "unsupported_element"),
    (dict(precursor_mz=250.0, tolerance=10), "precursor_mismatch"),
    (dict(mz=[1.0, 2.0, float("nan")], intensities=[1, 2], tolerance=10), "invalid_peaks"),
])
def test_bad_inputs_give_skipped(kwargs, code):
    """Unusable inputs return Skipped with the expected reason code instead of raising."""
    args = dict(formula="C8H10N4O2", adduct="[M+H]+", mz=CAFFEINE_MZ, intensities=CAFFEINE_INT)
    args.update(kwargs)
    res = compute_tree(args.pop("formula"), args.pop("adduct"), args.pop("mz"), args.pop("intensities"), **args)
    assert isinstance(res, Skipped) and res.reason_code == code, res
    assert res.to_row()["skip_reason_code"] == code


def test_rank_precursor_formulas_caffeine_and_metamitron():
    """With the formula hidden, caffeine and Metamitron-desamino rank their true formula first."""
    ranked = rank_precursor_formulas(195.0877, "[M+H]+", CAFFEINE_MZ, CAFFEINE_INT, 10)
    assert ranked[0][0] == "C8H10N4O2"
    ranked = rank_precursor_formulas(188.0818, "[M+H]+", METAMITRON_MZ, METAMITRON_INT, 10, top_k=20)
    assert ranked[0][0] == "C10H9N3O" and len(ranked) <= 20
    assert all(math.isfinite(s) for _, s in ranked)


@pytest.mark.parametrize("args,code", [
    ((None, "[M+H]+", CAFFEINE_MZ, CAFFEINE_INT, 10), "missing_precursor"),
    ((1500.2, "[M+H]+", CAFFEINE_MZ, CAFFEINE_INT, 10), "precursor_too_heavy"),
    ((195.0877, "[M+H]+", [195.0877], [1.0], 10), "too_few_peaks"),
    ((195.0877, "[M+H]+", [110.0, 138.0, 195.0], CAFFEINE_INT, 10), "low_resolution"),
])
def test_rank_bad_inputs_give_skipped(args, code):
    """The ranking returns Skipped for missing/too heavy precursors and unusable spectra."""
    res = rank_precursor_formulas(*args)
    assert isinstance(res, Skipped) and res.reason_code == code


def test_link_msn_hangs_ms3_under_ms2_node():
    """An MS3 of caffeine's 138.0662 fragment hangs its 110.0713 node under the MS2 node 138.0662."""
    base = dict(formula="C8H10N4O2", adduct="[M+H]+", instrument_type="LC-ESI-ITFT")
    ms2 = dict(base, ms_level=2, precursor_mz=195.0877, precursor_mz_chain=[195.0877],
               mz=[138.0662, 195.0877], intensities=[100.0, 30.0])
    ms3 = dict(base, ms_level=3, precursor_mz=195.0877, precursor_mz_chain=[195.0877, 138.07],
               mz=[110.0713, 138.0662], intensities=[100.0, 10.0])
    tree = link_msn([ms3, ms2])
    assert isinstance(tree, FragTree)
    levels = {(round(n.mz, 4), n.ms_level): n.formula for n in tree.nodes}
    assert levels[(110.0713, 3)] == "C5H8N3+"
    ms3_node = next(i for i, n in enumerate(tree.nodes) if n.ms_level == 3)
    parent = next(e.parent for e in tree.edges if e.child == ms3_node)
    assert tree.nodes[parent].formula == "C6H8N3O+" and tree.nodes[parent].ms_level == 2


def test_link_msn_without_ms2_is_skipped():
    """Rows without an MS2 spectrum give Skipped('missing_ms2')."""
    res = link_msn([dict(ms_level=3, mz=[1.0], intensities=[1.0])])
    assert isinstance(res, Skipped) and res.reason_code == "missing_ms2"


def _load_checker():
    path = Path(__file__).resolve().parents[3] / "benchmarks" / "fragtree_check.py"
    spec = importlib.util.spec_from_file_location("fragtree_check", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve their module by name
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.shared
@pytest.mark.skipif(not DATA.is_dir(), reason="needs /work/shared/data/massbank")
def test_real_massbank_records_agree_with_annotations():
    """~100 annotated Eawag records: no exception, and >= 85% of annotated fragments the tree explains agree."""
    fc = _load_checker()
    with gzip.open(DATA / "Eawag.txt.gz", "rt", encoding="utf-8", errors="replace") as fh:
        recs = [r for r in fc.parse_records(fh) if fc.eligible(r) and r.annotations][:100]
    trees = []
    for r in recs:
        res = compute_tree(r.formula, r.adduct, r.mz, r.intensities, precursor_mz=r.precursor_mz,
                           instrument_type=r.instrument_type)
        assert isinstance(res, (FragTree, Skipped))
        if isinstance(res, FragTree):
            trees.append((r, res))
    assert len(trees) >= 90
    st = fc.check_annotations(trees)
    assert st["equal"] / (st["equal"] + st["other_formula"]) >= 0.85
    assert st["equal"] / st["annotated"] >= 0.4
