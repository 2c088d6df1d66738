"""Association-rule filtering, pattern rows and overlap scores (pure parts of the pattern job)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from speclake.pipelines.features.patterns import (
    PatternMatrix,
    PatternSettings,
    keep_rule,
    load_pattern_matrix,
    overlap_batches,
    pattern_rows,
    rule_id,
)
from speclake.pipelines.features.tables import PATTERNS


def test_keep_rule_only_spectral_antecedents_to_one_substructure() -> None:
    """MESSAR rules: spectral items on the left (at most max_antecedent), exactly one substructure on the right."""
    s = PatternSettings(max_antecedent=2)
    assert keep_rule(["frag@91.05"], ["sub:benzyl"], s)
    assert not keep_rule(["frag@91.05", "sub:phenol"], ["sub:benzyl"], s), "substructure in antecedent"
    assert not keep_rule(["sub:phenol"], ["frag@91.05"], s), "spectral consequent"
    assert not keep_rule(["frag@91.05", "loss@18.01", "frag@65.04"], ["sub:benzyl"], s), "antecedent too long"


def test_rule_id_is_stable_and_order_free() -> None:
    """A rule's id depends on its items, not on their order."""
    assert rule_id(["frag@91.05", "loss@17.03"], "benzyl") == rule_id(["loss@17.03", "frag@91.05"], "benzyl")
    assert rule_id(["frag@91.05"], "benzyl") != rule_id(["frag@91.05"], "phenol")


def _rows() -> list[dict]:
    rules = [{"antecedent": ["frag@91.05", "loss@17.03"], "consequent": "benzyl", "support": 0.1,
              "confidence": 0.9, "lift": 3.0, "n_structures": 10}]
    motifs = [{"motif": 0, "words": ["frag@91.05", "frag@65.04"], "weights": [0.3, 0.1]}]
    return pattern_rows(rules, motifs, settings_hash="h", run_id="r")


def test_pattern_rows_number_rules_then_motifs() -> None:
    """Rules come first, then motifs; names are readable; rows fit the patterns schema."""
    rows = _rows()
    assert [r["pattern_index"] for r in rows] == [0, 1]
    assert rows[0]["name"] == "frag@91.05 + loss@17.03 -> benzyl"
    assert rows[1]["kind"] == "motif" and rows[1]["pattern_id"] == "motif:0"
    pa.Table.from_pylist(rows, schema=PATTERNS)


def test_overlap_hand_checked(tmp_path) -> None:
    """Overlap = weighted share of the pattern's items present: rule 1/2 (one of two), motif 0.3/0.4."""
    rows = _rows()
    m = PatternMatrix([r["items"] for r in rows], [r["item_weights"] for r in rows])
    np.testing.assert_allclose(m.overlap(["frag@91.05", "frag@120.08"]), [0.5, 0.75])
    np.testing.assert_allclose(m.overlap([]), [0.0, 0.0])
    path = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=PATTERNS), path)
    assert load_pattern_matrix(str(path)).n_patterns == 2
    batch = pa.RecordBatch.from_pylist([{"spectrum_id": "s", "items": ["loss@17.03", "frag@65.04"]}])
    out = pa.Table.from_batches(list(overlap_batches(iter([batch]), patterns_path=str(path)))).to_pylist()
    np.testing.assert_allclose(out[0]["pattern_overlap"], [0.5, 0.25], rtol=1e-6)
