"""Selectivity: the coefficient search returns what a brute-force sweep of plain steered passes finds."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hookedmlp import ConfigError, HookedMLP
from hookedmlp_analysis.selectivity import FLIP, KEEP, Selectivity, off_diagonal_pairs, selectivity

N_CLASSES = 3


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, N_CLASSES))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(90, 6, generator=g)
    y = x[:, :N_CLASSES].argmax(-1)  # a learnable problem, so accuracy on the other classes is meaningful
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return HookedMLP.from_module(net).eval(), (x, y)


def _brute_force(model, data, hook, pairs, coeffs):
    """Per pair: the smallest coefficient whose plain steered pass meets both criteria (None if none does)."""
    x, y = data
    best = []
    for a, b in pairs:
        vec = model.steering_vector(a, b, hook, data=data)
        base = model(x)
        other = y != b
        base_acc = (base.argmax(-1)[other] == y[other]).float().mean()
        found = None
        for c in sorted(coeffs):
            with model.steer(vec, coeff=c):
                pred = model(x).argmax(-1)
            flip = (pred[y == b] == a).float().mean()
            acc = (pred[other] == y[other]).float().mean()
            if flip >= FLIP and acc >= KEEP * base_acc:
                found = c
                break
        best.append(found)
    return best


@pytest.mark.parametrize("hook", ["layer0.post", "layer1.post", "layer2.pre"])
def test_search_finds_the_brute_force_coefficient(setup, hook):
    model, data = setup
    pairs = off_diagonal_pairs(range(N_CLASSES))
    coeffs = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
    sel = selectivity(model, [hook], coeffs, data=data, test=data)[hook]
    assert isinstance(sel, Selectivity) and sel.pairs == pairs
    assert sel.best_coeff == _brute_force(model, data, hook, pairs, coeffs)
    assert len({c for c in sel.best_coeff}) > 1  # the search has something to find
    assert sel.share == sum(c is not None for c in sel.best_coeff) / len(pairs)


def test_metrics_by_name_and_at(setup):
    model, data = setup
    sel = selectivity(model, ["layer0.post"], [1.0, 2.0], data=data, test=data)["layer0.post"]
    assert sel.flip_rate.shape == (6, 2) and sel.metrics["loss"].shape == (6, 2)
    assert sel.at(2.0)["flip_rate"] == pytest.approx(float(sel.flip_rate[:, 1].mean()))


@pytest.mark.parametrize("coeffs", [[], [0.0, 1.0], [-1.0]])
def test_coefficients_must_be_positive(setup, coeffs):
    model, data = setup
    with pytest.raises(ConfigError, match="positive coefficients"):
        selectivity(model, ["layer0.post"], coeffs, data=data, test=data)
