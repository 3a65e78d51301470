"""The study page's section "Which vector": the scores under each vector source, and the variants compared with the
source as a random factor.

Every number comes from ``ModelResult.vectors``: one row per vector source (``family.VECTORS``),
internal hook class and pair, its pAUC.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from hookedmlp_analysis.family import VECTORS, ModelResult
from hookedmlp_analysis.markdown import differences_table, table
from hookedmlp_analysis.prediction import Estimate, variant_differences
from hookedmlp_analysis.prediction_report import SCORE

__all__ = ["VectorArm", "vector_arm", "vectors_section", "sd_by"]


@dataclasses.dataclass(frozen=True)
class VectorArm:
    """Per variant and source, the model means (over internal classes and pairs), one per seed; the differences."""

    sources: list[str]
    means: dict[str, dict[int, list[float]]]  # variant -> source -> one mean per seed
    differences: list[Estimate]  # empty where a variant has fewer than 2 seeds
    baseline: str
    reps: int


def _rows(results: Sequence[ModelResult]) -> list[dict[str, Any]]:
    return [{**row, "variant": r.variant, "seed": r.seed} for r in results for row in r.vectors]


def vector_arm(results: Sequence[ModelResult], reps: int) -> VectorArm:
    """The arm's statistics; empty where no model has internal hook classes."""
    rows = _rows(results)
    variants = list(dict.fromkeys(row["variant"] for row in rows))
    means: dict[str, dict[int, list[float]]] = {}
    for v in variants:
        mine = [row for row in rows if row["variant"] == v]
        seeds = sorted({row["seed"] for row in mine})
        means[v] = {
            i: [float(np.mean([row[SCORE] for row in mine if row["source"] == i and row["seed"] == s])) for s in seeds]
            for i in sorted({row["source"] for row in mine})
        }
    baseline = "baseline" if "baseline" in variants else variants[0] if variants else ""
    enough = len(variants) >= 2 and all(len(next(iter(m.values()))) >= 2 for m in means.values())
    diffs = variant_differences(rows, SCORE, baseline=baseline, reps=reps, within=("seed", "source")) if enough else []
    return VectorArm([name for name, _, _ in VECTORS], means, diffs, baseline, reps)


def _seeds(arm: VectorArm) -> str:
    n = max((len(v) for per_source in arm.means.values() for v in per_source.values()), default=0)
    return f"the first {n} seeds" if n != 1 else "the first seed"


def sd_by(per_source: dict[int, list[float]]) -> tuple[float, float]:
    """The median over seeds of the SD across sources, and the median over sources of the SD across seeds."""
    means = np.array(list(per_source.values()))  # [source, seed]
    across_sources = float(np.median(means.std(axis=0, ddof=1))) if means.shape[0] > 1 else float("nan")
    across_seeds = float(np.median(means.std(axis=1, ddof=1))) if means.shape[1] > 1 else float("nan")
    return across_sources, across_seeds


def vectors_section(arm: VectorArm) -> list[str]:
    """The section's lines (markdown)."""
    out = [
        "## Which vector: exemplars and class means as a random factor\n",
        "The scores above use one vector per pair: the first training image of a minus that of b. Here the models "
        f"of {_seeds(arm)} are scored again, at their internal hook classes, with the vectors of "
        f"{', '.join(arm.sources)} (ex. k: the k-th training image of a digit; the class mean: the mean image of its "
        "training images). Each cell: the "
        "median over seeds of the model's mean pAUC over its internal classes and pairs (the pAUC of the sections "
        "above). *SD: sources / seeds*: the SD across the sources of one model, median over seeds, and the "
        "SD across seeds of one source, median over the sources.\n",
    ]
    if not arm.means:
        return out + ["Not computed: no model of this run has an internal hook class.\n"]
    rows = []
    for v, per_source in arm.means.items():
        cells = [f"{np.median(per_source[i]):.3f}" if i in per_source else "" for i in range(len(arm.sources))]
        sd_sources, sd_seeds = sd_by(per_source)
        rows.append([v, *cells, " / ".join(f"{x:.3f}" if np.isfinite(x) else "n/a" for x in (sd_sources, sd_seeds))])
    short = [name.replace("exemplar ", "ex. ").replace("class mean", "mean") for name in arm.sources]
    out += [table(["variant", *short, "SD: sources / seeds"], rows), ""]
    if arm.differences:
        out += [
            f"Each variant's mean pAUC minus the {arm.baseline}'s over every source, internal class and pair, the "
            f"bootstrap resampling seeds, then sources within a seed, then pairs ({arm.reps} draws):\n",
            differences_table(arm.differences),
            "",
        ]
    return out
