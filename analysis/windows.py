"""At the logits, steering is a bias: each image's critical coefficients, and each pair's window, without steering.

Adding ``c v`` to an image's logits ``l`` moves every class's logit along a line ``l_j + c v_j``,
so the prediction is the upper envelope of those lines and each class is the prediction on one
interval of ``c`` (possibly empty). For class ``k`` that interval is closed-form:

    lower = max over j with v_j < v_k of (l_j - l_k) / (v_k - v_j)
    upper = min over j with v_j > v_k of (l_k - l_j) / (v_j - v_k)

(empty where a class with the same slope is higher). So, from one unsteered pass and the vector,
a b-image reads ``a`` on ``[lower_a, upper_a]`` and any other image keeps its prediction ``p`` up
to ``upper_p``: the pair's whole flip-against-collateral curve, and the *window* of coefficients
where at least ``flip`` of b's images read ``a`` while at most ``collateral`` of the others
change, follow without one steered pass. Ties count as not yet switched (``argmax`` picks the
first class; a tie is a set of measure zero in ``c``).
"""

import dataclasses

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from hookedmlp_analysis.curves import StepCurve
from hookedmlp_analysis.metrics import check_level

__all__ = ["class_interval", "keep_until", "bias_curve", "Window", "window"]


def _bounds(logits: Tensor, v: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """``(lower, upper)`` per row: where class ``k[row]`` is on top of ``logits + c v`` (c over the reals)."""
    lk, vk = logits.gather(1, k[:, None]), v.gather(1, k[:, None])
    dv, dl = v - vk, logits - lk  # per class j: slope and height relative to k
    inf = torch.tensor(float("inf"), dtype=logits.dtype)
    lower = torch.where(dv < 0, dl / -dv, -inf).amax(1)
    upper = torch.where(dv > 0, -dl / dv, inf).amin(1)
    index = torch.arange(logits.shape[1])[None, :]
    # a class of the same slope: k is never on top if it is higher, or as high and first (argmax picks it)
    blocked = ((dv == 0) & ((dl > 0) | ((dl == 0) & (index < k[:, None])))).any(1)
    return torch.where(blocked, inf, lower), torch.where(blocked, -inf, upper)


def class_interval(
    logits: Float[Tensor, "n classes"], v: Float[Tensor, "n classes"], k: int
) -> tuple[Float[Tensor, " n"], Float[Tensor, " n"]]:
    """``(lower, upper)``: the coefficients ``c`` where class ``k`` is the prediction of ``logits + c v``.

    The interval is closed where it is not empty; ``lower > upper`` marks an empty one.

    Examples:
        >>> lo, hi = class_interval(torch.tensor([[2.0, 0.0, 1.0]]), torch.tensor([[0.0, 1.0, 0.5]]), 1)
        >>> float(lo[0]), float(hi[0])
        (2.0, inf)
    """
    return _bounds(logits, v, torch.full((len(logits),), k))


def keep_until(logits: Float[Tensor, "n classes"], v: Float[Tensor, "n classes"]) -> Float[Tensor, " n"]:
    """The coefficient at which each row's prediction first changes as ``c`` grows from 0 (inf: never)."""
    return _bounds(logits, v, logits.argmax(1))[1].clamp(min=0.0)


def bias_curve(
    logits: Float[Tensor, "n classes"], labels: Tensor, v: Float[Tensor, " classes"], a: int, b: int
) -> StepCurve:
    """The pair's flip-against-collateral curve for the bias ``c v``, from the unsteered logits alone.

    The flip rate is the share of ``b``'s images read as ``a``; the collateral the share of the
    other digits' images (``a``'s included, as ``analysis.metrics`` counts them) whose
    prediction changed; ``c`` runs from 0 up.
    """
    flip_rows = labels == b
    lo, hi = class_interval(logits[flip_rows], v.expand(int(flip_rows.sum()), -1), a)
    lo = lo.clamp(min=0.0)
    inside = lo <= hi
    until = keep_until(logits[~flip_rows], v.expand(int((~flip_rows).sum()), -1))
    starts_as_a = inside & (lo == 0)  # a from coefficient 0: counted in the start, leaves at ``hi``
    events = [
        (lo[inside & ~starts_as_a], 1.0, True),
        (hi[inside & torch.isfinite(hi)], -1.0, True),
        (until[torch.isfinite(until)], 1.0, False),
    ]
    t = np.concatenate([e[0].detach().double().numpy() for e in events])
    delta = np.concatenate([np.full(len(e[0]), e[1]) for e in events])
    is_flip = np.concatenate([np.full(len(e[0]), e[2]) for e in events])
    # a row leaving ``a`` at ``hi`` is still ``a`` at ``hi`` (closed interval): its event is just after
    t = np.where(delta < 0, np.nextafter(t, np.inf), t)
    coeffs, where = np.unique(t, return_inverse=True)
    df, dc = np.zeros(len(coeffs)), np.zeros(len(coeffs))
    np.add.at(df, where[is_flip], delta[is_flip])
    np.add.at(dc, where[~is_flip], delta[~is_flip])
    n_flip, n_other = int(flip_rows.sum()), max(int((~flip_rows).sum()), 1)
    start = float(starts_as_a.sum())
    if len(coeffs) and coeffs[0] == 0.0:  # nothing switches at exactly 0: an event there is part of the start
        start += df[0]
        coeffs, df, dc = coeffs[1:], df[1:], dc[1:]
    flip = (start + np.concatenate([[0.0], np.cumsum(df)])) / max(n_flip, 1)
    collateral = np.concatenate([[0.0], np.cumsum(dc)]) / n_other
    return StepCurve(np.concatenate([[0.0], coeffs]), flip, collateral)


@dataclasses.dataclass(frozen=True)
class Window:
    """Where a pair steers: ``low`` to ``high`` (empty where ``low`` is nan); ``ratio`` is ``high / low``."""

    low: float
    high: float

    @property
    def empty(self) -> bool:
        return bool(np.isnan(self.low))

    @property
    def ratio(self) -> float:
        return self.high / self.low if not self.empty and self.low > 0 else float("nan")


def window(curve: StepCurve, flip: float = 0.5, collateral: float = 0.05) -> Window:
    """The coefficients where the flip rate is at least ``flip`` and the collateral at most ``collateral``.

    The window's ends are the first and last such step of the curve (the steps between may dip
    out, which the curve shows; the ends are what a user choosing ``c`` needs).
    """
    flip, collateral = check_level(flip, "flip"), check_level(collateral, "collateral")
    good = np.flatnonzero((curve.flip >= flip) & (curve.collateral <= collateral))
    if not len(good):
        return Window(float("nan"), float("nan"))
    last = int(good[-1])
    high = float(curve.coeffs[last + 1]) if last + 1 < len(curve.coeffs) else float("inf")
    return Window(float(curve.coeffs[good[0]]), high)
