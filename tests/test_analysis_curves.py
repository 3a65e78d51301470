"""analysis.curves and analysis.paths: step curves, their scores, the halves, and prediction paths."""

import numpy as np
import pytest
import torch
from torch import nn

from hookedmlp import HookedMLP
from hookedmlp_analysis.curves import StepCurve, heldout, mean_kl, pair_curve, split_halves
from hookedmlp_analysis.metrics import ScoringSet
from hookedmlp_analysis.paths import Paths, bisection_points, prediction_paths
from hookedmlp_analysis.rows import output_site


def curve(coeffs: list, flip: list, collateral: list) -> StepCurve:
    return StepCurve(np.array(coeffs, float), np.array(flip, float), np.array(collateral, float))


def test_a_step_curve_holds_each_value_until_the_next_coefficient() -> None:
    c = curve([0, 1, 2, 3], [0, 0.5, 0.5, 1.0], [0, 0, 0.1, 0.3])
    flip, coll = c.at(np.array([0, 0.5, 1, 2.5, 10]))
    assert flip.tolist() == [0, 0, 0.5, 0.5, 1.0] and coll.tolist() == [0, 0, 0, 0.1, 0.3]
    assert c.frontier(np.array([0, 0.05, 0.1, 0.2, 0.3])).tolist() == [0.5, 0.5, 0.5, 0.5, 1.0]
    assert c.pauc(0.2) == pytest.approx(0.5)
    assert c.pauc(0.4) == pytest.approx((0.5 * 0.3 + 1.0 * 0.1) / 0.4)


def test_the_frontier_takes_the_best_flip_rate_at_or_below_each_collateral_level() -> None:
    c = curve([0, 1, 2], [0, 0.8, 0.2], [0, 0.2, 0.05])  # collateral falls back: a later, smaller coefficient wins
    assert c.frontier(np.array([0.0, 0.1, 0.2])).tolist() == [0.0, 0.2, 0.8]
    assert c.pauc(0.1) == pytest.approx(0.2 * 0.05 / 0.1)


def test_heldout_chooses_on_the_tuning_curve_and_reads_the_scoring_curve() -> None:
    tune = curve([0, 1, 2, 3], [0, 0.3, 0.6, 0.9], [0, 0.02, 0.04, 0.08])
    score = curve([0, 1.5, 2.5], [0, 0.4, 0.7], [0, 0.01, 0.06])
    assert heldout(tune, score, 0.05) == (0.4, 0.01, 2.0)
    other = curve([0, 0.1], [0, 1.0], [0, 1.0])
    assert heldout(tune, other, 0.05)[2] == 2.0  # the scoring half never moves the coefficient
    flat = curve([0, 1, 2], [0, 0.5, 0.5], [0, 0.01, 0.02])
    assert heldout(flat, score, 0.05)[2] == 1.0  # ties: the smallest coefficient
    assert heldout(curve([0, 1], [0.1, 0.9], [0, 0.5]), score, 0.05) == (0.0, 0.0, 0.0)  # nothing feasible but 0


@pytest.mark.parametrize("seed", range(5))
def test_the_halves_are_disjoint_cover_everything_and_split_each_class_evenly(seed: int) -> None:
    labels = np.random.default_rng(seed).integers(0, 4, size=int(np.random.default_rng(seed).integers(1, 60)))
    tune, score = split_halves(labels)
    assert not (tune & score).any() and (tune | score).all()
    for c in np.unique(labels):
        n_tune, n_score = int(tune[labels == c].sum()), int(score[labels == c].sum())
        assert n_tune - n_score in (0, 1)


def _paths(row: list, at: list, to: list, base: list) -> Paths:
    return Paths(
        np.array([1.0, 4.0]),
        np.array(base),
        np.zeros((len(base), 2), int),
        np.zeros((len(base), 2)),
        np.array(row),
        np.array(at, float),
        np.array(to),
        0,
        0,
    )


def test_pair_curve_counts_flips_on_bs_images_and_changes_on_the_others() -> None:
    # a = 0, b = 1; rows 0-1 are images of b, rows 2-3 of other digits
    paths = _paths([0, 1, 1, 2, 3, 3], [1.0, 2.0, 3.0, 1.5, 0.5, 2.5], [0, 2, 0, 0, 1, 2], [1, 1, 2, 2])
    is_b = np.array([True, True, False, False])
    c = pair_curve(paths, range(4), np.ones(4, bool), is_b, 0, 1.0, 4.0)
    assert c.coeffs.tolist() == [0, 0.5, 1, 1.5, 2.5, 3]  # (row 1 leaving b for 2 changes no event)
    assert c.flip.tolist() == [0, 0, 0.5, 0.5, 0.5, 1.0]
    assert c.collateral.tolist() == [0, 0.5, 0.5, 1.0, 0.5, 0.5]  # row 3 comes back to its prediction at 2.5
    half = pair_curve(paths, range(4), np.array([True, False, True, False]), is_b, 0, 2.0, 1.0)
    assert half.coeffs.tolist() == [0, 0.5, 0.75] and half.flip.tolist() == [0, 1, 1] and half.collateral[-1] == 1
    assert pair_curve(paths, range(4), np.ones(4, bool), is_b, 0, 0.0, 4.0).coeffs.tolist() == [0]  # a zero vector
    shifted = pair_curve(paths, range(2, 4), np.ones(2, bool), np.array([False, False]), 0, 1.0, 4.0)
    assert shifted.collateral.tolist() == [0, 0.5, 1.0, 0.5] and np.isnan(shifted.flip).all()  # no image of b


def test_mean_kl_is_exact_at_grid_points_and_quadratic_below() -> None:
    paths = Paths(
        np.array([1.0, 2.0, 4.0]),
        np.zeros(2, int),
        np.zeros((2, 3), int),
        np.array([[0.1, 0.4, 1.0], [0.3, 0.8, 2.0]]),
        *(np.zeros(0),) * 3,
        0,
        0,
    )
    got = mean_kl(paths, np.array([0, 1]), 2.0, np.array([0.25, 0.5, 1.0, np.sqrt(2)]))
    assert got == pytest.approx([0.2 / 4, 0.2, 0.6, (0.6 + 1.5) / 2])


@pytest.fixture(scope="module")
def logits_model() -> HookedMLP:
    """Logits equal to the inputs: an identity Linear."""
    lin = nn.Linear(3, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(3))
        lin.bias.zero_()
    return HookedMLP.from_module(nn.Sequential(lin)).eval()


def test_a_path_through_three_classes_inside_one_interval_is_followed(logits_model) -> None:
    z = torch.tensor([[0.0, 1.0, 0.5]])  # predicted 1; along u it passes through 2 (from 5/12) to 0 (from 5/8)
    data = ScoringSet(logits_model, z, torch.tensor([1]))
    site = output_site(data, torch.tensor([[1.0, -1.0, 0.2]]))
    paths = prediction_paths(site, data, np.array([0.25, 1.0]), 12)
    assert paths.pred.tolist() == [[1, 0]] and paths.to.tolist() == [2, 0]
    assert paths.at == pytest.approx([5 / 12, 5 / 8], rel=4 ** (1 / 4096) - 1 + 1e-12)
    assert set(paths.at) <= set(bisection_points(np.array([0.25, 1.0]), 12))


def test_intervals_not_selected_keep_their_switch_at_the_upper_grid_point(logits_model) -> None:
    z = torch.tensor([[0.0, 1.0, 0.5], [1.0, 0.0, 0.0]])
    data = ScoringSet(logits_model, z, torch.tensor([1, 0]))
    site = output_site(data, torch.tensor([[1.0, -1.0, 0.2]]))
    paths = prediction_paths(site, data, np.array([0.25, 1.0]), 12, select=lambda p, b: torch.zeros_like(p, dtype=bool))
    assert paths.row.tolist() == [0] and paths.at.tolist() == [1.0] and paths.to.tolist() == [0]
    assert paths.passes == 2 and paths.rows_run == 4  # the grid only


def test_switches_below_the_first_grid_point_are_placed_at_it(logits_model) -> None:
    data = ScoringSet(logits_model, torch.tensor([[0.0, 0.1, 0.0]]), torch.tensor([1]))
    paths = prediction_paths(output_site(data, torch.tensor([[1.0, 0.0, 0.0]])), data, np.array([1.0, 2.0]), 6)
    assert paths.at.tolist() == [1.0] and paths.to.tolist() == [0]  # the true switch is at 0.1
