"""Markdown pieces the written pages share: a table, a confidence interval, a p-value."""

from collections.abc import Sequence

import numpy as np

from hookedmlp_analysis.prediction import Estimate

__all__ = ["table", "ci", "p_value", "differences_table"]


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    return "\n".join(
        ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]
    )


def ci(e: Estimate) -> str:
    return f"[{e.low:.2f}, {e.high:.2f}]"


def p_value(value: float) -> str:
    """A p-value as the tables print it; ``n/a`` where it is undefined (a constant score or property)."""
    return "n/a" if not np.isfinite(value) else f"{value:.3f}" if value >= 0.001 else "< 0.001"


def differences_table(estimates: Sequence[Estimate]) -> str:
    """Each variant's difference from the baseline, its CI and Holm's p-value (``prediction.variant_differences``)."""
    return table(
        ["variant", "difference", "95% CI", "p (Holm)"],
        [[e.name, f"{e.value:+.3f}", ci(e), p_value(e.p_holm)] for e in estimates],
    )
