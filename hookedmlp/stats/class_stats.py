"""Per-class activation statistics: count, mean and covariance of each class, streamed over a data set in one pass.

Each batch's moments are computed in float64 and merged into the running ones with the
pairwise update of Chan, Golub and LeVeque (mean and scatter of the union from those of the
parts), so a long stream loses no precision to a running sum of squares, and memory is one
batch of activations plus ``[classes, d, d]`` for the covariances.
"""

import math
from collections.abc import Sequence
from typing import Any, Optional

import torch
from jaxtyping import Float, Int, Shaped
from torch import Tensor

from hookedmlp.checks import check_class, check_int
from hookedmlp.data.labelled import as_labelled, check_images, default_data
from hookedmlp.errors import ShapeError, UsageError
from hookedmlp.models import facts
from hookedmlp.sizes import check_bytes, tensor_bytes

__all__ = ["ClassStatistics", "class_statistics"]


class ClassStatistics:
    """Running count, mean and (optionally) covariance of activations per class, in float64.

    Args:
        classes: the class labels kept, in the order of every result's first axis.
        shape: one example's activation shape (results are flattened to ``d = prod(shape)``).
        covariance: keep each class's ``[d, d]`` scatter matrix (memory ``8 * classes * d * d`` bytes,
            checked against the budget of ``hookedmlp.sizes``); without it only counts and means.

    Examples:
        >>> stats = ClassStatistics([0, 1], (2,))
        >>> stats.add(torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 5.0]]), torch.tensor([0, 0, 1]))
        >>> stats.count.tolist(), stats.mean.tolist()
        ([2, 1], [[2.0, 0.0], [0.0, 5.0]])
        >>> stats.covariance(ddof=0)[0].tolist()
        [[1.0, 0.0], [0.0, 0.0]]
    """

    def __init__(self, classes: Sequence[int], shape: Sequence[int], covariance: bool = True) -> None:
        self.classes = [check_int(c, "class", low=0) for c in classes]
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise UsageError(f"classes must be one or more distinct labels, got {list(classes)}")
        self.shape = tuple(check_int(s, "shape entry", low=1) for s in shape)
        d, k = math.prod(self.shape), len(self.classes)
        if covariance:
            check_bytes(
                tensor_bytes((k, d, d), torch.float64),
                f"{k} covariance matrices of {d} x {d} (activation shape {list(self.shape)})",
                "pass covariance=False (counts and means only), or fewer classes",
            )
        self.count = torch.zeros(k, dtype=torch.long)
        self.mean = torch.zeros(k, d, dtype=torch.float64)
        self.scatter: Optional[Tensor] = torch.zeros(k, d, d, dtype=torch.float64) if covariance else None

    @property
    def dim(self) -> int:
        return self.mean.shape[1]

    def add(
        self,
        acts: Shaped[Tensor, "n *example"],  # noqa: F821 (a jaxtyping shape)
        labels: Int[Tensor, " n_labels"],
    ) -> None:
        """Merge a batch of activations ``[n, *shape]`` with their labels; rows of other classes are skipped."""
        if tuple(acts.shape[1:]) != self.shape or acts.ndim < 1 or len(labels) != len(acts):
            raise ShapeError(
                f"expected activations [n, {', '.join(map(str, self.shape))}] and n labels, got "
                f"{list(acts.shape)} and {len(labels)} labels"
            )
        x = acts.detach().reshape(len(acts), -1).to("cpu", torch.float64)
        labels = labels.to("cpu")
        for i, c in enumerate(self.classes):
            rows = x[labels == c]
            n_b = len(rows)
            if n_b == 0:
                continue
            mean_b = rows.mean(0)
            n_a, n = int(self.count[i]), int(self.count[i]) + n_b
            delta = mean_b - self.mean[i]
            self.mean[i] += delta * (n_b / n)
            if self.scatter is not None:
                centred = rows - mean_b
                self.scatter[i] += centred.T @ centred + torch.outer(delta, delta) * (n_a * n_b / n)
            self.count[i] = n

    def _index(self, cls: int) -> int:
        if cls not in self.classes:
            raise UsageError(f"class {cls!r} was not collected; the classes are {self.classes}")
        return self.classes.index(cls)

    def _scatter(self) -> Tensor:
        if self.scatter is None:
            raise UsageError("these statistics keep no covariance; collect them with covariance=True")
        return self.scatter

    def _check_counts(self, need: int) -> None:
        few = [c for c, n in zip(self.classes, self.count.tolist()) if n < need]
        if few:
            raise UsageError(f"class(es) {few} have fewer than {need} example(s); their statistics are undefined")

    def covariance(self, ddof: int = 1) -> Float[Tensor, "k d d"]:
        """``[classes, d, d]``: each class's covariance, normalised by ``count - ddof`` (1: unbiased, as numpy.cov)."""
        scatter = self._scatter()
        self._check_counts(ddof + 1)
        return scatter / (self.count - ddof).to(torch.float64).view(-1, 1, 1)

    def total_mean(self) -> Float[Tensor, " d"]:
        """The mean over every collected example (all classes pooled)."""
        self._check_counts(1)
        w = self.count.to(torch.float64)
        return (w[:, None] * self.mean).sum(0) / w.sum()

    def total_covariance(self, ddof: int = 1) -> Float[Tensor, "d d"]:
        """The covariance of every collected example (all classes pooled): within- plus between-class scatter."""
        scatter = self._scatter()
        self._check_counts(1)
        w = self.count.to(torch.float64)
        between = self.mean - self.total_mean()
        total = scatter.sum(0) + (w[:, None] * between).T @ between
        if int(w.sum()) <= ddof:
            raise UsageError(f"{int(w.sum())} example(s) in all; a covariance with ddof={ddof} needs more")
        return total / (w.sum() - ddof)

    def of(self, cls: int) -> tuple[int, Float[Tensor, " d"]]:
        """``(count, mean)`` of class ``cls``."""
        i = self._index(cls)
        return int(self.count[i]), self.mean[i]


def class_statistics(
    model: Any,
    hooks: Sequence[str],
    data: Any = None,
    classes: Optional[Sequence[int]] = None,
    batch_size: int = 1000,
    covariance: bool = True,
) -> dict[str, ClassStatistics]:
    """Per-class count, mean and covariance of the activations at ``hooks``, streamed over ``data`` in one pass.

    Activations come from clean passes (no hook runs); each batch is merged in float64, so memory is
    one batch of activations plus the statistics.

    Args:
        model: the hooked model (evaluated as it is: put it in eval mode first).
        hooks: hook names.
        data: ``(images, labels)``, a labelled ``Dataset`` or a ``Labelled``; default MNIST's
            training set, for MNIST-shaped models only.
        classes: the classes to collect (default: every class of ``data``).
        batch_size: examples per pass.
        covariance: keep each class's covariance (``[classes, d, d]`` per hook, in float64).

    Returns:
        ``{hook: ClassStatistics}``.

    Examples:
        >>> stats = class_statistics(model, ["layer1.post"], data=(images[:500], labels[:500]), classes=[3, 1])
        >>> s = stats["layer1.post"]
        >>> s.count.tolist(), s.mean.shape, s.covariance().shape
        ([45, 67], torch.Size([2, 512]), torch.Size([2, 512, 512]))
    """
    check_int(batch_size, "batch_size", low=1)
    source = as_labelled(data) if data is not None else default_data(model)
    wanted = list(range(source.n_classes)) if classes is None else list(classes)
    wanted = [check_class(c, source.n_classes, f"class (of {source.name})") for c in wanted]
    names = facts.check_hook_names(model, hooks)
    stats = {h: ClassStatistics(wanted, facts.activation_shape(model, h), covariance) for h in names}
    ref = facts.reference_tensor(model)
    for images, labels in source.batches(wanted, batch_size):
        images = check_images(images, f"images from {source.name}")
        batch = facts.prepare_input(model, images.to(ref.device, ref.dtype) if ref is not None else images)
        for h, act in facts.clean_activations(model, batch, names).items():
            stats[h].add(act, labels)
    empty = [c for c, n in zip(wanted, stats[names[0]].count.tolist()) if n == 0]
    if empty:
        raise UsageError(f"{source.name} has no example of class(es) {empty}; their statistics are undefined")
    return stats
