"""The study page's conclusions: each line from the differences' CIs and Holm p-values, the properties, the controls."""

from study_fakes import result

from hookedmlp_analysis.prediction import Estimate
from hookedmlp_analysis.prediction_report import Prediction
from hookedmlp_analysis.study_conclusions import conclusions
from hookedmlp_analysis.vectors_report import VectorArm

CORR = [Estimate("depth", 0.25, 0.15, 0.33, 0.002, 0.022), Estimate("probe", -0.01, -0.15, 0.05, 0.9, 1.0)]
DIFFS = [
    Estimate("wide", 0.046, 0.023, 0.071, 0.002, 0.006),
    Estimate("narrow", -0.104, -0.12, -0.087, 0.002, 0.006),
    Estimate("dropout", 0.008, -0.012, 0.031, 0.4, 0.8),
]
R2 = {
    "properties, variant held out": -0.17,
    "properties, seed held out": 0.19,
    "properties + variant, seed held out": 0.34,
    "variant only, seed held out": 0.09,
}


def _prediction(**changes) -> Prediction:
    fields = dict(
        rows=100,
        variants=["baseline", "wide", "narrow", "dropout"],
        seeds=5,
        baseline="baseline",
        reps=1000,
        correlations=CORR,
        r2=R2,
        differences=DIFFS,
    )
    return Prediction(**{**fields, **changes})


RESULTS = [result("baseline", 0, 0.2, 0.3, 0.25), result("baseline", 1, 0.4, 0.3, 0.1)]
NO_ARM = VectorArm(["exemplar 0", "class mean"], {}, [], "baseline", 1000)


def test_differences_are_sorted_by_holm_and_the_rest_bounded_by_their_ci() -> None:
    lines = conclusions(RESULTS, _prediction(), NO_ARM)
    assert lines[:3] == [
        "- Steer better than the baseline (mean pAUC over internal hook classes and pairs; difference, 95% CI; "
        "Holm p < 0.05): wide (+0.046 [+0.023, +0.071]).",
        "- Steer worse: narrow (-0.104 [-0.120, -0.087]).",
        "- No difference detected: dropout; their CIs bound any difference to 0.031 pAUC.",
    ]


def test_properties_and_the_answer_follow_the_held_out_r2() -> None:
    lines = conclusions(RESULTS, _prediction(), NO_ARM)
    assert lines[3] == (
        "- Properties whose rank correlation with the pAUC holds after Holm's correction: depth (0.25 [0.15, 0.33]). "
        "The strongest, `depth`, has |rho| = 0.25: alone it accounts for rho² = 6% of the variance in ranks."
    )
    assert lines[4] == (
        "- The answer to the post's question: not found among these properties. A linear model of all of them predicts "
        "the pAUC of a variant it never saw with R² = -0.17, and the variant label adds 0.15 of R² beyond them: what "
        "makes a variant steerable is not captured by the properties measured here."
    )
    carried = {**R2, "properties, variant held out": 0.3, "properties + variant, seed held out": 0.2}
    assert conclusions(RESULTS, _prediction(r2=carried), NO_ARM)[4] == (
        "- The answer to the post's question: the properties carry what the variant label does (it adds 0.01 of R²), "
        "and they predict an unseen variant with R² = 0.30."
    )


def test_controls_are_counted_per_model() -> None:
    (line,) = [x for x in conclusions(RESULTS, _prediction(), NO_ARM) if x.startswith("- Controls")]
    # seed 0: bias 0.3 > 0.2 and logit 0.25 > 0.2; seed 1: neither beats 0.4
    assert line == (
        "- Controls (scoring half): the two-logit bias reaches a higher pAUC than the model's best internal hook class "
        "in 1 of 2 models, and the logit class in 1 of 2: a steering vector inside these networks is to be judged "
        "against adding a constant to two logits. The binary selectivity of the best internal class, kept only as a "
        "derived column, runs from 0.00 to 0.80 over its thresholds."
    )


def test_a_run_too_small_says_what_it_needs() -> None:
    lines = conclusions(RESULTS, _prediction(seeds=1, differences=[], r2={"properties, variant held out": 0.1}), NO_ARM)
    assert lines[0] == (
        "- Variants against the baseline: not compared; that needs at least 2 seeds per variant, and this run has 1."
    )
    assert not any(x.startswith("- The answer") for x in lines)
    empty = conclusions(RESULTS, _prediction(seeds=0, variants=[], correlations=[], r2={}, differences=[]), NO_ARM)
    assert "- Properties: not related to steerability; that needs the rows of at least two variants." in empty


def test_the_vector_arm_is_concluded_with_its_own_differences_and_spread() -> None:
    means = {"baseline": {0: [0.1, 0.2], 1: [0.3, 0.4]}, "wide": {0: [0.5, 0.5], 1: [0.5, 0.7]}}
    arm = VectorArm(["exemplar 0", "class mean"], means, DIFFS[:1] + DIFFS[2:], "baseline", 1000)
    (line,) = [x for x in conclusions(RESULTS, _prediction(), arm) if x.startswith("- With the vector")]
    # SD across sources per seed: baseline 0.141, 0.141 (median 0.141); wide 0, 0.141 (0.071); median 0.106.
    # SD across seeds per source: baseline 0.071, 0.071; wide 0, 0.141 (0.071); median 0.071
    assert line == (
        "- With the vector a random factor too (exemplar 0, class mean): better than the baseline: wide (+0.046 "
        "[+0.023, +0.071]); worse: none; no difference detected: dropout; their CIs bound any difference to 0.031 "
        "pAUC. Within one model, the source moves the mean pAUC by an SD of 0.106 (median over variants), against "
        "0.071 across seeds."
    )


def test_the_differences_the_matched_arm_keeps_and_the_ones_it_does_not() -> None:
    from hookedmlp_analysis.matched_report import MatchedArm

    kept = [Estimate("wide", 0.03, 0.01, 0.05, 0.002, 0.004), Estimate("narrow", -0.01, -0.03, 0.01, 0.3, 0.6)]
    arm = MatchedArm(0.2, 50, {"baseline": [0.2] * 3, "wide": [0.2] * 3}, {}, kept, "baseline", 1000)
    (line,) = [x for x in conclusions(RESULTS, _prediction(), NO_ARM, arm) if x.startswith("- Which differences")]
    assert line == (
        "- Which differences are only the classifier's: at matched accuracy (3 seeds) wide still differ from the "
        "baseline in the same direction; narrow no longer do, so their difference in the main arm may be one of how "
        "well they classify, not of how they steer."
    )
