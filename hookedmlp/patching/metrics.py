"""What patching measures: one number per batch of logits, given as a callable or by name.

A callable ``metric(logits) -> scalar`` gets the logits ``[n, classes]`` of one (patched)
batch of ``n`` pairs and returns one finite number (a tensor or a float); it is called once per
patched batch, and must be differentiable for attribution patching. A name picks a metric of
``METRICS``, computed for many patched batches at once from the labels of each pair
(``labels=(clean_labels, corrupt_labels)``, each an int or ``[n]`` integers):

- ``"logit_diff"``: the mean over pairs of ``logit[clean label] - logit[corrupt label]``;
- ``"loss"``: the mean cross-entropy of the clean label;
- ``"flip_rate"``: the share of pairs read as the clean label (a step function: its gradient is
  zero almost everywhere, so attribution patching refuses it).
"""

import dataclasses
import numbers
from collections.abc import Callable
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from hookedmlp.checks import check_choice, check_finite
from hookedmlp.errors import ArgumentTypeError, ShapeError, UsageError

__all__ = ["METRICS", "PatchMetric", "resolve_metric", "check_value"]

Labels = Union[int, Tensor]


def _logit_diff(logits: Tensor, clean: Tensor, corrupt: Tensor) -> Tensor:
    return (_pick(logits, clean) - _pick(logits, corrupt)).mean(-1)


def _loss(logits: Tensor, clean: Tensor, corrupt: Tensor) -> Tensor:
    return -_pick(F.log_softmax(logits, -1), clean).mean(-1)


def _flip_rate(logits: Tensor, clean: Tensor, corrupt: Tensor) -> Tensor:
    return (logits.argmax(-1) == clean).to(logits.dtype).mean(-1)


def _pick(logits: Tensor, labels: Tensor) -> Tensor:
    """``logits[..., i, labels[i]]`` for ``logits [..., n, classes]``."""
    index = labels.view(*[1] * (logits.ndim - 2), -1, 1).expand(*logits.shape[:-1], 1)
    return logits.gather(-1, index).squeeze(-1)


# name: (the batched function [k, n, classes] -> [k], differentiable)
METRICS: dict[str, tuple[Callable[[Tensor, Tensor, Tensor], Tensor], bool]] = {
    "logit_diff": (_logit_diff, True),
    "loss": (_loss, True),
    "flip_rate": (_flip_rate, False),
}


def check_value(value: Any, where: str) -> Tensor:
    """A metric's value as a 0-d tensor: one finite number, else ``ShapeError`` or ``SteeringError``."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = torch.tensor(float(value), dtype=torch.float64)
    if not isinstance(value, Tensor):
        raise ArgumentTypeError(f"the metric must return a number or a tensor, got {type(value).__name__} {where}")
    if value.numel() != 1:
        raise ShapeError(
            f"the metric must return one number for a batch of logits, got shape {list(value.shape)} {where}; "
            "reduce it, e.g. with .mean()"
        )
    return check_finite(value.reshape(()), f"the metric's value {where}")


@dataclasses.dataclass(frozen=True)
class PatchMetric:
    """A metric, ready to score ``[k, n, classes]`` logits of ``k`` patched batches at once."""

    name: str
    differentiable: bool
    fn: Callable[[Tensor], Any]
    batched: bool  # fn scores [k, n, classes] at once; else one batch [n, classes] per call

    def __call__(self, logits: Tensor, where: str = "") -> Tensor:
        """``[k]`` values (each checked) for the logits ``[k, n, ...]`` of ``k`` patched batches."""
        if self.batched:
            return check_finite(self.fn(logits), f"the metric's value {where}")
        return torch.stack([check_value(self.fn(x), where).to(logits.dtype) for x in logits])


def _labels(value: Labels, n: int, classes: int, what: str) -> Tensor:
    if isinstance(value, int) and not isinstance(value, bool):
        value = torch.full((n,), value)
    if not isinstance(value, Tensor) or value.dtype.is_floating_point or value.dtype == torch.bool:
        raise ArgumentTypeError(f"{what} must be an int or a tensor of [n] integer labels, got {value!r:.60}")
    if tuple(value.shape) != (n,):
        raise ShapeError(f"{what} has shape {list(value.shape)}; expected one label per pair, [{n}]")
    if n and not 0 <= int(value.min()) <= int(value.max()) < classes:
        raise UsageError(f"{what} must be classes 0 to {classes - 1} (the model has {classes} outputs)")
    return value.long()


def resolve_metric(
    metric: Any, labels: Optional[tuple[Labels, Labels]], n: int, classes: int, device: Any
) -> PatchMetric:
    """The ``PatchMetric`` of a callable or a name of ``METRICS`` (with the pairs' labels)."""
    if callable(metric) and not isinstance(metric, str):
        return PatchMetric(getattr(metric, "__name__", type(metric).__name__), True, metric, False)
    name = check_choice(metric, tuple(METRICS), "metric")
    if labels is None or not isinstance(labels, (tuple, list)) or len(labels) != 2:
        raise UsageError(
            f"metric {name!r} needs labels=(clean_labels, corrupt_labels), each an int or [n] labels; got "
            f"{labels!r:.60}; or pass a callable metric(logits) -> scalar"
        )
    clean, corrupt = (_labels(v, n, classes, w).to(device) for v, w in zip(labels, ("clean labels", "corrupt labels")))
    fn, differentiable = METRICS[name]
    return PatchMetric(name, differentiable, lambda logits: fn(logits, clean, corrupt), True)
