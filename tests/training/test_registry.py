"""Model registry: save/load round trip, listing, and the prediction API the evaluation calls."""
from __future__ import annotations

import numpy as np
import pytest

from speclake.training.data import load_examples
from speclake.training.registry import ModelNotFound, list_models, load_model, save_model

pytestmark = pytest.mark.ray


def _test_examples(lake):
    return load_examples(lake).table(["test", "validation"])


@pytest.mark.parametrize("arch", ["arch1", "arch2", "arch2-flat", "arch3"])
def test_descriptor_model_round_trip_predicts_same(arch, trained, sample_feature_lake):
    """Loaded, saved again under a new id and reloaded, a descriptor model gives identical probabilities."""
    lake, _ = sample_feature_lake
    result = trained(arch)
    model = load_model(lake, result.model_id)
    assert model.arch == arch and model.descriptor_names and model.split.train == 0.8
    examples = _test_examples(lake)
    p = model.predict_descriptors(examples)
    assert p.dtype == np.float32 and p.shape == (examples.num_rows, len(model.descriptor_names))
    assert ((p >= 0) & (p <= 1)).all()
    copy_id = f"{result.model_id}-copy"
    save_model(lake, copy_id, model.context, model.module.state_dict(), model.settings,
               {"settings": model.split.model_dump(), "spectra": {}, "structures": {}}, model.metrics)
    again = load_model(lake, copy_id)
    np.testing.assert_array_equal(again.predict_descriptors(examples), p)
    with pytest.raises(ValueError, match="does not embed"):
        model.embed_spectra(examples)


def test_embedding_models_give_unit_vectors(trained, sample_feature_lake):
    """arch4 embeds spectra, arch5 spectra and structures, all L2-normalised; arch4 refuses structures."""
    lake, _ = sample_feature_lake
    examples = _test_examples(lake)
    m4 = load_model(lake, trained("arch4").model_id)
    e4 = m4.embed_spectra(examples)
    assert e4.shape == (examples.num_rows, 16)
    np.testing.assert_allclose(np.linalg.norm(e4, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError):
        m4.embed_structures(["CCO"])
    m5 = load_model(lake, trained("arch5").model_id)
    np.testing.assert_allclose(np.linalg.norm(m5.embed_spectra(examples), axis=1), 1.0, atol=1e-5)
    s = m5.embed_structures(["CCO", "c1ccccc1O", "not smiles"])
    np.testing.assert_allclose(np.linalg.norm(s[:2], axis=1), 1.0, atol=1e-5)
    assert np.isnan(s[2]).all()


def test_list_and_missing_models(trained, sample_feature_lake):
    """list_models shows trained models with split counts; an unknown id raises ModelNotFound."""
    lake, _ = sample_feature_lake
    mid = trained("arch1").model_id
    listed = {m["model_id"]: m for m in list_models(lake)}
    assert listed[mid]["arch"] == "arch1" and listed[mid]["spectra"]["train"] > 0
    with pytest.raises(ModelNotFound):
        load_model(lake, "arch1-nope")
