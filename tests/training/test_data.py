"""Examples from the lake: structure-disjoint splits, the required columns, the descriptor space."""
from __future__ import annotations

import pyarrow.compute as pc

from speclake.training.data import EXAMPLE_COLUMNS, fit_descriptor_space, load_examples
from speclake.training.encoding import DescriptorSettings
from speclake.training.split import SplitSettings


def test_splits_share_no_inchikey14(sample_feature_lake):
    """No InChIKey-14 occurs in two of train/validation/test, and every split is non-empty on the sample."""
    lake, _ = sample_feature_lake
    ex = load_examples(lake, SplitSettings(train=0.6, validation=0.2, test=0.2))
    tab = ex.table(columns=["inchikey14", "split"])
    keys = {s: set(tab.filter(pc.equal(tab["split"], s))["inchikey14"].to_pylist()) for s in ex.counts}
    assert all(keys[s] for s in keys), keys
    assert not keys["train"] & keys["validation"]
    assert not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]
    assert sum(ex.counts.values()) == tab.num_rows
    assert ex.structures == {s: len(k) for s, k in keys.items()}


def test_examples_have_structure_columns_and_ms2_only(sample_feature_lake):
    """Every example is an MS2 spectrum with SMILES, InChIKey-14, peaks and its feature blocks."""
    lake, _ = sample_feature_lake
    ex = load_examples(lake)
    tab = ex.table()
    assert tuple(tab.column_names) == EXAMPLE_COLUMNS
    assert tab.num_rows > 100
    assert tab["smiles"].null_count == 0 and tab["inchikey14"].null_count == 0
    assert all(len(k) == 14 for k in tab["inchikey14"].to_pylist())
    assert ex.block_dims["spec2vec"] > 0 and ex.block_dims["refsim_cosine"] > 0
    assert tab["morgan_on"].null_count < tab.num_rows // 2


def test_examples_cache_is_reused_and_streams_to_ray_data(sample_feature_lake, ray_session):
    """A second load reuses the same cache folder; the Ray Data dataset of a split counts the same rows."""
    lake, _ = sample_feature_lake
    a, b = load_examples(lake), load_examples(lake)
    assert a.path == b.path and a.counts == b.counts
    assert a.dataset("validation").count() == a.counts["validation"]


def test_descriptor_space_fitted_on_training_structures_only(sample_feature_lake):
    """Descriptors are counted over training structures: min_positives above their number leaves none."""
    lake, _ = sample_feature_lake
    ex = load_examples(lake)
    space = fit_descriptor_space(ex, DescriptorSettings(min_positives=3))
    assert len(space) > 10
    assert len(fit_descriptor_space(ex, DescriptorSettings(min_positives=ex.structures["train"] + 1))) == 0
