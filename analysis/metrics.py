"""The metrics of a steering evaluation, each written once, as a mean of a per-image value over some images.

A metric scores an ``a - b`` addition on a labelled set: the study's loss is the mean
cross-entropy over the images that are *not* of class ``b``; the flip rate is the share of
the images of ``b`` classified as ``a``. Every metric is such a mean, so ``score`` computes
``sum(value * mask) / sum(mask)`` for all of them from one set of steered logits. Adding a
metric is one entry in ``METRICS``: grids, sweeps and their tables pick it up by name.

The two per-image events the steerability curves trace (``analysis.curves``) are written here
too: an image of ``b`` *flips* when it is read as ``a``; an image of another digit is
*collateral* when its prediction changes from the unsteered one. ``SCORES`` names the numbers
read off those curves and ``AXES`` the units they can be drawn against; ``check_*`` refuse an
unknown name or a level outside (0, 1), naming the valid values.
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hookedmlp import HookedRoot, ShapeError, UsageError
from hookedmlp.checks import check_choice, check_number
from hookedmlp.models import facts

__all__ = [
    "Metric",
    "Scored",
    "METRICS",
    "ByName",
    "ScoringSet",
    "score",
    "rounded",
    "DECIMALS",
    "flipped",
    "changed",
    "CurveScore",
    "SCORES",
    "AXES",
    "check_metric",
    "check_score",
    "check_axis",
    "check_level",
]

DECIMALS = 6  # saved results: far below the precision any report shows, above float32 noise


@dataclasses.dataclass(frozen=True)
class Scored:
    """Steered outputs: ``logits [k, n, classes]`` for ``k`` additions on ``n`` images (derived tensors made once)."""

    logits: Tensor
    base_logp: Tensor  # [n, classes]: the unsteered model's log-probabilities
    labels: Tensor  # [n]
    a: Tensor  # [k]: the class each addition pushes towards
    b: Tensor  # [k]: the class it pushes away from

    @functools.cached_property
    def logp(self) -> Tensor:
        return F.log_softmax(self.logits, dim=-1)

    @functools.cached_property
    def predicted(self) -> Tensor:
        return self.logits.argmax(-1)  # [k, n]

    @functools.cached_property
    def base_predicted(self) -> Tensor:
        return self.base_logp.argmax(-1)  # [n]

    @functools.cached_property
    def is_b(self) -> Tensor:
        return self.labels.unsqueeze(0) == self.b.unsqueeze(1)  # [k, n]

    @functools.cached_property
    def is_other(self) -> Tensor:
        return ~self.is_b


@dataclasses.dataclass(frozen=True)
class Metric:
    """``mean over the images in scope of value(scored)``; ``scope`` is ``"other"`` (not class b) or ``"b"``."""

    name: str
    title: str  # for tables: what the number is
    axis: str  # for figures: the value's name and unit
    scope: str
    value: Callable[[Scored], Tensor]  # [k, n]
    higher_is: str  # "damage" or "success": how figures colour it
    column: str = ""  # a short table header (default: the name)
    fmt: str = ".3f"  # how tables print one value

    def mask(self, s: Scored) -> Tensor:
        return s.is_b if self.scope == "b" else s.is_other


def _cross_entropy(s: Scored) -> Tensor:
    k, n, _ = s.logits.shape
    return -s.logp.gather(2, s.labels.view(1, n, 1).expand(k, n, 1)).squeeze(2)


def _kl(s: Scored) -> Tensor:
    return (s.base_logp.exp() * (s.base_logp - s.logp)).sum(-1)


def flipped(predicted: Tensor, a: Tensor) -> Tensor:
    """The flip event: the image is read as ``a`` (``a`` broadcast against ``predicted``)."""
    return predicted == a


def changed(predicted: Tensor, base_predicted: Tensor) -> Tensor:
    """The collateral event: the prediction differs from the unsteered one."""
    return predicted != base_predicted


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(
            "loss",
            "mean cross-entropy on the test set without digit b",
            "cross-entropy (nats)",
            "other",
            _cross_entropy,
            "damage",
            "loss without b",
            ".2f",
        ),
        Metric(
            "flip_rate",
            "share of the test images of b classified as a",
            "flip rate (share of b's images read as a)",
            "b",
            lambda s: flipped(s.predicted, s.a.unsqueeze(1)).to(s.logits.dtype),
            "success",
            "flip rate",
        ),
        Metric(
            "accuracy_other",
            "accuracy on the test images of the other digits",
            "accuracy on the other digits",
            "other",
            lambda s: (s.predicted == s.labels.unsqueeze(0)).to(s.logits.dtype),
            "success",
            "accuracy other",
        ),
        Metric(
            "kl",
            "mean KL(unsteered || steered) on the other digits",
            "KL from the unsteered model (nats)",
            "other",
            _kl,
            "damage",
            "KL",
            ".2f",
        ),
        Metric(
            "collateral",
            "share of the test images of the other digits whose prediction changes",
            "collateral (share of the other digits' images whose prediction changes)",
            "other",
            lambda s: changed(s.predicted, s.base_predicted.unsqueeze(0)).to(s.logits.dtype),
            "damage",
            "collateral",
        ),
    )
}


@dataclasses.dataclass(frozen=True)
class CurveScore:
    """A number read off one pair's curve of flip rate against collateral (see ``analysis.curves``)."""

    name: str
    title: str
    column: str
    fmt: str = ".3f"


SCORES: dict[str, CurveScore] = {
    s.name: s
    for s in (
        CurveScore(
            "pauc",
            "partial area under flip rate against collateral, up to the collateral level, over that level "
            "(0 to 1; the primary score), on every scoring image",
            "pAUC",
        ),
        CurveScore("pauc_tune", "the pAUC on the tuning half of the scoring images", "pAUC (tuning half)"),
        CurveScore("pauc_score", "the pAUC on the scoring half of the scoring images", "pAUC (scoring half)"),
        CurveScore(
            "heldout_flip",
            "flip rate on the scoring half at the coefficient chosen on the tuning half: the one with the "
            "highest flip rate there whose collateral stays at most the held-out level",
            "held-out flip",
        ),
        CurveScore("heldout_collateral", "collateral on the scoring half at that coefficient", "held-out collateral"),
        CurveScore("heldout_coeff", "the coefficient chosen on the tuning half", "coefficient", ".3g"),
        CurveScore(
            "selective",
            "derived, the old binary selectivity: 1 when some coefficient of the old grid reads at least FLIP of "
            "b's images as a and keeps at least KEEP of the unsteered accuracy on the other digits",
            "selective (binary)",
            ".2f",
        ),
    )
}

AXES: dict[str, str] = {
    "coeff": "coefficient c",
    "relative": "relative perturbation ||c v|| / E||h|| (h: the activation at the hook class's first hook point)",
    "kl": "mean KL(unsteered || steered) on the other digits (nats)",
}


def check_metric(name: Any) -> str:
    """``name`` if it is a metric of ``METRICS``, else ``ConfigError`` naming them."""
    return check_choice(name, tuple(METRICS), "metric")


def check_score(name: Any) -> str:
    """``name`` if it is a score of ``SCORES``, else ``ConfigError`` naming them."""
    return check_choice(name, tuple(SCORES), "score")


def check_axis(name: Any) -> str:
    """``name`` if it is an axis of ``AXES``, else ``ConfigError`` naming them."""
    return check_choice(name, tuple(AXES), "axis")


def check_level(value: Any, what: str) -> float:
    """A threshold or level strictly between 0 and 1, else ``ConfigError``."""
    return check_number(value, what, 0.0, 1.0, low_open=True, high_open=True)


def score(s: Scored, onehot: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """Every metric of ``METRICS`` (``[k]`` each) and the per-class mean logits ``[k, class, class]``.

    ``onehot`` is ``[n, classes]``, the labels one-hot in the logits' dtype.
    """
    values = {}
    for name, metric in METRICS.items():
        mask = metric.mask(s)
        values[name] = torch.where(mask, metric.value(s), 0).sum(1) / mask.sum(1).clamp(min=1)
    sums = torch.matmul(onehot.T, s.logits)  # [k, class of the image, logit]
    return values, sums / onehot.sum(0).clamp(min=1).view(1, -1, 1)


class ScoringSet:
    """A labelled scoring set on the model's device, with the unsteered model's outputs on it; scores steered ones."""

    def __init__(self, model: HookedRoot, images: Tensor, labels: Tensor) -> None:
        self._model = model
        ref = facts.reference_tensor(model)
        self.device = ref.device if ref is not None else images.device
        self.dtype = ref.dtype if ref is not None else images.dtype
        if (
            not isinstance(images, Tensor)
            or not isinstance(labels, Tensor)
            or labels.ndim != 1
            or len(images) != len(labels)
        ):
            raise ShapeError(
                f"expected images [n, ...] and labels [n] tensors, got {_shape(images)} and {_shape(labels)}"
            )
        floating = images.is_floating_point()  # (integer images stay, for the model to refuse with its own message)
        self.images = images.to(self.device, self.dtype) if floating else images.to(self.device)
        self.labels = labels.to(self.device).long()
        self.base = self.logits(model(self.images))
        if self.base.ndim != 2:
            raise UsageError(
                f"the model's output is {list(self.base.shape)}; scoring needs class logits [batch, classes]"
            )
        self.n, self.n_classes = self.base.shape
        if len(self.labels) and not 0 <= int(self.labels.min()) <= int(self.labels.max()) < self.n_classes:
            raise UsageError(
                f"labels must be classes 0 to {self.n_classes - 1} (the model has {self.n_classes} outputs), "
                f"got labels from {int(self.labels.min())} to {int(self.labels.max())}"
            )
        self.base_logp = F.log_softmax(self.base, -1)
        self.onehot = F.one_hot(self.labels, self.n_classes).to(self.base.dtype)

    def logits(self, out: Any) -> Tensor:
        """The class logits in what the model returned (its chosen output, for a tuple or dict)."""
        return facts.select_logits(self._model, out)

    def inputs(self, model: Any) -> tuple[Tensor]:
        """The images as the model's graph takes them (checked and reshaped as a forward pass would)."""
        return (facts.prepare_input(model, self.images),)

    def score(self, logits: Tensor, a: Sequence[int], b: Sequence[int]) -> tuple[dict[str, Tensor], Tensor]:
        ab = torch.tensor([list(a), list(b)], device=self.device)
        return score(Scored(logits, self.base_logp, self.labels, ab[0], ab[1]), self.onehot)


def _shape(t: Any) -> str:
    return str(list(t.shape)) if isinstance(t, Tensor) else type(t).__name__


class ByName:
    """Mixin for the result dataclasses holding ``metrics: dict[str, array]``.

    ``result.loss`` is ``result.metrics["loss"]``; ``to_dict`` / ``from_dict`` round-trip through
    plain JSON-able data (arrays as nested lists rounded to ``DECIMALS``, tuples as lists).
    """

    def __getattr__(self, name: str) -> np.ndarray:
        metrics = self.__dict__.get("metrics", {})
        if name in metrics:
            return metrics[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: Any) -> Any:
        """The result ``to_dict`` wrote; ``UsageError`` if ``data`` is not one."""
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        required = {n for n, f in fields.items() if f.default is dataclasses.MISSING}
        if not isinstance(data, dict) or not required <= set(data):
            raise UsageError(f"not a saved {cls.__name__}: expected the keys {sorted(required)}")
        return cls(**{n: _typed(fields[n].type, v) for n, v in data.items() if n in fields})


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return rounded(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return round(float(value), DECIMALS)
    return value.item() if isinstance(value, np.generic) else value


def _typed(annotation: Any, value: Any) -> Any:
    """``value`` read back as ``annotation`` says: arrays for ``np.ndarray`` (in dicts too), tuples in lists."""
    if value is None:
        return None
    text = str(annotation)
    if annotation is np.ndarray or text.startswith("typing.Optional[numpy.ndarray"):
        return np.asarray(value)
    if text == "dict[str, numpy.ndarray]":
        return {k: np.asarray(v) for k, v in value.items()}
    if text.startswith("list[tuple"):
        return [tuple(v) for v in value]
    return value


def rounded(values: Union[np.ndarray, float]) -> Any:
    """``values`` as (nested lists of) floats rounded to ``DECIMALS``, as float64: saved results load back exactly."""
    return np.round(np.asarray(values, dtype=np.float64), DECIMALS).tolist()
