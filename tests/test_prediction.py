"""analysis.bootstrap and analysis.prediction on synthetic rows where the answer is known."""

import numpy as np
import pytest
from scipy import stats

from hookedmlp import ConfigError, UsageError
from hookedmlp_analysis.bootstrap import Nested, bootstrap_p, holm, ranks, spearman
from hookedmlp_analysis.prediction import heldout_r2, prediction_r2, property_correlations, variant_differences


def _rows(effects: dict[str, float], seeds: int = 3, pairs: int = 6, noise: float = 0.1, rng_seed: int = 0) -> list:
    """Rows with score ``2 * exact``, ``shifted`` = the variant's effect + noise, ``noise`` unrelated to either."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for v, effect in effects.items():
        for s in range(seeds):
            seed_shift = rng.normal(0, noise)
            for p in range(pairs):
                exact = rng.normal()
                for site in ("x", "y"):
                    rows.append(
                        {
                            "variant": v,
                            "seed": s,
                            "a": p,
                            "b": p + 1,
                            "site": site,
                            "exact": exact,
                            "noise": rng.normal(),
                            "score": 2 * exact,
                            "shifted": effect + seed_shift + rng.normal(0, noise),
                        }
                    )
    return rows


def test_ranks_spearman_and_holm_against_scipy_and_by_hand():
    x = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0])
    y = np.array([2.0, 7.0, 1.0, 8.0, 2.0, 8.0, 1.0, 8.0])
    assert ranks(x).tolist() == stats.rankdata(x).tolist()
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert spearman(x, 3 * x + 1) == pytest.approx(1.0) and spearman(x, -(x**3)) == pytest.approx(-1.0)
    # Holm by hand: sorted 0.01, 0.02, 0.04, 0.30 times 4, 3, 2, 1 -> 0.04, 0.06, 0.08, 0.30 (already increasing)
    assert holm([0.04, 0.01, 0.30, 0.02]).tolist() == pytest.approx([0.08, 0.04, 0.30, 0.06])
    # a step-down maximum and the cap at 1: 0.02*3 = 0.06, 0.01*2 = 0.02 -> 0.06, 0.6*1 -> 0.6
    assert holm([0.01, 0.02, 0.6]).tolist() == pytest.approx([0.03, 0.04, 0.6])
    assert holm([0.5, 0.6]).tolist() == pytest.approx([1.0, 1.0])
    assert holm([0.01, float("nan"), 0.02]).tolist() == pytest.approx([0.02, float("nan"), 0.02], nan_ok=True)
    assert bootstrap_p(np.array([1.0, 2.0, 3.0])) == pytest.approx(2 * 1 / 4)


def test_nested_resampling_keeps_the_hierarchy():
    variant, seed, pair = ["v"] * 4 + ["w"] * 4, [0, 0, 1, 1, 0, 0, 1, 1], [0, 0, 0, 0, 0, 1, 0, 1]
    nested = Nested([variant, seed, pair])
    assert nested.groups(0) == 2 and nested.groups(1) == 2 and nested.groups(2) == 1
    idx = nested.resample(np.random.default_rng(0))
    assert len(idx) >= 6 and set(idx.tolist()) <= set(range(8))
    first_pair = [0, 1]  # variant v, seed 0, pair 0: two rows, drawn together or not at all
    assert all(np.isin(first_pair, idx)) or not any(np.isin(first_pair, idx))


def test_a_property_that_determines_the_score_has_rho_one_and_r2_one():
    rows = _rows({"baseline": 0.0, "v1": 0.0, "v2": 0.0, "v3": 0.0})
    est = property_correlations(rows, ["exact", "noise"], score="score", reps=200)
    exact, noise = est
    assert (exact.value, exact.low, exact.high) == pytest.approx((1.0, 1.0, 1.0))
    assert exact.p == pytest.approx(2 / 201) and exact.p_holm == pytest.approx(min(1, 2 * exact.p))
    assert abs(noise.value) < 0.2 and noise.low < 0 < noise.high
    r2 = prediction_r2(rows, ["exact", "noise"], score="score")
    assert r2["properties, variant held out"] == pytest.approx(1.0) and r2[
        "properties, seed held out"
    ] == pytest.approx(1.0)
    assert r2["variant only, seed held out"] < 0.05  # the label knows nothing here


def test_heldout_r2_against_a_hand_computed_fit():
    # groups {0, 1} and {2, 3}: fit y = 1 + x on one half (exact), predict the other exactly -> R^2 = 1
    assert heldout_r2(np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([1.0, 2.0, 3.0, 4.0]), [0, 0, 1, 1]) == 1.0
    # no feature: each half is predicted by the other half's mean (3.5 for 1, 2; 1.5 for 3, 4):
    # squared errors 6.25 + 2.25 + 2.25 + 6.25 = 17 against 5 about the mean 2.5 -> R^2 = 1 - 17 / 5
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert heldout_r2(np.zeros((4, 0)), y, [0, 0, 1, 1]) == pytest.approx(1 - 17 / 5)


def test_variant_differences_cover_the_true_effect_and_holm_correct():
    rows = _rows({"baseline": 0.0, "big": 0.5, "none": 0.0}, seeds=5, pairs=8, noise=0.05)
    big, none = variant_differences(rows, score="shifted", reps=200)
    assert big.name == "big" and big.low < 0.5 < big.high and big.p < 0.01
    assert none.low < 0.0 < none.high and none.p > 0.05
    assert [big.p_holm, none.p_holm] == pytest.approx(holm([big.p, none.p]).tolist())
    # the label is what predicts this score: it adds to properties that know nothing
    r2 = prediction_r2(rows, ["noise"], score="shifted")
    assert r2["properties + variant, seed held out"] > 0.8 > 0.05 > r2["properties, seed held out"]


def test_refusals():
    rows = _rows({"baseline": 0.0, "v": 0.0}, seeds=1)
    with pytest.raises(ConfigError, match="column must be one of .*got 'nois'; did you mean 'noise'"):
        property_correlations(rows, ["nois"], score="score")
    with pytest.raises(ConfigError, match=r"level must be finite and in \(0, 1\), got 1.5"):
        property_correlations(rows, ["noise"], score="score", level=1.5)
    with pytest.raises(UsageError, match="seeds of 'baseline' needs at least 2 groups, got 1"):
        variant_differences(rows, score="score")
    with pytest.raises(ConfigError, match="baseline must be one of 'baseline', 'v', got 'base'"):
        variant_differences(rows, score="score", baseline="base")
    one = [r for r in rows if r["variant"] == "v"]
    with pytest.raises(UsageError, match="a bootstrap over variants needs at least 2 groups, got 1"):
        property_correlations(one, ["noise"], score="score")
    with pytest.raises(UsageError, match="leave-one-group-out needs at least 2 groups, got 1"):
        prediction_r2(one, ["noise"], score="score")
    with pytest.raises(UsageError, match="column 'noise' has 1 NaN or infinite value"):
        property_correlations([{**rows[0], "noise": float("nan")}, *rows[1:]], ["noise"], score="score")
