"""Hierarchical bootstrap, rank correlation and Holm's correction: the statistics ``analysis.prediction`` reports.

The study's rows are nested: variants, seeds (trained models) within a variant, pairs within a
model, and several rows (hook classes) per pair. A bootstrap that resampled rows would treat
them as independent and give intervals far too narrow; ``Nested.resample`` resamples each level
within the one above (variants, then seeds within each drawn variant, then pairs within each
drawn model), keeping every row of a drawn pair.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np

from hookedmlp.errors import ShapeError, UsageError
from hookedmlp_analysis.metrics import check_level

__all__ = ["Nested", "ranks", "spearman", "holm", "percentile_interval", "bootstrap_p", "check_groups"]


class Nested:
    """Row indices grouped by level: ``levels[0]`` outermost (e.g. variant), then seed, then pair.

    Stored level by level as arrays (each node's children are a range of the next level's
    nodes; each innermost group a range of rows), so a draw is a few vectorised steps.

    Args:
        levels: one label per row for each level, outermost first.
    """

    def __init__(self, levels: Sequence[Sequence[Any]]) -> None:
        n = len(levels[0]) if levels else 0
        if not levels or any(len(lv) != n for lv in levels) or n == 0:
            raise ShapeError(f"expected one label per row at every level, got lengths {[len(lv) for lv in levels]}")
        self.depth, self.n = len(levels), n
        nodes: list[list[int]] = [list(range(n))]  # the root holds every row
        self.starts: list[np.ndarray] = []
        self.counts: list[np.ndarray] = []
        for level in levels:
            children: list[list[int]] = []
            starts, counts = [], []
            for rows in nodes:
                groups: dict[Any, list[int]] = {}
                for i in rows:
                    groups.setdefault(level[i], []).append(i)
                starts.append(len(children))
                counts.append(len(groups))
                children += groups.values()
            self.starts.append(np.array(starts))
            self.counts.append(np.array(counts))
            nodes = children
        self.rows = np.concatenate([np.array(r) for r in nodes])
        sizes = np.array([len(r) for r in nodes])
        self.row_start, self.row_count = np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes

    def groups(self, level: int = 0) -> int:
        """The fewest groups any node at ``level`` holds (level 0: the outermost groups, under the root)."""
        return int(self.counts[level].min())

    def resample(self, rng: np.random.Generator) -> np.ndarray:
        """One hierarchical bootstrap draw: row indices, each level drawn with replacement within the one above."""
        nodes = np.zeros(1, dtype=np.int64)
        for starts, counts in zip(self.starts, self.counts):
            c = counts[nodes]
            first, size = np.repeat(starts[nodes], c), np.repeat(c, c)
            nodes = first + (rng.random(len(first)) * size).astype(np.int64)
        count = self.row_count[nodes]
        offset = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
        return self.rows[np.repeat(self.row_start[nodes], count) + offset]


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks of a 1-D array from 1, ties given their average rank (as ``scipy.stats.rankdata``)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    start = np.flatnonzero(np.concatenate([[True], xs[1:] != xs[:-1]]))
    end = np.append(start[1:], len(xs))
    out = np.empty(len(x))
    out[order] = np.repeat((start + end + 1) / 2.0, end - start)  # 0-based ranks start..end-1, averaged, plus one
    return out


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation of ``x`` and ``y`` (the Pearson correlation of their average ranks); NaN if either
    is constant."""
    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values: ``max over j <= i of min(1, (m - j + 1) p_(j))`` in ascending order.

    A NaN p-value (a statistic undefined on every draw, e.g. a constant score) stays NaN and is not counted in ``m``.
    """
    p = np.asarray(p, dtype=np.float64)
    known = np.isfinite(p)
    if p.ndim != 1 or ((p[known] < 0) | (p[known] > 1)).any() or np.isinf(p).any():
        raise ShapeError(f"expected a 1-D array of p-values in [0, 1], got {p.tolist()}")
    out = np.full(len(p), np.nan)
    finite = np.flatnonzero(known)
    order = finite[np.argsort(p[finite], kind="stable")]
    m = len(order)
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order])) if m else []
    return out


def percentile_interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` interval of bootstrap draws (NaN draws left out)."""
    level = check_level(level, "level")
    draws = np.asarray(draws, dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return float("nan"), float("nan")
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_p(draws: np.ndarray) -> float:
    """A two-sided p-value for "the statistic is 0": twice the smaller share of draws on either side of 0, with the
    ``(k + 1) / (B + 1)`` correction so it is never 0."""
    draws = np.asarray(draws, dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return float("nan")
    below, above = (draws <= 0).sum(), (draws >= 0).sum()
    return float(min(1.0, 2 * (min(below, above) + 1) / (len(draws) + 1)))


def check_groups(nested: Nested, level: int, need: int, what: str) -> None:
    """``UsageError`` unless every node at ``level`` has at least ``need`` groups."""
    have = nested.groups(level)
    if have < need:
        raise UsageError(f"{what} needs at least {need} groups, got {have}; add more, or drop this statistic")
