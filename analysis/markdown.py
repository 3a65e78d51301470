"""Markdown pieces the written pages share: a table, a confidence interval, a p-value."""

from collections.abc import Sequence

import numpy as np

from hookedmlp_analysis.prediction import Estimate

__all__ = ["table", "ci", "p_value"]


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
