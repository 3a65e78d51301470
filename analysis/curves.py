"""Flip rate against collateral: one pair's curve over the coefficient, and the scores read off it.

For a pair ``a - b`` steered at coefficient ``c``, the *flip rate* is the share of b's images
read as ``a`` and the *collateral* the share of the other digits' images whose prediction
changes (``analysis.metrics.flipped`` / ``changed``). Both are step functions of ``c``, built
from the rows' prediction paths (``analysis.paths``), so no threshold or coefficient is fixed:

- ``pauc(level)``: the area under the best flip rate reachable with collateral at most ``d``,
  for ``d`` from 0 to ``level``, over ``level`` (0 to 1; 1 = every image of b flips with no
  collateral at all).
- ``heldout(tune, score, level)``: the coefficient is chosen on the tuning half's curve (the
  highest flip rate with collateral at most ``level``) and the flip rate and collateral are read
  on the scoring half's curve there; the two halves are disjoint sets of images.
"""

import dataclasses

import numpy as np

from hookedmlp_analysis.paths import Paths

__all__ = ["StepCurve", "pair_curve", "heldout", "mean_kl", "split_halves"]


@dataclasses.dataclass(frozen=True)
class StepCurve:
    """Flip rate and collateral from ``coeffs[j]`` up to the next coefficient (``coeffs[0]`` is 0)."""

    coeffs: np.ndarray  # [m], increasing
    flip: np.ndarray  # [m]
    collateral: np.ndarray  # [m]

    def at(self, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flip rate and collateral at coefficients ``c`` (0 or more)."""
        j = np.searchsorted(self.coeffs, np.asarray(c, dtype=np.float64), side="right") - 1
        return self.flip[j], self.collateral[j]

    def _best(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(self.collateral, kind="stable")
        return self.collateral[order], np.maximum.accumulate(self.flip[order])

    def frontier(self, levels: np.ndarray) -> np.ndarray:
        """The highest flip rate reachable with collateral at most each of ``levels`` (0 or more)."""
        d, best = self._best()
        return best[np.searchsorted(d, np.asarray(levels, dtype=np.float64), side="right") - 1]

    def pauc(self, level: float) -> float:
        """The area under ``frontier`` from collateral 0 to ``level``, over ``level``."""
        d, best = self._best()
        inside = d < level
        edges = np.append(d[inside], level)
        return float((best[inside] * np.diff(edges)).sum() / level)


def pair_curve(
    paths: Paths, rows: range, keep: np.ndarray, flip_rows: np.ndarray, a: int, scale: float, c_max: float
) -> StepCurve:
    """The curve of one pair from its ``rows`` of ``paths`` (those marked ``keep``); ``flip_rows`` marks b's images.

    Path coefficients are ``scale`` times the pair's coefficient (1 for the pair's own vector;
    the vector's norm for a shared unit direction, 0 for a zero vector: a flat curve); the curve
    stops at ``c_max``.
    """
    lo, hi = np.searchsorted(paths.row, [rows.start, rows.stop])
    row, at, to = paths.row[lo:hi] - rows.start, paths.at[lo:hi], paths.to[lo:hi]
    base = paths.base[rows.start : rows.stop]
    first = np.concatenate([[True], row[1:] != row[:-1]])
    prev = np.where(first, base[row], np.concatenate([[0], to[:-1]]))  # the class each event switches from
    fl = flip_rows[row]

    def event(cls: np.ndarray) -> np.ndarray:
        return np.where(fl, cls == a, cls != base[row])

    now = event(to)
    change = (event(prev) != now) & keep[row]
    t = at[change] / scale if scale > 0 else np.full(int(change.sum()), np.inf)
    inside = t <= c_max * (1 + 1e-12)
    t, up, is_flip = t[inside], now[change][inside], fl[change][inside]
    n_flip, n_other = int((flip_rows & keep).sum()), int((~flip_rows & keep).sum())
    coeffs, where = np.unique(t, return_inverse=True)
    delta = np.where(up, 1.0, -1.0)
    df, dc = np.zeros(len(coeffs)), np.zeros(len(coeffs))
    np.add.at(df, where[is_flip], delta[is_flip])
    np.add.at(dc, where[~is_flip], delta[~is_flip])
    start = float(((base == a) & flip_rows & keep).sum())
    flip = (start + np.concatenate([[0.0], np.cumsum(df)])) / n_flip if n_flip else np.full(len(coeffs) + 1, np.nan)
    collateral = np.concatenate([[0.0], np.cumsum(dc)]) / max(n_other, 1)
    return StepCurve(np.concatenate([[0.0], coeffs]), flip, collateral)


def heldout(tune: StepCurve, score: StepCurve, level: float) -> tuple[float, float, float]:
    """``(flip, collateral, coefficient)``: the coefficient chosen on ``tune``, the rates read on ``score``."""
    feasible = np.flatnonzero(tune.collateral <= level)  # never empty: collateral is 0 at coefficient 0
    j = feasible[int(np.argmax(tune.flip[feasible]))]  # the smallest coefficient reaching the highest flip rate
    c = float(tune.coeffs[j])
    f, d = score.at(np.array([c]))
    return float(f[0]), float(d[0]), c


def mean_kl(paths: Paths, rows: np.ndarray, scale: float, coeffs: np.ndarray) -> np.ndarray:
    """The mean KL of ``rows`` at the pair's ``coeffs``: linear in log-coefficient between grid points.

    Below the grid it falls as the coefficient squared (KL is quadratic in a small perturbation).
    """
    grid_kl = paths.kl[rows].mean(0) if len(rows) else np.zeros(len(paths.grid))
    t = np.asarray(coeffs, dtype=np.float64) * scale
    inside = np.interp(np.log(np.maximum(t, paths.grid[0])), np.log(paths.grid), grid_kl)
    return np.where(t < paths.grid[0], grid_kl[0] * (t / paths.grid[0]) ** 2, inside)


def split_halves(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of a labelled set, ``(tune, score)`` masks: within each class, alternate images.

    Every image is in exactly one half, and each class is split evenly (the tuning half gets
    the extra image of an odd class).

    Examples:
        >>> labels[:6].tolist()
        [7, 2, 1, 0, 4, 1]
        >>> split_halves(labels[:6].numpy())
        (array([ True,  True,  True,  True,  True, False]), array([False, False, False, False, False,  True]))
    """
    labels = np.asarray(labels)
    tune = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        tune[np.flatnonzero(labels == c)[::2]] = True
    return tune, ~tune
