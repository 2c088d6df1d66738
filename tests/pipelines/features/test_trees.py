"""Tree rows of single spectra and MSn groups (calls the fragtree solver), graph features, text and drawing."""
from __future__ import annotations

import pytest

from speclake.pipelines.features.fragtree import TreeParams
from speclake.pipelines.features.job import FeaturesSettings
from speclake.pipelines.features.loss_priors import default_loss_table
from speclake.pipelines.features.tables import TREE_FEATURE_NAMES
from speclake.pipelines.features.treeview import draw_tree, format_tree, layout
from speclake.pipelines.features.trees import TreeSettings, tree_features, trees_for_group
from tests.pipelines.features.lakes import COMPOUNDS_SPEC, compound_spectra, msn_spectra

HAND_TREE = {
    "precursor_formula": "C9H11NO2", "adduct": "[M+H]+", "score": 6.0, "explained_intensity": 0.9,
    "nodes": [{"mz": 166.0863, "formula": "C9H12NO2+", "intensity": 0.2, "ppm_error": 1.0, "ms_level": 2},
              {"mz": 120.0808, "formula": "C8H10N+", "intensity": 1.0, "ppm_error": -2.0, "ms_level": 2},
              {"mz": 103.0542, "formula": "C8H7+", "intensity": 0.3, "ppm_error": 0.0, "ms_level": 2},
              {"mz": 91.0542, "formula": "C7H7+", "intensity": 0.25, "ppm_error": 1.0, "ms_level": 3}],
    "edges": [{"parent": 0, "child": 1, "loss": "CH2O2", "score": 3.0},
              {"parent": 1, "child": 2, "loss": "NH3", "score": 2.0},
              {"parent": 1, "child": 3, "loss": "CH3N", "score": 1.0}],
}


def test_tree_features_hand_checked() -> None:
    """4 nodes, 3 edges, depth 2, 2 leaves, branching 2, mean |ppm| of fragments 1, two MS levels."""
    f = dict(zip(TREE_FEATURE_NAMES, tree_features(HAND_TREE)))
    assert f == {"n_nodes": 4, "n_edges": 3, "depth": 2, "n_leaves": 2, "max_out_degree": 2,
                 "explained_intensity": 0.9, "score": 6.0, "score_per_node": 1.5, "mean_abs_ppm": 1.0,
                 "n_ms_levels": 2}


def test_format_tree_indents_children_with_losses() -> None:
    """Text shows the precursor first and each fragment under its parent with the loss on the edge."""
    text = format_tree(HAND_TREE)
    lines = text.splitlines()
    assert lines[1].startswith("C9H12NO2+  m/z 166.0863")
    assert "└─ -CH2O2 → C8H10N+  m/z 120.0808" in lines[2]
    assert "-NH3 → C8H7+" in text and "MS3" in lines[-1]


def test_layout_and_drawing(tmp_path) -> None:
    """Parents sit above and between their children; the PNG file is written."""
    pos = layout(HAND_TREE)
    assert pos[0][1] == 0 and pos[2][1] == -2 and pos[1][0] == pytest.approx((pos[2][0] + pos[3][0]) / 2)
    out = tmp_path / "tree.png"
    draw_tree(HAND_TREE, out)
    assert out.stat().st_size > 1000


def _rows_with_formula(rows: list[dict]) -> list[dict]:
    formula = COMPOUNDS_SPEC["phenylalanine"][1]
    return [{**r, "formula": formula if r.get("inchikey") else None, "tree_group": "g"} for r in rows]


def test_phenylalanine_tree_explains_tropylium() -> None:
    """The MS2 tree of phenylalanine [M+H]+ explains m/z 120.08 as C8H10N+ and 91.05 as C7H7+."""
    row = _rows_with_formula(compound_spectra("phenylalanine", 1, seed=0))[0]
    out = trees_for_group([row], TreeSettings(), default_loss_table())
    assert len(out) == 1 and out[0]["kind"] == "tree", out
    formulas = {n["formula"] for n in out[0]["nodes"]}
    assert {"C8H10N+", "C7H7+"} <= formulas, formulas
    assert out[0]["max_ms_level"] == 2 and len(out[0]["tree_features"]) == len(TREE_FEATURE_NAMES)


def test_msn_group_links_ms3_into_the_ms2_tree() -> None:
    """MS2 + MS3 of one precursor: one tree on the MS2 spectrum with MS3 nodes; the MS3 row is recorded as linked."""
    rows = _rows_with_formula(compound_spectra("phenylalanine", 2, seed=0) + msn_spectra())
    out = trees_for_group(rows, TreeSettings(), default_loss_table())
    kinds = {r["spectrum_id"]: (r["kind"], r.get("skip_code")) for r in out}
    assert kinds["phe-ms3"] == ("skip", "linked_into_msn_tree")
    msn = [r for r in out if r["kind"] == "tree" and r["linked_spectrum_ids"]]
    assert len(msn) == 1 and msn[0]["linked_spectrum_ids"] == ["phe-ms3"]
    assert msn[0]["max_ms_level"] == 3, [n["formula"] for n in msn[0]["nodes"]]


def test_unannotated_and_orphan_msn_are_skipped() -> None:
    """No structure: 'unannotated'; an MS3 spectrum without its MS2: 'msn_without_ms2'."""
    row = {**compound_spectra("phenylalanine", 1, seed=0)[0], "inchikey": None, "formula": None, "tree_group": "x"}
    assert trees_for_group([row], TreeSettings(), default_loss_table())[0]["skip_code"] == "unannotated"
    orphan = _rows_with_formula(msn_spectra())
    assert trees_for_group(orphan, TreeSettings(), default_loss_table())[0]["skip_code"] == "msn_without_ms2"


@pytest.mark.parametrize("field,value", [("max_peaks", 100), ("noise_level", 0.01), ("sigma_ratio", 3.0),
                                         ("radical_penalty", -2.0), ("max_decomposition_candidates", 5000)])
def test_every_tree_constant_is_in_the_features_settings_hash(field, value):
    """Changing one scoring constant of the trees changes FeaturesSettings().settings_hash()."""
    base = FeaturesSettings()
    changed = FeaturesSettings(trees=TreeSettings(scoring=TreeParams(**{field: value})))
    assert changed.settings_hash() != base.settings_hash(), f"trees.scoring.{field} must change the hash"


def test_tree_settings_default_to_sixty_peaks_and_refuse_unknown_keys():
    """The one max_peaks default is 60 (what the lake's trees used); unknown scoring keys are refused."""
    assert TreeSettings().scoring.max_peaks == 60 == TreeParams().max_peaks
    with pytest.raises(ValueError, match="extra"):
        TreeSettings.model_validate({"scoring": {"max_peak": 10}})
