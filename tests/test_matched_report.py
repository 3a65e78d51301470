"""The matched-accuracy arm's section and its conclusion, from hand-made results."""

import dataclasses

import numpy as np
from study_fakes import result

from hookedmlp_analysis.matched_report import matched_arm, matched_section
from hookedmlp_analysis.prediction import Estimate
from hookedmlp_analysis.study_conclusions import _matched


def _model(variant: str, seed: int, loss: float, inside: float):
    rows = [
        {"site": "layer1.post", "role": "internal", "a": a, "b": b, "pauc": inside + 0.01 * a}
        for a, b in [(0, 1), (1, 0), (2, 1)]
    ]
    return dataclasses.replace(result(variant, seed, inside, 0.3, 0.25), test_loss=loss, properties=rows)


RESULTS = [_model("baseline", 0, 0.19, 0.2), _model("baseline", 1, 0.2, 0.3), _model("wide", 0, 0.18, 0.5)]


def test_the_arm_reports_each_variants_loss_and_best_class() -> None:
    arm = matched_arm(RESULTS, 0.2, 50, reps=50)
    assert arm.losses == {"baseline": [0.19, 0.2], "wide": [0.18]}
    assert arm.best == {"baseline": [0.2, 0.3], "wide": [0.5]}
    assert arm.differences == []  # wide has one seed: no bootstrap over its seeds
    table = next(x for x in matched_section(arm) if x.startswith("| ")).splitlines()
    assert table[2:] == [
        "| baseline | 2 | 0.195 [0.190, 0.200] | 0.25 [0.20, 0.30] |",
        "| wide | 1 | 0.180 [0.180, 0.180] | 0.50 [0.50, 0.50] |",
    ]


def test_with_two_seeds_each_the_differences_are_bootstrapped_and_concluded() -> None:
    arm = matched_arm([*RESULTS, _model("wide", 1, 0.2, 0.6)], 0.2, 50, reps=50)
    (diff,) = arm.differences
    np.testing.assert_allclose(diff.value, 0.55 - 0.25)
    forced = dataclasses.replace(arm, differences=[Estimate("wide", 0.3, 0.2, 0.4, 0.01, 0.01)])
    assert _matched(forced) == [
        "- At matched accuracy (every variant trained to a test loss of at most 0.2; on the scoring images 0.180 to "
        "0.200): better than the baseline: wide (+0.300 [+0.200, +0.400]); worse: none; no difference detected: none."
    ]
    assert _matched(None) == []
