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

    Args:
        model: the model, in eval mode, on MNIST inputs.
        hook: where to add the ``a - b`` vectors.
        coeff: the vectors' coefficient.
        method: ``"first"`` (first training image) or ``"mean"`` (class means).
        images: the scoring set's images (default: the 10,000 MNIST test images).
        labels: their labels.

    Returns:
        A ``[10, 10, 10, 10]`` float array; each ``[a, b, digit]`` row sums to 1.

    Examples:
        >>> from analysis import steered_distributions
        >>> from hookedmlp import HookedMLP
        >>> from hookedmlp.data import load_mnist
        >>> model = HookedMLP.from_pretrained("mnist-mlp")
        >>> images, labels = load_mnist("test")
        >>> dist = steered_distributions(model, images=images[:50], labels=labels[:50])
        >>> dist.shape
        (10, 10, 10, 10)
        >>> bool(abs(dist[3, 1, 1].sum() - 1) < 1e-5)
        True
    """
    grid = steering_grid(model, hook, coeff, method, images, labels, keep_distributions=True)
    assert grid.distributions is not None
    return grid.distributions
