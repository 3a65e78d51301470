"""analysis.windows: the closed-form intervals and curves of a logit bias, against steering by brute force."""

import re

import numpy as np
import pytest
import torch

from hookedmlp import ConfigError
from hookedmlp_analysis.curves import StepCurve
from hookedmlp_analysis.windows import Window, bias_curve, class_interval, keep_until, window


def _brute(logits, labels, v, a, b, cs):
    """Flip rate and collateral at each coefficient, by taking the argmax of ``logits + c v``."""
    base = logits.argmax(1)
    out = []
    for c in cs:
        pred = (logits + c * v).argmax(1)
        out.append(
            (
                float((pred[labels == b] == a).double().mean()),
                float((pred[labels != b] != base[labels != b]).double().mean()),
            )
        )
    return np.array(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_curve_is_the_argmax_of_every_coefficient(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(300, 6, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 6, (300,), generator=g)
    v = torch.randn(6, generator=g, dtype=torch.float64)
    curve = bias_curve(logits, labels, v, 2, 4)
    cs = np.linspace(0, 12, 4001)
    flip, coll = curve.at(cs)
    np.testing.assert_array_equal(np.stack([flip, coll], 1), _brute(logits, labels, v, 2, 4, cs))


def test_interval_ends_are_where_the_lines_cross():
    logits = torch.tensor([[2.0, 0.0, 1.0]])  # the lines 2, c and 1 + c / 2: all three meet at c = 2
    v = torch.tensor([[0.0, 1.0, 0.5]])
    assert [float(t[0]) for t in class_interval(logits, v, 0)] == [-float("inf"), 2.0]
    assert [float(t[0]) for t in class_interval(logits, v, 1)] == [2.0, float("inf")]
    assert [float(t[0]) for t in class_interval(logits, v, 2)] == [2.0, 2.0]  # on top at c = 2 only
    assert float(keep_until(logits, v)[0]) == 2.0
    assert float(keep_until(logits, torch.zeros(1, 3))[0]) == float("inf")  # no bias, no change


def test_a_class_of_equal_slope_and_height_that_comes_first_wins_the_tie():
    logits, v = torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([[1.0, 1.0, 0.0]])
    lo, hi = class_interval(logits, v, 1)
    assert float(lo[0]) > float(hi[0])  # empty: argmax picks class 0
    lo, hi = class_interval(logits, v, 0)
    assert (float(lo[0]), float(hi[0])) == (-1.0, float("inf"))


def test_the_window_is_where_both_levels_hold():
    curve = StepCurve(
        np.array([0.0, 1.0, 1.2, 1.5, 2.0]), np.array([0.0, 0.4, 0.6, 0.9, 1.0]), np.array([0, 0, 0.01, 0.04, 0.2])
    )
    assert window(curve, 0.5, 0.05) == Window(1.2, 2.0)
    assert window(curve, 0.5, 0.05).ratio == pytest.approx(2.0 / 1.2)
    assert window(curve, 0.95, 0.05).empty and np.isnan(window(curve, 0.95, 0.05).ratio)


@pytest.mark.parametrize(("flip", "collateral", "message"), [(1.0, 0.05, "flip"), (0.5, 0.0, "collateral")])
def test_levels_outside_0_1_are_refused(flip, collateral, message):
    curve = StepCurve(np.zeros(1), np.zeros(1), np.zeros(1))
    with pytest.raises(ConfigError, match=re.escape(f"{message} must be finite and in (0, 1), got")):
        window(curve, flip, collateral)
