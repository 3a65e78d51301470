"""The post's figures, explained: pixel arithmetic at layer 0, the linear part at hidden layers, windows at the logits.

- *Layer 0.* ``layer0.post`` is ``W x + b``, so adding ``act(x_a) - act(x_b)`` there is adding
  the image ``x_a - x_b`` to every input (the bias cancels). The steered network reads a
  composite image: ``x``'s strokes, plus ``x_a``'s, minus ``x_b``'s. Whether that reads as ``a``
  depends on how much of ``x_b``'s ink ``x`` covers (*overlap*): covered strokes cancel. So the
  post's per-digit distributions are predicted, without the network, by a nearest-class-mean
  classifier on the composite images (class means of the training pixels), and by the overlap.
- *Hidden layers.* The first-order (Jacobian) prediction ``J v`` of each image's logit shift,
  against the observed shift, per digit; and the share of ReLU gates downstream the addition
  switches (on to off or back).
- *The logits.* There steering is a bias (``analysis.windows``): each pair's window follows from
  the unsteered logits.
"""

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.autograd.forward_ad as fwd
from torch import Tensor, nn

import hookedmlp
from hookedmlp import HookedMLP, HookedRoot, SteeringVector, UsageError
from hookedmlp.checks import check_class
from hookedmlp_analysis.additions import class_vectors
from hookedmlp_analysis.hook_classes import OUTPUT, affine_next
from hookedmlp_analysis.published import spearman
from hookedmlp_analysis.windows import Window, bias_curve, window

__all__ = [
    "PixelExplanation",
    "pixel_explanation",
    "linear_explanation",
    "logit_windows",
    "overlap",
    "explain_summary",
    "pixel_panels",
]


def overlap(images: Tensor, x_b: Tensor) -> Tensor:
    """``[n]``: the share of ``x_b``'s ink each image covers, ``sum(min(x, x_b)) / sum(x_b)`` (pixels in [0, 1])."""
    return torch.minimum(images.flatten(1), x_b.flatten()).sum(1) / x_b.sum().clamp(min=1e-12)


@dataclasses.dataclass(frozen=True)
class PixelExplanation:
    """Per pair and digit ``[pair, digit]``: the share read as ``a`` by the network and by class means, the overlap."""

    pairs: list[tuple[int, int]]
    net: np.ndarray  # the steered network's share of the digit's images read as a
    template: np.ndarray  # the nearest-class-mean classifier's share on the composite images
    overlap: np.ndarray  # mean overlap of the digit's images with x_b
    agree: float  # images (all pairs, digits other than b) where network and class means predict the same class
    agree_unsteered: float  # ... where the steered network predicts what it predicted unsteered

    def cells(self) -> np.ndarray:
        """Where the per-digit shares are compared: every (pair, digit) with digit != b."""
        return np.array([[d != b for d in range(self.net.shape[1])] for _, b in self.pairs])

    def summary(self) -> dict[str, Any]:
        keep = self.cells()
        net, tpl, ov = self.net[keep], self.template[keep], self.overlap[keep]
        return {
            "cells": int(keep.sum()),
            "rho_template": spearman(net, tpl),
            "rho_overlap": spearman(net, ov),
            "mean_abs_diff": float(np.abs(net - tpl).mean()),
            "agree": self.agree,
            "agree_unsteered": self.agree_unsteered,
        }


def _inputs(model: HookedRoot, images: Tensor) -> Tensor:
    """``images`` as the model takes them: its input shape, and its dtype (a float64 checkpoint too)."""
    ref = model.reference_tensor()
    return model.prepare_input(images.to(ref.dtype) if ref is not None else images)


def _first_layer_is_linear(model: Any) -> None:
    if not isinstance(model, HookedMLP) or not isinstance(model.layout.layers[0].module, nn.Linear):
        raise UsageError(
            f"pixel arithmetic is exact where layer 0 is a Linear of a HookedMLP; got {type(model).__name__}; "
            "use a chain whose first module is nn.Linear"
        )


def pixel_explanation(
    model: HookedRoot, test: tuple[Tensor, Tensor], pairs: Sequence[tuple[int, int]], data: Any = None
) -> PixelExplanation:
    """Steering at ``layer0.post`` as composite images, predicted by class means and by stroke overlap.

    Args:
        model: a ``HookedMLP`` whose layer 0 is a Linear (the post's network).
        test: ``(images, labels)`` scored on.
        pairs: the ``(a, b)`` pairs.
        data: where exemplars and class means come from (default: MNIST's training set).

    Returns:
        A ``PixelExplanation``; ``summary()`` has the rank correlations of the network's per-digit
        share read as ``a`` with the class-mean classifier's and with the overlap.
    """
    _first_layer_is_linear(model)
    images, labels = test
    digits = sorted({c for p in pairs for c in p} | set(labels.tolist()))
    for c in digits:
        check_class(c, 10)
    first = class_vectors(model, ["layer0.pre"], digits, "first", 0, data)["layer0.pre"]
    means = class_vectors(model, ["layer0.pre"], digits, "mean", 0, data)["layer0.pre"]
    index = {d: i for i, d in enumerate(digits)}
    x = _inputs(model, images).flatten(1)
    unsteered = model(x).argmax(1)
    n_digits = max(digits) + 1
    net, tpl, ov = (np.full((len(pairs), n_digits), np.nan) for _ in range(3))
    agree = same = total = 0
    for p, (a, b) in enumerate(pairs):
        xa, xb = first[index[a]], first[index[b]]
        composite = x + (xa - xb)  # what steering at layer0.post computes (tests/test_explain.py)
        pred = model(composite).argmax(1)
        nearest = torch.tensor(digits)[torch.cdist(composite, means).argmin(1)]
        for d in digits:
            rows = labels == d
            if rows.any():
                net[p, d] = float((pred[rows] == a).float().mean())
                tpl[p, d] = float((nearest[rows] == a).float().mean())
                ov[p, d] = float(overlap(images[rows], xb.view_as(images[0])).mean())
        scored = labels != b
        agree += int((pred[scored] == nearest[scored]).sum())
        same += int((pred[scored] == unsteered[scored]).sum())
        total += int(scored.sum())
    return PixelExplanation(list(pairs), net, tpl, ov, agree / total, same / total)


def _relu_gates(model: HookedMLP, hook: str) -> list[str]:
    """The inputs of the ReLU layers after ``hook``: where the addition can switch gates."""
    after = model.layout.next_layer(model.resolve_name(hook))
    return [
        model.layout.sites[2 * i].name  # layer{i}.pre
        for i in range(after, len(model.layout.layers))
        if isinstance(model.layout.layers[i].module, nn.ReLU)
    ]


def _tangent(v: Tensor) -> Any:
    """A hook giving the activation the tangent ``v`` per example (forward-mode AD)."""
    return lambda act, hook: fwd.make_dual(act, v.expand_as(act))


def linear_explanation(
    model: HookedMLP, test: tuple[Tensor, Tensor], hook: str, pairs: Sequence[tuple[int, int]], data: Any = None
) -> dict[str, np.ndarray]:
    """Per pair: how much of the per-digit logit shift the Jacobian explains, and the share of ReLU gates switched.

    ``explained[p]`` is ``1 - sum ||s_d - j_d||^2 / sum ||s_d||^2`` over the digits ``d`` other
    than ``b`` (the share of the shift's energy the prediction accounts for; 1 where the map
    after ``hook`` is affine, below 0 where the prediction overshoots by more than the shift),
    where ``s_d`` is the mean observed logit shift of ``d``'s images at coefficient 1 and ``j_d``
    the mean of ``J v`` (forward-mode derivative of the logits along ``v``);
    ``gates[p]`` is the share of (image, unit) at the ReLUs after ``hook`` whose sign changes.
    """
    images, labels = test
    x = _inputs(model, images)
    hook = model.resolve_name(hook)
    gates = _relu_gates(model, hook)
    classes = sorted({c for p in pairs for c in p})
    acts = class_vectors(model, [hook], classes, "first", 0, data)[hook]
    index = {c: i for i, c in enumerate(classes)}
    base, clean = model.run_with_cache(x, names_filter=gates) if gates else (model(x), {})
    explained, switched = np.full(len(pairs), np.nan), np.full(len(pairs), np.nan)
    for p, (a, b) in enumerate(pairs):
        v = acts[index[a]] - acts[index[b]]
        with fwd.dual_level(), model.hooks(fwd_hooks=[(hook, _tangent(v))]):
            jv = fwd.unpack_dual(model(x)).tangent  # J v, one forward-mode pass
        with hookedmlp.steer(model, SteeringVector({hook: v})):
            steered, cache = model.run_with_cache(x, names_filter=gates) if gates else (model(x), {})
        shift = steered - base
        keep = labels != b
        ds = [d for d in labels[keep].unique().tolist()]
        s = torch.stack([shift[labels == d].mean(0) for d in ds]).double()
        j = torch.stack([jv[labels == d].mean(0) for d in ds]).double()
        explained[p] = float(1 - ((s - j) ** 2).sum() / (s**2).sum().clamp(min=1e-300))
        if gates:
            flips = sum(int(((cache[g] > 0) != (clean[g] > 0)).sum()) for g in gates)
            switched[p] = flips / sum(clean[g].numel() for g in gates)
    return {"explained": explained, "gates": switched}


def logit_windows(
    model: Any,
    test: tuple[Tensor, Tensor],
    pairs: Sequence[tuple[int, int]],
    flip: float = 0.5,
    collateral: float = 0.05,
    data: Any = None,
) -> list[Window]:
    """Each pair's window at the logit class, predicted from one unsteered pass (``analysis.windows``).

    At the logit class the vector ``act(x_a) - act(x_b)`` reaches the logits as the bias
    ``logits(x_a) - logits(x_b)``; the window is where at least ``flip`` of b's images read ``a``
    and at most ``collateral`` of the others change.
    """
    images, labels = test
    classes = sorted({c for p in pairs for c in p})
    out_hook = next((h for h in model.hook_names if affine_next(model, h) == OUTPUT), None)
    if out_hook is None:
        raise UsageError(
            f"no hook point of {type(model).__name__} holds its logits; the window needs the exemplars' logits"
        )
    exemplar_logits = class_vectors(model, [out_hook], classes, "first", 0, data)[out_hook]
    logits = model(_inputs(model, images)).double()
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for a, b in pairs:
        v = (exemplar_logits[index[a]] - exemplar_logits[index[b]]).double()
        out.append(window(bias_curve(logits, labels, v, a, b), flip, collateral))
    return out


def _spread(values: np.ndarray) -> dict[str, float]:
    """Median and quartiles over pairs (nan-aware), rounded as the reports print them."""
    v = values[np.isfinite(values)]
    if not len(v):
        return {"median": float("nan"), "q1": float("nan"), "q3": float("nan"), "n": 0}
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"median": round(float(med), 4), "q1": round(float(q1), 4), "q3": round(float(q3), 4), "n": int(len(v))}


def _image(x: Tensor, shape: tuple[int, ...]) -> list[list[float]]:
    """One input as rows of pixels (rounded to 3 decimals), for the pixel-arithmetic figure."""
    side = math.isqrt(x.numel())
    rows = x.reshape(shape[-2:]) if len(shape) >= 2 else x.reshape(side, -1)
    return [[round(float(v), 3) for v in row] for row in rows]


def pixel_panels(
    model: HookedMLP, test: tuple[Tensor, Tensor], pair: tuple[int, int], data: Any = None
) -> dict[str, list[list[float]]]:
    """The pixel-arithmetic figure's panels for ``pair``: its exemplars, their difference, a test image plus it."""
    a, b = pair
    first = class_vectors(model, ["layer0.pre"], [a, b], "first", 0, data)["layer0.pre"]
    images, labels = test
    other = int(torch.nonzero((labels != a) & (labels != b))[0])
    x = _inputs(model, images[other : other + 1])[0]
    shape = tuple(model.accepted_input_shapes()[0])
    return {
        f"x_a: the first {a}": _image(first[0], shape),
        f"x_b: the first {b}": _image(first[1], shape),
        "x_a - x_b: what layer0.post adds": _image(first[0] - first[1], shape),
        f"a test {int(labels[other])} + (x_a - x_b)": _image(x.flatten() + first[0] - first[1], shape),
    }


def explain_summary(
    model: HookedMLP,
    test: tuple[Tensor, Tensor],
    pairs: Sequence[tuple[int, int]],
    hooks: Sequence[str],
    flip: float = 0.5,
    collateral: float = 0.05,
    data: Any = None,
) -> dict[str, Any]:
    """Every explanation above for one model, as plain data (what ``docs/reproduction.md`` prints).

    ``pixel``: ``PixelExplanation.summary()``, and ``panels`` for the figure (the first pair);
    ``linear``: per hook point, the median and
    quartiles over pairs of the Jacobian's share and of the gates switched; ``windows``: how many
    pairs have a window at the levels, and its ``high / low`` ratio over those that do.
    """
    linear = {h: linear_explanation(model, test, h, pairs, data) for h in hooks}
    windows = logit_windows(model, test, pairs, flip, collateral, data)
    ratios = np.array([w.ratio for w in windows])
    return {
        "pairs": len(pairs),
        "n_test": len(test[1]),
        "pixel": {k: round(v, 4) for k, v in pixel_explanation(model, test, pairs, data).summary().items()},
        "panels": pixel_panels(model, test, pairs[0], data),
        "linear": {h: {k: _spread(v) for k, v in out.items()} for h, out in linear.items()},
        "windows": {
            "flip": flip,
            "collateral": collateral,
            "with_window": int(sum(not w.empty for w in windows)),
            "ratio": _spread(ratios),
            "low": _spread(np.array([w.low for w in windows])),
        },
    }
