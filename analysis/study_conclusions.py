"""The study page's conclusions, generated from its numbers: each variant's pAUC against the baseline's with its CI
(in the main arm, with the vector a random factor, and at matched accuracy), the properties that predict
steerability, the controls, and what the run does not show.

A difference or a correlation counts when its Holm-corrected bootstrap p-value is below ``ALPHA``;
everything else is reported as not detected, with the CI that bounds it.
"""

from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from hookedmlp_analysis.matched_report import MatchedArm
from hookedmlp_analysis.prediction import Estimate
from hookedmlp_analysis.prediction_report import Prediction
from hookedmlp_analysis.steer_report import best_internal, controls
from hookedmlp_analysis.vectors_report import VectorArm, sd_by

__all__ = ["ALPHA", "conclusions"]

ALPHA = 0.05  # family-wise error rate of each table's Holm correction


def _est(e: Estimate, spec: str = "+.3f") -> str:
    return f"{e.name} ({e.value:{spec}} [{e.low:{spec}}, {e.high:{spec}}])"


def _listed(items: Sequence[str]) -> str:
    return ", ".join(items) or "none"


def _sorted(diffs: Sequence[Estimate]) -> tuple[list[str], list[str], list[Estimate]]:
    """The variants better and worse than the baseline (Holm p < ``ALPHA``), and the rest."""
    up = [_est(e) for e in diffs if e.p_holm < ALPHA and e.value > 0]
    down = [_est(e) for e in diffs if e.p_holm < ALPHA and e.value < 0]
    return up, down, [e for e in diffs if e.p_holm >= ALPHA]


def _bounded(none: Sequence[Estimate]) -> str:
    bound = max((max(abs(e.low), abs(e.high)) for e in none), default=0.0)
    return _listed([e.name for e in none]) + (f"; their CIs bound any difference to {bound:.3f} pAUC." if none else ".")


def _differences(pred: Prediction) -> list[str]:
    if not pred.differences:
        return [
            f"- Variants against the {pred.baseline or 'baseline'}: not compared; that needs at least 2 seeds per "
            f"variant, and this run has {pred.seeds}."
        ]
    up, down, none = _sorted(pred.differences)
    return [
        f"- Steer better than the {pred.baseline} (mean pAUC over internal hook classes and pairs; difference, "
        f"95% CI; Holm p < {ALPHA:g}): {_listed(up)}.",
        f"- Steer worse: {_listed(down)}.",
        f"- No difference detected: {_bounded(none)}",
    ]


def _vectors(arm: VectorArm) -> list[str]:
    if not arm.differences:
        return []
    up, down, none = _sorted(arm.differences)
    sd = [sd_by(per_source) for per_source in arm.means.values()]
    return [
        f"- With the vector a random factor too ({', '.join(arm.sources)}): better than the {arm.baseline}: "
        f"{_listed(up)}; worse: {_listed(down)}; no difference detected: {_bounded(none)} Within one model, the "
        f"source moves the mean pAUC by an SD of {np.median([s for s, _ in sd]):.3f} (median over variants), "
        f"against {np.median([s for _, s in sd]):.3f} across seeds."
    ]


def _matched(arm: Optional[MatchedArm]) -> list[str]:
    if arm is None or not arm.differences:
        return []
    up, down, none = _sorted(arm.differences)
    losses = [x for v in arm.losses.values() for x in v]
    return [
        f"- At matched accuracy (every variant trained to a test loss of at most {arm.target:g}; on the scoring "
        f"images {min(losses):.3f} to {max(losses):.3f}): better than the {arm.baseline}: {_listed(up)}; worse: "
        f"{_listed(down)}; no difference detected: {_bounded(none)}"
    ]


def _classifier(pred: Prediction, arm: Optional[MatchedArm]) -> list[str]:
    """Which of the main arm's differences the matched arm keeps (same sign, Holm p < ``ALPHA``), and which not."""
    if arm is None or not arm.differences or not pred.differences:
        return []
    main = {e.name: e.value > 0 for e in pred.differences if e.p_holm < ALPHA}
    held = {e.name for e in arm.differences if e.p_holm < ALPHA and main.get(e.name) == (e.value > 0)}
    kept, gone = [n for n in main if n in held], [n for n in main if n not in held]
    seeds = min(len(v) for v in arm.losses.values())
    return [
        f"- Which differences are only the classifier's: at matched accuracy ({seeds} seeds) {_listed(kept)} still "
        f"differ from the {pred.baseline} in the same direction; {_listed(gone)} no longer do, so their difference "
        "in the main arm may be one of how well they classify, not of how they steer."
    ]


def _properties(pred: Prediction) -> list[str]:
    if not pred.correlations:
        return ["- Properties: not related to steerability; that needs the rows of at least two variants."]
    held = [e for e in pred.correlations if e.p_holm < ALPHA]
    top = max(pred.correlations, key=lambda e: abs(e.value))
    lines = [
        f"- Properties whose rank correlation with the pAUC holds after Holm's correction: "
        f"{_listed([_est(e, '.2f') for e in held])}. The strongest, `{top.name}`, has |rho| = {abs(top.value):.2f}: "
        f"alone it accounts for rho² = {top.value**2:.0%} of the variance in ranks."
    ]
    r2 = pred.r2
    if "properties + variant, seed held out" in r2:
        gain = r2["properties + variant, seed held out"] - r2["properties, seed held out"]
        unseen = r2["properties, variant held out"]
        lines.append(
            "- The answer to the post's question: "
            + (
                f"the properties carry what the variant label does (it adds {gain:.2f} of R²), and they predict an "
                f"unseen variant with R² = {unseen:.2f}."
                if gain <= 0.02 and unseen > 0
                else f"not found among these properties. A linear model of all of them predicts the pAUC of a "
                f"variant it never saw with R² = {unseen:.2f}, and the variant label adds {gain:.2f} of R² beyond "
                "them: what makes a variant steerable is not captured by the properties measured here."
            )
        )
    return lines


def _controls(results: Sequence[Any]) -> list[str]:
    best = [(r, best_internal(r.steer)) for r in results]
    best = [(r, b) for r, b in best if b is not None]
    if not best:
        return ["- Controls: no model has an internal hook class; every site is a control."]
    ctl = [controls(r.steer, "pauc_score") for r, _ in best]
    inside = np.array([b["pauc_score"] for _, b in best])
    bias = np.array([c["bias"] for c in ctl])
    logit = np.array([c["logit class"] for c in ctl])
    has_logit = ~np.isnan(logit)
    n = len(best)
    grids = [np.asarray(b["sensitivity"]) for _, b in best]
    lo, hi = min(g.min() for g in grids), max(g.max() for g in grids)
    return [
        f"- Controls (scoring half): the two-logit bias reaches a higher pAUC than the model's best internal hook "
        f"class in {int((bias > inside).sum())} of {n} models, and the logit class in "
        f"{int((logit[has_logit] > inside[has_logit]).sum())} of {int(has_logit.sum())}: a steering vector inside "
        "these networks is to be judged against adding a constant to two logits. The binary selectivity of the best "
        f"internal class, kept only as a derived column, runs from {lo:.2f} to {hi:.2f} over its thresholds."
    ]


def _arm_seeds(arm: VectorArm, matched: Optional[MatchedArm]) -> str:
    counts = [len(v) for per_source in arm.means.values() for v in per_source.values()]
    counts += [len(v) for v in (matched.losses.values() if matched is not None else [])]
    return (
        f"{min(counts)} to {max(counts)}" if counts and min(counts) != max(counts) else f"{counts[0] if counts else 0}"
    )


def conclusions(
    results: Sequence[Any], pred: Prediction, arm: VectorArm, matched: Optional[MatchedArm] = None
) -> list[str]:
    """The conclusions' lines (markdown), each from ``results``' steer summaries or the statistics of ``pred``, the
    vector ``arm`` and the ``matched`` arm."""
    seeds = pred.seeds or min((sum(r.variant == v for r in results) for v in {r.variant for r in results}), default=0)
    return [
        *_differences(pred),
        *_vectors(arm),
        *_matched(matched),
        *_classifier(pred, matched),
        *_properties(pred),
        *_controls(results),
        f"- How sure: {seeds} seed{'s' if seeds != 1 else ''} per variant (the vector and matched arms: "
        f"{_arm_seeds(arm, matched)}), {pred.reps} hierarchical bootstrap draws, 95% CIs, and Holm's correction over "
        f"each table's rows (family-wise error {ALPHA:g}).",
        "- Not shown: cause (the properties and the scores are measured on the same models); networks, data and "
        "vectors outside this family; and the properties of any vector but the first exemplar's."
        + ("" if matched is not None else " The matched-accuracy arm was not run."),
    ]
