"""The study's plots: for every (a, b) and digit d, the steered model's mean logits on d's images as probabilities."""

from typing import Any

import numpy as np

from hookedmlp import HookedRoot
from hookedmlp_analysis.grid import steering_grid

__all__ = ["steered_distributions"]


def steered_distributions(
    model: HookedRoot,
    hook: str = "layer0.post",
    coeff: float = 1.0,
    method: str = "first",
    exemplar: int = 0,
    data: Any = None,
    test: Any = None,
) -> np.ndarray:
    """``[a, b, digit, class]``: softmax of the ``a - b``-steered model's mean logits over the test images of ``digit``.

    ``[a, a]`` is the unsteered model; each ``[a, b, digit]`` row sums to 1.

    Examples:
        >>> dist = steered_distributions(model, test=(images[:50], labels[:50]))
        >>> dist.shape
        (10, 10, 10, 10)
    """
    grid = steering_grid(model, hook, coeff, method, exemplar, data, test, keep_distributions=True)
    return grid.distributions  # type: ignore[return-value]
