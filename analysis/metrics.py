"""The metrics of a steering evaluation, each written once, as a mean of a per-image value over some images.

A metric scores an ``a - b`` addition on a labelled set: the study's loss is the mean
cross-entropy over the images that are *not* of class ``b``; the flip rate is the share of
the images of ``b`` classified as ``a``. Every metric is such a mean, so the engine sums
``value * mask`` and ``mask`` over chunks of images and divides once at the end. Adding a
metric is one entry in ``METRICS``.
"""

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Metric", "Scored", "METRICS", "METRIC_NAMES", "ByName", "per_class_logit_sums"]


@dataclasses.dataclass(frozen=True)
class Scored:
    """One chunk of steered outputs: ``logits [k, n, classes]`` for ``k`` additions on ``n`` images."""

    logits: Tensor
    base_logp: Tensor  # [n, classes]: the unsteered model's log-probabilities
    labels: Tensor  # [n]
    a: Tensor  # [k]: the class each addition pushes towards
    b: Tensor  # [k]: the class it pushes away from

    @property
    def logp(self) -> Tensor:
        return F.log_softmax(self.logits, dim=-1)

    @property
    def is_b(self) -> Tensor:
        return self.labels.unsqueeze(0) == self.b.unsqueeze(1)  # [k, n]


@dataclasses.dataclass(frozen=True)
class Metric:
    """``mean over the images in scope of value(scored)``; ``scope`` is ``"other"`` (not class b) or ``"b"``."""

    name: str
    title: str  # for tables: what the number is
    axis: str  # for figures: the value's name and unit
    scope: str
    value: Callable[[Scored], Tensor]  # [k, n]
    higher_is: str  # "damage" or "success": how figures colour it

    def mask(self, s: Scored) -> Tensor:
        return s.is_b if self.scope == "b" else ~s.is_b


def _cross_entropy(s: Scored) -> Tensor:
    k, n, _ = s.logits.shape
    return -s.logp.gather(2, s.labels.view(1, n, 1).expand(k, n, 1)).squeeze(2)


def _kl(s: Scored) -> Tensor:
    return (s.base_logp.exp() * (s.base_logp - s.logp)).sum(-1)


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("loss", "mean cross-entropy on the test set without digit b", "cross-entropy (nats)", "other",
           _cross_entropy, "damage"),
    Metric("flip_rate", "share of the test images of b classified as a", "flip rate (share of b's images read as a)",
           "b", lambda s: (s.logits.argmax(-1) == s.a.unsqueeze(1)).to(s.logits.dtype), "success"),
    Metric("accuracy_other", "accuracy on the test images of the other digits", "accuracy on the other digits",
           "other", lambda s: (s.logits.argmax(-1) == s.labels.unsqueeze(0)).to(s.logits.dtype), "success"),
    Metric("kl", "mean KL(unsteered || steered) on the other digits", "KL from the unsteered model (nats)", "other",
           _kl, "damage"),
)}
METRIC_NAMES = tuple(METRICS)


def per_class_logit_sums(s: Scored, n_classes: int) -> tuple[Tensor, Tensor]:
    """``([k, class, class] sums of logits over each class's images, [class] image counts)``."""
    onehot = F.one_hot(s.labels, n_classes).to(s.logits.dtype)
    return torch.einsum("nd,knc->kdc", onehot, s.logits), onehot.sum(0)


class ByName:
    """Mixin for result classes holding ``metrics: dict[str, array]``: ``result.loss`` is ``result.metrics["loss"]``."""

    def __getattr__(self, name: str) -> np.ndarray:
        metrics = self.__dict__.get("metrics", {})
        if name in metrics:
            return metrics[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
