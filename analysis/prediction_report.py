"""The study page's section "Which properties predict steerability": correlations, held-out R^2, variant differences.

Every number is computed here from the study's rows (``ModelResult.properties``: one row per
model x hook class x pair, with its scores and properties), over the *internal* hook classes
only: the input class (pixel arithmetic) and the logit class (a bias on the logits) are controls.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from hookedmlp_analysis.family import ModelResult
from hookedmlp_analysis.markdown import ci, differences_table, p_value, table
from hookedmlp_analysis.prediction import (
    Estimate,
    heldout_predictions,
    heldout_r2,
    prediction_r2,
    property_correlations,
    r_squared,
    variant_differences,
)
from hookedmlp_analysis.properties import DESCRIPTIONS, PROPERTIES

__all__ = [
    "Prediction",
    "predict",
    "predicted_points",
    "internal_rows",
    "prediction_section",
    "SCORE",
    "REPS",
    "QUICK_REPS",
]

SCORE = "pauc"  # the primary steerability score (analysis.steerability)
REPS = 1000  # bootstrap draws (a quick run's page: QUICK_REPS)
QUICK_REPS = 100


def internal_rows(results: Sequence[ModelResult]) -> list[dict[str, Any]]:
    """Every model's property rows at its internal hook classes, each with its variant and seed."""
    return [
        {**row, "variant": r.variant, "seed": r.seed}
        for r in results
        for row in r.properties
        if row["role"] == "internal"
    ]


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The section's statistics, computed once for its tables, its figure and the page's conclusions.

    ``r2`` has only its variant-held-out entry, and ``differences`` is empty, where a variant has fewer than 2 seeds.
    """

    rows: int
    variants: list[str]
    seeds: int
    baseline: str
    reps: int
    correlations: list[Estimate]
    r2: dict[str, float]
    differences: list[Estimate]


def predicted_points(results: Sequence[ModelResult]) -> tuple[list[dict[str, Any]], float]:
    """One dict per model x internal hook class: its mean score over the pairs (``observed``) and the mean prediction
    of the properties model fitted without its variant (``predicted``); and that model's held-out R^2 over the rows.
    Empty, NaN where fewer than two variants have internal rows."""
    rows = internal_rows(results)
    if len({row["variant"] for row in rows}) < 2:
        return [], float("nan")
    x = np.array([[row[p] for p in PROPERTIES] for row in rows], dtype=np.float64)
    y = np.array([row[SCORE] for row in rows], dtype=np.float64)
    pred = heldout_predictions(x, y, [row["variant"] for row in rows])
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault((row["variant"], row["seed"], row["site"]), []).append(i)
    points = [
        {"variant": v, "seed": seed, "site": site, "observed": float(y[i].mean()), "predicted": float(pred[i].mean())}
        for (v, seed, site), i in groups.items()
    ]
    return points, r_squared(y, pred)


def predict(results: Sequence[ModelResult], reps: int = REPS) -> Prediction:
    """The statistics of ``results``' internal rows; what a run too small for one of them leaves empty."""
    rows = internal_rows(results)
    variants = list(dict.fromkeys(row["variant"] for row in rows))  # those with an internal hook class
    seeds = min(len({row["seed"] for row in rows if row["variant"] == v}) for v in variants) if variants else 0
    baseline = "baseline" if "baseline" in variants else variants[0] if variants else ""
    if not rows or len(variants) < 2:
        return Prediction(len(rows), variants, seeds, baseline, reps, [], {}, [])
    corr = property_correlations(rows, PROPERTIES, SCORE, reps=reps)
    if seeds < 2:
        x = np.array([[row[p] for p in PROPERTIES] for row in rows])
        y = np.array([row[SCORE] for row in rows])
        r2 = {"properties, variant held out": heldout_r2(x, y, [row["variant"] for row in rows])}
        return Prediction(len(rows), variants, seeds, baseline, reps, corr, r2, [])
    r2 = prediction_r2(rows, PROPERTIES, SCORE)
    diffs = variant_differences(rows, SCORE, baseline=baseline, reps=reps)
    return Prediction(len(rows), variants, seeds, baseline, reps, corr, r2, diffs)


def prediction_section(pred: Prediction, figures: bool = False) -> list[str]:
    """The section's lines (markdown); says what it needs where the run is too small for a statistic."""
    out = [
        "## Which properties predict steerability\n",
        f"Each internal hook class of each model, for each pair, is one row ({pred.rows} rows): its pAUC (`{SCORE}`) "
        "and its properties, measured without steering on the first training images of each digit "
        "(`analysis.properties`). The CIs are 95% hierarchical bootstrap intervals (variants, then seeds within a "
        f"variant, then pairs within a model; {pred.reps} draws); p is a two-sided bootstrap p-value, Holm-corrected "
        "over the rows of its table.\n",
    ]
    if not pred.correlations:
        return out + ["Not computed: it needs the rows of at least two variants.\n"]
    out += [
        table(
            ["property", "what it measures", "Spearman rho", "95% CI", "p (Holm)"],
            [
                [f"`{e.name}`", DESCRIPTIONS[e.name], f"{e.value:.2f}", ci(e), p_value(e.p_holm)]
                for e in pred.correlations
            ],
        ),
        "",
    ]
    r2 = pred.r2
    if pred.differences:
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
    else:
        out.append(
            f"A linear model of all the properties explains R² = {r2['properties, variant held out']:.2f} of the pAUC "
            "of a variant it never saw. Comparing with the variant label, and each variant with the baseline, needs "
            f"at least 2 seeds per variant; this run has {pred.seeds}.\n"
        )
    if figures:
        out += [
            "![Predicted against observed pAUC](figures/study_predicted.png)\n",
            "Interactive: [predicted against observed pAUC](figures/study_predicted.html).\n",
        ]
    if pred.differences:
        out += [
            f"Each variant's mean pAUC minus the {pred.baseline}'s, over all its internal hook classes and pairs "
            "(bootstrap over seeds, then pairs, within each):\n",
            differences_table(pred.differences),
            "",
        ]
    out += [
        "What this does not show:\n",
        "- Cause. Properties and scores are measured on the same models; a property that correlates with the pAUC "
        "may only share a cause with it (depth and width change many properties at once).",
        "- Other vectors. The rows are the first exemplar's vectors; the next section shows how far other exemplars "
        "and class means move the scores.",
        "- The controls. The input and logit classes are left out of these rows: steering there is pixel arithmetic "
        "or a bias on the logits, compared in the tables above.",
        "",
    ]
    return out
