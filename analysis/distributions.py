"""The study's plots: for every (a, b) and digit d, the steered model's mean logits on d's images as probabilities."""

from typing import Optional

import numpy as np
from torch import Tensor

from analysis.grid import steering_grid
from hookedmlp import HookedMLP

__all__ = ["steered_distributions"]


def steered_distributions(model: HookedMLP, hook: str = "layer0.post", coeff: float = 1.0, method: str = "first",
                          images: Optional[Tensor] = None, labels: Optional[Tensor] = None) -> np.ndarray:
    """``[a, b, digit, class]``: softmax of the mean logits of the ``a - b``-steered model over the test images of ``digit``.

    For each pair (a, b) that is a 10 x 10 array (digit x class); ``[a, a]`` is the
    unsteered model.

    Examples:
        >>> model = HookedMLP.from_pretrained("mnist-mlp")
        >>> images, labels = load_mnist("test")
        >>> steered_distributions(model, images=images[:300], labels=labels[:300]).shape
        (10, 10, 10, 10)
    """
    grid = steering_grid(model, hook, coeff, method, images, labels, keep_distributions=True)
    assert grid.distributions is not None
    return grid.distributions
