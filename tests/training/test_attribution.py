"""Integrated gradients in torch, checked by hand on linear and small non-linear models."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from speclake.training.attribution import (explain_example, integrated_gradients, peak_attributions,
                                           plot_attribution)
from speclake.training.encoding import BinSettings


def test_linear_model_attribution_is_input_times_weight():
    w = torch.tensor([0.5, -2.0, 0.0, 3.0])
    f = lambda x: x @ w + 1.0
    x = torch.tensor([1.0, 0.5, 2.0, 0.25])
    attr, delta = integrated_gradients(f, x, steps=4)
    assert attr.tolist() == pytest.approx([0.5, -1.0, 0.0, 0.75])
    assert abs(delta) < 1e-6
    base = torch.tensor([1.0, 0.0, 0.0, 0.0])
    attr_b, _ = integrated_gradients(f, x, base, steps=2)
    assert attr_b.tolist() == pytest.approx([0.0, -1.0, 0.0, 0.75])


def test_completeness_for_a_nonlinear_model():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))
    f = lambda x: net(x)[:, 0]
    x = torch.rand(6)
    attr, delta = integrated_gradients(f, x, steps=256, batch=50)
    with torch.no_grad():
        gap = float(f(x[None])[0] - f(torch.zeros(1, 6))[0])
    assert float(attr.sum()) == pytest.approx(gap, abs=1e-3)
    assert abs(delta) < 1e-3


def test_quadratic_attribution_by_hand():
    # f(x) = x0 * x1: IG from 0 gives x0*x1/2 to each input
    f = lambda x: x[:, 0] * x[:, 1]
    attr, delta = integrated_gradients(f, torch.tensor([2.0, 3.0]), steps=100)
    assert attr.tolist() == pytest.approx([3.0, 3.0], abs=1e-3)
    assert abs(delta) < 1e-3


def test_rejects_bad_inputs():
    with pytest.raises(ValueError):
        integrated_gradients(lambda x: x.sum(1), torch.zeros(2, 2))
    with pytest.raises(ValueError):
        integrated_gradients(lambda x: x.sum(1), torch.zeros(3), torch.zeros(2))


def test_peak_attributions_go_to_the_strongest_peak_of_a_bin():
    bins = BinSettings(bin_width=1.0, max_mz=10.0)
    bin_attr = np.zeros(10)
    bin_attr[3], bin_attr[7] = 0.4, -0.2
    got = peak_attributions(np.array([3.2, 3.7, 7.1, 12.0]), np.array([0.5, 1.0, 0.3, 1.0]), bins, bin_attr)
    assert got.tolist() == pytest.approx([0.0, 0.4, -0.2, 0.0])


def test_explain_example_with_a_linear_descriptor_model(tmp_path):
    bins = BinSettings(bin_width=1.0, max_mz=200.0)
    lin = torch.nn.Linear(bins.n_bins, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.fill_(-1.0)
        lin.weight[1, 77] = 2.0
        lin.weight[1, 105] = -1.0
    model = SimpleNamespace(model_id="toy", arch="arch1", descriptor_names=["maccs:1", "maccs:2"], module=lin,
                            context=SimpleNamespace(bin_settings=bins), device="cpu")
    example = {"spectrum_id": "s1", "mz": [77.04, 105.03, 150.0], "intensities": [1.0, 0.25, 0.5]}
    expl = explain_example(model, example, "maccs:2", steps=8)
    assert expl.attributions.tolist() == pytest.approx([2.0, -0.5, 0.0])  # sqrt(0.25) * -1
    assert expl.logit == pytest.approx(0.5) and expl.baseline_logit == pytest.approx(-1.0)
    assert expl.top_peaks(1)[0][0] == pytest.approx(77.04)
    png = plot_attribution(expl, tmp_path / "a.png")
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="does not predict"):
        explain_example(model, example, "maccs:3")
