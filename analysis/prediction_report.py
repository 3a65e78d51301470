"""The study page's section "Which properties predict steerability": correlations, held-out R^2, variant differences.

Every number is computed here from the study's rows (``ModelResult.properties``: one row per
model x hook class x pair, with its scores and properties), over the *internal* hook classes
only: the input class (pixel arithmetic) and the logit class (a bias on the logits) are controls.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np

from hookedmlp_analysis.family import ModelResult
from hookedmlp_analysis.prediction import (
    Estimate,
    heldout_r2,
    prediction_r2,
    property_correlations,
    variant_differences,
)
from hookedmlp_analysis.properties import DESCRIPTIONS, PROPERTIES

__all__ = ["prediction_section", "SCORE", "REPS", "QUICK_REPS"]

SCORE = "pauc"  # the primary steerability score (analysis.steerability)
REPS = 1000  # bootstrap draws (a quick run's page: QUICK_REPS)
QUICK_REPS = 100


def _rows(results: Sequence[ModelResult]) -> list[dict[str, Any]]:
    return [
        {**row, "variant": r.variant, "seed": r.seed}
        for r in results
        for row in r.properties
        if row["role"] == "internal"
    ]


def _p(value: float) -> str:
    """A p-value as the tables print it; ``n/a`` where it is undefined (a constant score or property)."""
    return "n/a" if not np.isfinite(value) else f"{value:.3f}" if value >= 0.001 else "< 0.001"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return "\n".join(
        ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]
    )


def _ci(e: Estimate) -> str:
    return f"[{e.low:.2f}, {e.high:.2f}]"


def prediction_section(results: Sequence[ModelResult], reps: int = REPS) -> list[str]:
    """The section's lines (markdown); says what it needs where the run is too small for a statistic."""
    rows = _rows(results)
    variants = list(dict.fromkeys(row["variant"] for row in rows))  # those with an internal hook class
    seeds = min(len({row["seed"] for row in rows if row["variant"] == v}) for v in variants) if variants else 0
    baseline = "baseline" if "baseline" in variants else variants[0] if variants else ""
    out = [
        "## Which properties predict steerability\n",
        f"Each internal hook class of each model, for each pair, is one row ({len(rows)} rows): its pAUC (`{SCORE}`) "
        "and its properties, measured without steering on the first training images of each digit "
        "(`analysis.properties`). The CIs are 95% hierarchical bootstrap intervals (variants, then seeds within a "
        f"variant, then pairs within a model; {reps} draws); p is a two-sided bootstrap p-value, Holm-corrected over "
        "the rows of its table.\n",
    ]
    if not rows or len(variants) < 2:
        return out + ["Not computed: it needs the rows of at least two variants.\n"]
    corr = property_correlations(rows, PROPERTIES, SCORE, reps=reps)
    out += [
        _table(
            ["property", "what it measures", "Spearman rho", "95% CI", "p (Holm)"],
            [[f"`{e.name}`", DESCRIPTIONS[e.name], f"{e.value:.2f}", _ci(e), _p(e.p_holm)] for e in corr],
        ),
        "",
    ]
    if seeds >= 2:
        r2 = prediction_r2(rows, PROPERTIES, SCORE)
        gain = r2["properties + variant, seed held out"] - r2["properties, seed held out"]
        out.append(
            "A linear model of all the properties, fitted without the rows it predicts, explains "
            f"R² = {r2['properties, variant held out']:.2f} of the pAUC of a variant it never saw, and "
            f"{r2['properties, seed held out']:.2f} of a seed it never saw; adding the variant label gives "
            f"{r2['properties + variant, seed held out']:.2f}, the label alone "
            f"{r2['variant only, seed held out']:.2f}. "
            + (
                "The label adds nothing beyond the properties (at most 0.02 of R²)."
                if gain <= 0.02
                else f"The label adds {gain:.2f} of R² beyond the properties: they do not explain every difference "
                "between the variants."
            )
            + "\n"
        )
        diffs = variant_differences(rows, SCORE, baseline=baseline, reps=reps)
        out += [
            f"Each variant's mean pAUC minus the {baseline}'s (bootstrap over seeds, then pairs, within each):\n",
            _table(
                ["variant", "difference", "95% CI", "p (Holm)"],
                [[e.name, f"{e.value:+.3f}", _ci(e), _p(e.p_holm)] for e in diffs],
            ),
            "",
        ]
    else:
        x = np.array([[row[p] for p in PROPERTIES] for row in rows])
        r2v = heldout_r2(x, np.array([row[SCORE] for row in rows]), [row["variant"] for row in rows])
        out.append(
            f"A linear model of all the properties explains R² = {r2v:.2f} of the pAUC of a variant it never saw. "
            f"Comparing with the variant label, and each variant with the baseline, needs at least 2 seeds per "
            f"variant; this run has {seeds}.\n"
        )
    out += [
        "What this does not show:\n",
        "- Cause. Properties and scores are measured on the same models; a property that correlates with the pAUC "
        "may only share a cause with it (depth and width change many properties at once).",
        "- Other vectors. Each pair's vector is one exemplar difference; class-mean vectors may rank differently.",
        "- The controls. The input and logit classes are left out of these rows: steering there is pixel arithmetic "
        "or a bias on the logits, compared in the table above.",
        "",
    ]
    return out
