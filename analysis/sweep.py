"""Sweeps: one ``a - b`` vector at every hook point; coefficients (dose-response); all pairs at every hook."""

import dataclasses
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from hookedmlp import ConfigError, HookedRoot
from hookedmlp.checks import check_choice, check_coeff
from hookedmlp_analysis.additions import all_pairs, pair_additions, source_data
from hookedmlp_analysis.engine import CHUNK_ELEMENTS, evaluate_additions, unsteered
from hookedmlp_analysis.grid import GridResult, grids_from_evaluation, scoring_set
from hookedmlp_analysis.metrics import METRICS, ByName

__all__ = ["LayerSweep", "CoeffSweep", "layer_sweep", "coeff_sweep", "all_pairs_sweep", "DEFAULT_COEFFS"]

DEFAULT_COEFFS = (-1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


def _hooks(model: HookedRoot, hooks: Optional[Sequence[str]]) -> list[str]:
    return model.hook_names if hooks is None else list(dict.fromkeys(n for h in hooks for n in model.resolve_names(h)))


@dataclasses.dataclass
class LayerSweep(ByName):
    """Each metric of one ``a - b`` vector added at each hook point in turn (``metrics[name][i]`` for ``hooks[i]``)."""

    a: int
    b: int
    coeff: float
    method: str
    hooks: list[str]
    metrics: dict[str, np.ndarray]
    normal: dict[str, float]
    exemplar: int = 0
    engine: str = ""

    def to_markdown(self) -> str:
        """A Markdown table: one row per hook point, one column per metric."""
        names = list(self.metrics)
        heads = [METRICS[m].column or m if m in METRICS else m for m in names]
        fmts = [METRICS[m].fmt if m in METRICS else ".3f" for m in names]
        lines = [
            f"{self.a} - {self.b} (coeff {self.coeff:g}, method {self.method}); unsteered loss without {self.b}: "
            f"{self.normal['loss']:.3f}",
            "",
            "| hook | " + " | ".join(heads) + " |",
            "|---|" + "---|" * len(names),
        ]
        for i, h in enumerate(self.hooks):
            lines.append(f"| {h} | " + " | ".join(format(self.metrics[m][i], f) for m, f in zip(names, fmts)) + " |")
        return "\n".join(lines)


@dataclasses.dataclass
class CoeffSweep(ByName):
    """Dose-response: ``metrics[name][pair, coeff]`` for each pair's vector scaled by each coefficient."""

    hook: str
    method: str
    pairs: list[tuple[int, int]]
    coeffs: list[float]
    metrics: dict[str, np.ndarray]
    normal: dict[str, np.ndarray]  # [pair]: the unsteered model without b
    exemplar: int = 0
    engine: str = ""

    def to_markdown(self, metric: str = "flip_rate") -> str:
        values = self.metrics[check_choice(metric, tuple(self.metrics), "metric")]
        lines = [
            f"{METRICS[metric].title if metric in METRICS else metric} at {self.hook} ({self.method})",
            "",
            "| a - b | " + " | ".join(f"{c:g}" for c in self.coeffs) + " |",
            "|" + "---|" * (len(self.coeffs) + 1),
        ]
        for i, (a, b) in enumerate(self.pairs):
            lines.append(f"| {a} - {b} | " + " | ".join(f"{v:.3f}" for v in values[i]) + " |")
        return "\n".join(lines)


def layer_sweep(
    model: HookedRoot,
    a: int = 3,
    b: int = 1,
    hooks: Optional[Sequence[str]] = None,
    coeff: float = 1.0,
    method: str = "first",
    exemplar: int = 0,
    data: Any = None,
    test: Any = None,
) -> LayerSweep:
    """The study's layer sweep: the ``a - b`` vector added at each hook point (default: all) in turn.

    Examples:
        >>> sweep = layer_sweep(model, 3, 1, test=(images[:100], labels[:100]))
        >>> sweep.hooks[:2], sweep.loss.shape
        (['layer0.pre', 'layer0.post'], (10,))
    """
    c = check_coeff(coeff)
    names = _hooks(model, hooks)
    images, labels = scoring_set(test)
    additions = pair_additions(model, names, [(a, b)], [c], method, exemplar, source_data(model, data))
    result = evaluate_additions(model, images, labels, additions)
    normal = {k: float(v[0]) for k, v in unsteered(model, images, labels, [b]).items()}
    return LayerSweep(a, b, c, method, names, result.values, normal, exemplar, result.engine)


def coeff_sweep(
    model: HookedRoot,
    pairs: Sequence[tuple[int, int]] = ((3, 1),),
    coeffs: Sequence[float] = DEFAULT_COEFFS,
    hook: str = "layer0.post",
    method: str = "first",
    exemplar: int = 0,
    data: Any = None,
    test: Any = None,
) -> CoeffSweep:
    """Dose-response: each pair's vector scaled by each coefficient (negative and fractional too).

    Examples:
        >>> dose = coeff_sweep(model, [(3, 1)], [0.0, 0.5, 1.0], test=(images[:100], labels[:100]))
        >>> dose.flip_rate.shape
        (1, 3)
    """
    cs = [check_coeff(c) for c in coeffs]
    model.resolve_name(hook)
    images, labels = scoring_set(test)
    additions = pair_additions(model, [hook], list(pairs), cs, method, exemplar, source_data(model, data))
    result = evaluate_additions(model, images, labels, additions)
    shape = (len(pairs), len(cs))
    normal = unsteered(model, images, labels, [p[1] for p in pairs])
    return CoeffSweep(
        hook,
        method,
        [tuple(p) for p in pairs],
        cs,
        {k: v.reshape(shape) for k, v in result.values.items()},
        normal,
        exemplar,
        result.engine,
    )


def all_pairs_sweep(
    model: HookedRoot,
    hooks: Optional[Sequence[str]] = None,
    coeff: float = 1.0,
    method: str = "first",
    exemplar: int = 0,
    data: Any = None,
    test: Any = None,
    digits: Optional[Sequence[int]] = None,
    keep_distributions: bool = False,
    chunk_elements: int = CHUNK_ELEMENTS,
    progress: bool = False,
) -> dict[str, GridResult]:
    """The full grid at every hook point (default: all), in one evaluation: ``{hook: GridResult}``.

    Arguments as for ``steering_grid``; ``hooks`` are names or globs.

    Vectors that fold to the same place run once, so this costs little more than one grid.

    Examples:
        >>> test = (images[:100], labels[:100])
        >>> grids = all_pairs_sweep(model, ["layer0.post", "layer3.post"], digits=(3, 1), test=test)
        >>> list(grids), grids["layer3.post"].loss.shape
        (['layer0.post', 'layer3.post'], (2, 2))
    """
    c = check_coeff(coeff)
    names = _hooks(model, hooks)
    images, labels = scoring_set(test)
    source = source_data(model, data)
    digits = list(range(source.n_classes)) if digits is None else list(digits)
    if not digits:
        raise ConfigError("digits is empty; pass at least one class")
    additions = pair_additions(model, names, all_pairs(digits), [c], method, exemplar, source)
    result = evaluate_additions(model, images, labels, additions, chunk_elements, progress)
    return grids_from_evaluation(model, names, digits, c, method, exemplar, result, len(labels), keep_distributions)
