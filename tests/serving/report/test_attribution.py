"""Per-peak attributions of a candidate's model evidence: integrated gradients of the descriptor
log-likelihood, mapped to peaks; which models a ranker uses; the SVG of the attributions.

The model is a real torch descriptor model (one linear layer, weights set by hand so the expected signs
are known), in the shape the registry loads (``module``, ``context.bin_settings``, ``descriptor_names``),
as tests/training/test_attribution.py builds it; training one under Ray would not fit the test budget.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import numpy as np
import pytest

from speclake.serving.report.attribution import (Attributor, PeakAttribution, candidate_descriptors,
                                                 explain_candidate, ranker_models)
from speclake.serving.report.svg import attribution_svg

CAFFEINE = "Cn1c(=O)c2c(ncn2C)n(C)c1=O"
MZ = [42.0338, 110.0713, 138.0662, 195.0877]
INTENSITIES = [5.0, 20.0, 100.0, 40.0]
MACCS = [f"maccs:{i}" for i in range(1, 167)]


@pytest.fixture(scope="module")
def model():
    """Descriptor 'on' (a MACCS key caffeine has) rises with the 138 bin, 'off' (one it lacks) with the 110 bin."""
    import torch

    from speclake.training.encoding import BinSettings

    y, mask = candidate_descriptors(CAFFEINE, MACCS)
    on, off = int(np.flatnonzero(y == 1)[0]), int(np.flatnonzero(y == 0)[0])
    bins = BinSettings(bin_width=1.0, max_mz=200.0)
    lin = torch.nn.Linear(bins.n_bins, len(MACCS))
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        lin.weight[on, 138] = 3.0
        lin.weight[off, 110] = 3.0
    return SimpleNamespace(model_id="toy", arch="arch1", descriptor_names=MACCS, module=lin,
                           context=SimpleNamespace(bin_settings=bins), device="cpu")


def test_peaks_supporting_the_structure_get_positive_attribution(model):
    """138.0662 predicts a key caffeine has (+), 110.0713 one it lacks (-); the others 0; complete."""
    y, mask = candidate_descriptors(CAFFEINE, MACCS)
    result = explain_candidate(model, MZ, INTENSITIES, y, mask, steps=64)
    assert isinstance(result, PeakAttribution)
    a = dict(zip(MZ, result.attributions))
    assert a[138.0662] > 0.1 and a[110.0713] < -0.1
    assert a[42.0338] == 0 and a[195.0877] == 0
    assert abs(result.delta) < 1e-2, "attributions sum to LL(spectrum) - LL(empty spectrum)"
    assert result.attributions.sum() == pytest.approx(result.value - result.baseline, abs=1e-2)
    assert [m for m, _ in result.top(2)] == sorted([138.0662, 110.0713], key=lambda m: -abs(a[m]))


def test_refuses_models_and_inputs_it_cannot_explain(model):
    """A joint-embedding model or a descriptor vector of the wrong length is a clear error; bad SMILES: None."""
    y, mask = candidate_descriptors(CAFFEINE, MACCS)
    with pytest.raises(ValueError, match="not explained"):
        explain_candidate(SimpleNamespace(**{**vars(model), "arch": "arch5"}), MZ, INTENSITIES, y, mask)
    with pytest.raises(ValueError, match="do not match"):
        explain_candidate(model, MZ, INTENSITIES, y[:10], mask[:10])
    assert candidate_descriptors("C1CC(", MACCS) is None


def test_ranker_models_and_the_note_without_models(tmp_path):
    """Models come from a fitted ranker's fusion features; library+prior and unknown rankers have none."""
    from speclake.serving.annotate.fusion import LinearFusion
    from speclake.serving.annotate.rankers import rankers_root

    fusion = LinearFusion(("prior", "model:arch1-x"), np.zeros(2), np.ones(2), np.array([1.0, 0.5]))
    folder = rankers_root(tmp_path) / "r1"
    folder.mkdir(parents=True)
    (folder / "weights.json").write_text(json.dumps(fusion.to_dict()))
    assert ranker_models(tmp_path, "r1") == ["arch1-x"]
    assert ranker_models(tmp_path, "library+prior") == [] and ranker_models(tmp_path, "gone") == []
    attributor = Attributor(tmp_path, "library+prior")
    got, note = attributor.explain(MZ, INTENSITIES, CAFFEINE)
    assert got is None and "uses no model" in note


def test_attribution_svg_draws_signed_sticks():
    """Positive attributions point up in red, negative down in blue, zero ones are not drawn."""
    svg = attribution_svg(MZ, [0.0, -0.4, 1.2, 0.0], label="<model>")
    root = ET.fromstring(svg)
    lines = [e for e in root.iter("{http://www.w3.org/2000/svg}line") if "attr" in (e.get("class") or "")]
    assert sorted(e.get("class") for e in lines) == ["attr neg", "attr pos"]
    for e in lines:
        up = float(e.get("y2")) < float(e.get("y1"))
        assert up == (e.get("class") == "attr pos")
    assert "&lt;model&gt;" in svg
