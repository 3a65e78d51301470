"""The study page's section "At matched accuracy": every variant trained to one test loss, and steered again.

A variant that steers worse may only be a worse classifier (width 64 is both). The matched arm
trains every variant until its test loss is at most ``family.MATCHED_LOSS`` and compares the
variants' pAUC there, as the main arm does (``prediction.variant_differences``).
"""

import dataclasses
from collections.abc import Sequence

from hookedmlp_analysis.family import ModelResult
from hookedmlp_analysis.markdown import differences_table, table
from hookedmlp_analysis.prediction import Estimate, variant_differences
from hookedmlp_analysis.prediction_report import SCORE, internal_rows
from hookedmlp_analysis.steer_report import best_internal, median_range

__all__ = ["MatchedArm", "matched_arm", "matched_section"]


@dataclasses.dataclass(frozen=True)
class MatchedArm:
    """Per variant, each seed's test loss and best internal pAUC (scoring half); the differences from the baseline."""

    target: float
    check_every: int
    losses: dict[str, list[float]]
    best: dict[str, list[float]]  # NaN for a model without an internal hook class
    differences: list[Estimate]  # empty where a variant has fewer than 2 seeds
    baseline: str
    reps: int


def matched_arm(results: Sequence[ModelResult], target: float, check_every: int, reps: int) -> MatchedArm:
    """The arm's statistics from its models (``results``, trained to ``target``, checked every ``check_every``
    steps)."""
    losses: dict[str, list[float]] = {}
    best: dict[str, list[float]] = {}
    for r in results:
        b = best_internal(r.steer)
        losses.setdefault(r.variant, []).append(r.test_loss)
        best.setdefault(r.variant, []).append(b["pauc_score"] if b is not None else float("nan"))
    rows = internal_rows(results)
    variants = list(dict.fromkeys(row["variant"] for row in rows))
    baseline = "baseline" if "baseline" in variants else variants[0] if variants else ""
    seeds = min((len({row["seed"] for row in rows if row["variant"] == v}) for v in variants), default=0)
    diffs = variant_differences(rows, SCORE, baseline=baseline, reps=reps) if len(variants) >= 2 and seeds >= 2 else []
    return MatchedArm(target, check_every, losses, best, diffs, baseline, reps)


def matched_section(arm: MatchedArm) -> list[str]:
    """The section's lines (markdown)."""
    out = [
        "## At matched accuracy\n",
        f"Every variant trained with the same recipe until its test loss is at most {arm.target:g} (checked every "
        f"{arm.check_every} steps on the whole test set), then steered as above. This separates a variant that "
        "steers worse from one that is only a worse classifier. Test loss (on the scoring images, as everywhere on "
        "this page, so it can differ a little from the stop's) and the best internal class's pAUC (scoring half): "
        "median over seeds [range].\n",
        table(
            ["variant", "seeds", "test loss", "pAUC, best internal class"],
            [
                [v, str(len(arm.losses[v])), median_range(arm.losses[v], ".3f"), median_range(arm.best[v])]
                for v in arm.losses
            ],
        ),
        "",
    ]
    if arm.differences:
        out += [
            f"Each variant's mean pAUC minus the {arm.baseline}'s at matched accuracy, over its internal hook classes "
            f"and pairs (bootstrap over seeds, then pairs; {arm.reps} draws):\n",
            differences_table(arm.differences),
            "",
        ]
    return out
