"""Which properties predict steerability: rank correlations, held-out linear models, and variant differences.

Every function takes the study's rows: dicts with ``variant``, ``seed``, ``a``, ``b``, a score
(e.g. ``pauc_score`` of ``Steerability.table()``) and properties (``ModelProperties.table()``),
one row per model x hook class x pair. Uncertainty comes from a hierarchical bootstrap
(``analysis.bootstrap.Nested``): variants, then seeds within a variant, then pairs within a model.

- ``property_correlations``: each property's Spearman correlation with the score, its bootstrap
  CI, and a bootstrap p-value, Holm-corrected over the properties.
- ``prediction_r2``: a linear model of all properties, validated on data it was not fitted on:
  leave one variant out (does it predict an unseen architecture?), and leave one seed out, with
  and without the variant label (does the label add anything beyond the properties?). A variant
  label cannot be learned for a variant left out, so the label's comparison holds out seeds.
- ``variant_differences``: each variant's mean score minus the baseline's, with a bootstrap CI
  (seeds, then pairs, within each of the two) and Holm-corrected p-values.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from hookedmlp.checks import check_choice, check_int
from hookedmlp.errors import ConfigError, UsageError
from hookedmlp_analysis.bootstrap import Nested, bootstrap_p, check_groups, holm, percentile_interval, spearman
from hookedmlp_analysis.metrics import check_level

__all__ = [
    "Estimate",
    "property_correlations",
    "heldout_predictions",
    "heldout_r2",
    "r_squared",
    "prediction_r2",
    "variant_differences",
]

_KEYS = ("variant", "seed", "a", "b")


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A statistic with its bootstrap CI (at ``level``), its bootstrap p-value, and that p-value Holm-corrected."""

    name: str
    value: float
    low: float
    high: float
    p: float
    p_holm: float


def _columns(rows: Sequence[dict[str, Any]], names: Sequence[str], what: str) -> dict[str, np.ndarray]:
    """``{name: [row]}`` for the structural keys and ``names`` (each checked against the rows' keys), all finite."""
    if not rows:
        raise UsageError(f"{what} needs rows; got none")
    have = [k for k in rows[0] if k not in _KEYS]
    missing = [k for k in _KEYS if k not in rows[0]]
    if missing:
        raise ConfigError(f"rows need the keys {', '.join(_KEYS)}; missing {missing}")
    for name in names:
        check_choice(name, have, "column")
    out = {k: np.array([r[k] for r in rows]) for k in _KEYS}
    for name in names:
        col = np.array([r[name] for r in rows], dtype=np.float64)
        if not np.isfinite(col).all():
            raise UsageError(f"column {name!r} has {int((~np.isfinite(col)).sum())} NaN or infinite value(s)")
        out[name] = col
    return out


def _pair_keys(cols: dict[str, np.ndarray]) -> list[tuple[int, int]]:
    return list(zip(cols["a"].tolist(), cols["b"].tolist()))


def _check_reps(reps: int, level: float) -> None:
    check_int(reps, "reps", low=10)
    check_level(level, "level")


def property_correlations(
    rows: Sequence[dict[str, Any]],
    properties: Sequence[str],
    score: str = "pauc_score",
    reps: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> list[Estimate]:
    """Spearman's correlation of each property with ``score``, with hierarchical bootstrap CIs and Holm's p-values.

    Needs at least two variants (the outermost level resampled).
    """
    _check_reps(reps, level)
    if not properties:
        raise ConfigError("properties is empty; name at least one column")
    cols = _columns(rows, [*properties, score], "property_correlations")
    nested = Nested([cols["variant"].tolist(), cols["seed"].tolist(), _pair_keys(cols)])
    check_groups(nested, 0, 2, "a bootstrap over variants")
    rng = np.random.default_rng(seed)
    draws = np.empty((reps, len(properties)))
    for r in range(reps):
        idx = nested.resample(rng)
        draws[r] = [spearman(cols[p][idx], cols[score][idx]) for p in properties]
    ps = [bootstrap_p(draws[:, j]) for j in range(len(properties))]
    adjusted = holm(ps)
    return [
        Estimate(p, spearman(cols[p], cols[score]), *percentile_interval(draws[:, j], level), ps[j], float(adjusted[j]))
        for j, p in enumerate(properties)
    ]


def heldout_predictions(x: np.ndarray, y: np.ndarray, groups: Sequence[Any]) -> np.ndarray:
    """Least squares (with an intercept) on ``x`` ``[n, k]``: each row's prediction from the fit to the other groups.

    The minimum-norm solution where columns are collinear.
    """
    keys = list(dict.fromkeys(groups))
    if len(keys) < 2:
        raise UsageError(f"leave-one-group-out needs at least 2 groups, got {len(keys)}")
    x = np.column_stack([np.ones(len(y)), np.asarray(x, dtype=np.float64)])
    y = np.asarray(y, dtype=np.float64)
    labels = np.array([keys.index(g) for g in groups])
    pred = np.empty(len(y))
    for k in range(len(keys)):
        out = labels == k
        coef = np.linalg.lstsq(x[~out], y[~out], rcond=None)[0]
        pred[out] = x[out] @ coef
    return pred


def heldout_r2(x: np.ndarray, y: np.ndarray, groups: Sequence[Any]) -> float:
    """R^2 of ``heldout_predictions``: ``1 - sum (y - yhat)^2 / sum (y - mean y)^2`` over every row.

    It can be negative: worse than predicting the mean.
    """
    return r_squared(y, heldout_predictions(x, y, groups))


def r_squared(y: np.ndarray, pred: np.ndarray) -> float:
    """``1 - sum (y - pred)^2 / sum (y - mean y)^2``; NaN where ``y`` is constant."""
    y = np.asarray(y, dtype=np.float64)
    total = ((y - y.mean()) ** 2).sum()
    return float(1 - ((y - pred) ** 2).sum() / total) if total > 0 else float("nan")


def prediction_r2(rows: Sequence[dict[str, Any]], properties: Sequence[str], score: str = "pauc_score") -> dict:
    """Held-out R^2 of linear models of ``score``.

    Returns:
        ``{"properties, variant held out", "properties, seed held out", "properties + variant, seed held out",
        "variant only, seed held out"}``: R^2 each (see ``heldout_r2``).
    """
    if not properties:
        raise ConfigError("properties is empty; name at least one column")
    cols = _columns(rows, [*properties, score], "prediction_r2")
    x = np.column_stack([cols[p] for p in properties])
    names = list(dict.fromkeys(cols["variant"].tolist()))
    onehot = (cols["variant"][:, None] == np.array(names)[None, :]).astype(np.float64)
    seeds = cols["seed"].tolist()
    y = cols[score]
    return {
        "properties, variant held out": heldout_r2(x, y, cols["variant"].tolist()),
        "properties, seed held out": heldout_r2(x, y, seeds),
        "properties + variant, seed held out": heldout_r2(np.column_stack([x, onehot]), y, seeds),
        "variant only, seed held out": heldout_r2(onehot, y, seeds),
    }


def variant_differences(
    rows: Sequence[dict[str, Any]],
    score: str = "pauc_score",
    baseline: str = "baseline",
    reps: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    within: Sequence[str] = ("seed",),
) -> list[Estimate]:
    """Each variant's mean ``score`` minus the baseline's, with hierarchical bootstrap CIs and Holm's p-values.

    Each variant and the baseline are resampled on their own: the levels ``within`` (seeds; add a
    column such as the vector's source to treat it as a random factor too), then pairs within the
    innermost (every row of a drawn pair kept). Needs at least two seeds in each.
    """
    _check_reps(reps, level)
    if not within or within[0] != "seed":
        raise ConfigError(f"within must start with 'seed' (the trained models), got {list(within)}")
    cols = _columns(rows, [score, *within[1:]], "variant_differences")
    names = list(dict.fromkeys(cols["variant"].tolist()))
    check_choice(baseline, names, "baseline")
    nests = {}
    pairs = _pair_keys(cols)
    for name in names:
        keep = np.flatnonzero(cols["variant"] == name)
        levels = [cols[w][keep].tolist() for w in within]
        nests[name] = (keep, Nested([*levels, [pairs[i] for i in keep]]))
        check_groups(nests[name][1], 0, 2, f"a bootstrap over the seeds of {name!r}")
    others = [n for n in names if n != baseline]
    if not others:
        raise UsageError(f"only the baseline {baseline!r} is in the rows; there is nothing to compare with it")
    rng = np.random.default_rng(seed)
    y = cols[score]
    base_rows, base_nest = nests[baseline]
    draws = np.empty((reps, len(others)))
    for r in range(reps):
        base = y[base_rows[base_nest.resample(rng)]].mean()
        for j, name in enumerate(others):
            keep, nest = nests[name]
            draws[r, j] = y[keep[nest.resample(rng)]].mean() - base
    ps = [bootstrap_p(draws[:, j]) for j in range(len(others))]
    adjusted = holm(ps)
    observed = {n: y[nests[n][0]].mean() for n in names}
    return [
        Estimate(
            n,
            float(observed[n] - observed[baseline]),
            *percentile_interval(draws[:, j], level),
            ps[j],
            float(adjusted[j]),
        )
        for j, n in enumerate(others)
    ]
