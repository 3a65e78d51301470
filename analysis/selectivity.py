"""Selectivity: does an activation addition *work*, turning b's images into a's while leaving the other digits alone?

For each pair, the ``a - b`` vector is scaled by every coefficient of a grid (the dose-response)
and the pair counts as *selective* at a coefficient when at least ``FLIP`` of b's images are
read as ``a`` while the accuracy on the other digits stays at least ``KEEP`` of the unsteered
accuracy. The smallest such coefficient is reported (the search is over the grid: its values
are exactly the coefficients a brute-force sweep would try).
"""

import dataclasses
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from hookedmlp import HookedRoot
from hookedmlp.checks import check_coeff
from hookedmlp.errors import ConfigError
from hookedmlp_analysis.additions import pair_additions, source_data
from hookedmlp_analysis.engine import CHUNK_ELEMENTS, evaluate_additions, unsteered
from hookedmlp_analysis.grid import scoring_set
from hookedmlp_analysis.metrics import ByName

__all__ = ["Selectivity", "selectivity", "COEFFS", "FLIP", "KEEP", "off_diagonal_pairs"]

FLIP = 0.5  # at least half of b's images classified as a
KEEP = 0.9  # at least 90% of the unsteered accuracy on the other digits
COEFFS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def off_diagonal_pairs(classes: Sequence[int]) -> list[tuple[int, int]]:
    return [(a, b) for a in classes for b in classes if a != b]


@dataclasses.dataclass
class Selectivity(ByName):
    """One hook point: every metric as ``[pair, coeff]``, and each pair's smallest selective coefficient."""

    hook: str
    pairs: list[tuple[int, int]]
    coeffs: list[float]
    metrics: dict[str, np.ndarray]
    unsteered_accuracy: np.ndarray  # [pair]: on the other digits, b left out

    @property
    def selective(self) -> np.ndarray:
        """``[pair, coeff]``: the flip and accuracy criteria both met."""
        return (self.flip_rate >= FLIP) & (self.accuracy_other >= KEEP * self.unsteered_accuracy[:, None])

    @property
    def best_coeff(self) -> list[Optional[float]]:
        """Per pair, the smallest coefficient that is selective (None where none is)."""
        order = np.argsort(self.coeffs)
        out: list[Optional[float]] = []
        for row in self.selective:
            hits = [self.coeffs[i] for i in order if row[i]]
            out.append(hits[0] if hits else None)
        return out

    @property
    def share(self) -> float:
        """The share of pairs for which some coefficient is selective."""
        return float(self.selective.any(1).mean())

    def at(self, coeff: float) -> dict[str, float]:
        """Every metric's mean over the pairs at one coefficient of the grid."""
        i = self.coeffs.index(coeff)
        return {name: float(v[:, i].mean()) for name, v in self.metrics.items()}


def selectivity(
    model: HookedRoot,
    hooks: Sequence[str],
    coeffs: Sequence[float] = COEFFS,
    pairs: Any = None,
    method: str = "first",
    exemplar: int = 0,
    data: Any = None,
    test: Any = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> dict[str, Selectivity]:
    """``{hook: Selectivity}``: every pair's vector at every coefficient, at every hook, in one evaluation.

    Examples:
        >>> test = (images[:300], labels[:300])
        >>> sel = selectivity(model, ["layer0.post"], coeffs=[1.0, 4.0], pairs=[(3, 1)], test=test)
        >>> sel["layer0.post"].flip_rate.shape
        (1, 2)
    """
    cs = [check_coeff(c) for c in coeffs]
    if not cs or min(cs) <= 0:
        raise ConfigError(f"selectivity needs positive coefficients, got {list(coeffs)}")
    names = [n for h in hooks for n in model.resolve_names(h)]
    images, labels = scoring_set(test)
    source = source_data(model, data)
    pairs = off_diagonal_pairs(range(source.n_classes)) if pairs is None else [tuple(p) for p in pairs]
    additions = pair_additions(model, names, pairs, cs, method, exemplar, source)
    result = evaluate_additions(model, images, labels, additions, chunk_elements)
    base = unsteered(model, images, labels, [b for _, b in pairs])["accuracy_other"]
    shape = (len(names), len(pairs), len(cs))
    values = {m: v.reshape(shape) for m, v in result.values.items()}
    return {h: Selectivity(h, list(pairs), cs, {m: v[i] for m, v in values.items()}, base) for i, h in enumerate(names)}
