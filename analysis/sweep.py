"""Sweeps: one contrast over every hook point, coefficients (dose-response), all pairs x all hooks."""

import dataclasses
from collections.abc import Sequence
from typing import Optional

import numpy as np
from torch import Tensor

from analysis.engine import METRICS, Contrast, evaluate_contrasts, unsteered_metrics
from analysis.grid import GridResult, build_grid, scoring_set
from hookedmlp import HookedMLP
from hookedmlp.steering import check_coeff, class_activations

__all__ = ["LayerSweep", "CoeffSweep", "layer_sweep", "coeff_sweep", "all_pairs_sweep"]


@dataclasses.dataclass
class LayerSweep:
    """Metrics of one ``a - b`` vector added at each hook point in turn.

    Made by ``layer_sweep``; metric arrays have one entry per hook.

    Args:
        a: the digit whose activation is added.
        b: the digit whose activation is subtracted (left out of the scores).
        coeff: the vector's coefficient.
        method: ``"first"`` or ``"mean"`` (how digits became activations).
        hooks: the hook points, in order.
        loss: mean cross-entropy on the set without ``b``, per hook.
        flip_rate: share of ``b`` images classified as ``a``, per hook.
        accuracy_other: accuracy on the other digits, per hook.
        kl: mean KL(unsteered || steered) on the other digits, per hook.
        normal: the unsteered model's loss without ``b``.

    Examples:
        >>> from analysis import layer_sweep
        >>> from hookedmlp import HookedMLP
        >>> from hookedmlp.data import load_mnist
        >>> model = HookedMLP.from_pretrained("mnist-mlp")
        >>> images, labels = load_mnist("test")
        >>> sweep = layer_sweep(model, 3, 1, images=images[:100], labels=labels[:100])
        >>> sweep.hooks[:2], sweep.loss.shape
        (['layer0.pre', 'layer0.post'], (10,))
    """

    a: int
    b: int
    coeff: float
    method: str
    hooks: list[str]
    loss: np.ndarray
    flip_rate: np.ndarray
    accuracy_other: np.ndarray
    kl: np.ndarray
    normal: float

    def to_markdown(self) -> str:
        """A Markdown table, one row per hook point.

        Returns:
            A summary line, a blank line, then the table (loss without b, flip rate,
                accuracy on the other digits, KL).

        Examples:
            >>> from analysis import layer_sweep
            >>> from hookedmlp import HookedMLP
            >>> from hookedmlp.data import load_mnist
            >>> model = HookedMLP.from_pretrained("mnist-mlp")
            >>> images, labels = load_mnist("test")
            >>> sweep = layer_sweep(model, 3, 1, hooks=["layer0.post"], images=images[:100], labels=labels[:100])
            >>> sweep.to_markdown().splitlines()[2:4]
            ['| hook | loss without b | flip rate | accuracy other | KL |', '|---|---|---|---|---|']
        """
        lines = [f"{self.a} - {self.b} (coeff {self.coeff:g}, method {self.method}); unsteered loss without {self.b}: {self.normal:.3f}", "",
                 "| hook | loss without b | flip rate | accuracy other | KL |", "|---|---|---|---|---|"]
        for i, h in enumerate(self.hooks):
            lines.append(f"| {h} | {self.loss[i]:.2f} | {self.flip_rate[i]:.3f} | {self.accuracy_other[i]:.3f} | {self.kl[i]:.2f} |")
        return "\n".join(lines)


@dataclasses.dataclass
class CoeffSweep:
    """Dose-response: metrics ``[pair, coeff]`` for vectors scaled by each coefficient.

    Made by ``coeff_sweep``.

    Args:
        hook: the hook point where the vectors were added.
        method: ``"first"`` or ``"mean"`` (how digits became activations).
        pairs: the ``(a, b)`` pairs, one row each.
        coeffs: the coefficients, one column each.
        loss: ``[pair, coeff]`` mean cross-entropy on the set without ``b``.
        flip_rate: ``[pair, coeff]`` share of ``b`` images classified as ``a``.
        accuracy_other: ``[pair, coeff]`` accuracy on the other digits.
        kl: ``[pair, coeff]`` mean KL(unsteered || steered) on the other digits.
        normal: ``[pair]`` the unsteered model's loss without ``b``.

    Examples:
        >>> from analysis import coeff_sweep
        >>> from hookedmlp import HookedMLP
        >>> from hookedmlp.data import load_mnist
        >>> model = HookedMLP.from_pretrained("mnist-mlp")
        >>> images, labels = load_mnist("test")
        >>> dose = coeff_sweep(model, [(3, 1), (0, 9)], [0.0, 1.0], images=images[:100], labels=labels[:100])
        >>> dose.flip_rate.shape, dose.normal.shape
        ((2, 2), (2,))
    """

    hook: str
    method: str
    pairs: list[tuple[int, int]]
    coeffs: list[float]
    loss: np.ndarray
    flip_rate: np.ndarray
    accuracy_other: np.ndarray
    kl: np.ndarray
    normal: np.ndarray  # [pair]: unsteered loss without b

    def to_markdown(self, metric: str = "flip_rate") -> str:
        """A Markdown table of one metric, one row per pair, one column per coefficient.

        Args:
            metric: the metric to show: ``"loss"``, ``"flip_rate"``, ``"accuracy_other"`` or ``"kl"``.

        Returns:
            A title line, a blank line, then the table.

        Examples:
            >>> from analysis import coeff_sweep
            >>> from hookedmlp import HookedMLP
            >>> from hookedmlp.data import load_mnist
            >>> model = HookedMLP.from_pretrained("mnist-mlp")
            >>> images, labels = load_mnist("test")
            >>> dose = coeff_sweep(model, [(3, 1)], [0.0, 1.0], images=images[:100], labels=labels[:100])
            >>> dose.to_markdown("flip_rate").splitlines()[2]
            '| a - b | 0 | 1 |'
            >>> dose.to_markdown("flip_rate").splitlines()[4].startswith("| 3 - 1 | 0.000 |")
            True
        """
        values = getattr(self, metric)
        lines = [f"{metric} at {self.hook} ({self.method})", "",
                 "| a - b | " + " | ".join(f"{c:g}" for c in self.coeffs) + " |", "|" + "---|" * (len(self.coeffs) + 1)]
        for i, (a, b) in enumerate(self.pairs):
            lines.append(f"| {a} - {b} | " + " | ".join(f"{v:.3f}" for v in values[i]) + " |")
        return "\n".join(lines)


def _hooks(model: HookedMLP, hooks: Optional[Sequence[str]]) -> list[str]:
    return model.hook_names if hooks is None else [n for h in hooks for n in model.resolve_names(h)]


def layer_sweep(model: HookedMLP, a: int = 3, b: int = 1, hooks: Optional[Sequence[str]] = None, coeff: float = 1.0,
                method: str = "first", images: Optional[Tensor] = None, labels: Optional[Tensor] = None) -> LayerSweep:
    """The study's layer sweep: the ``a - b`` vector added at each hook point (default: all).

    Args:
        model: the model (evaluated as it is: put it in eval mode first).
        a: the digit whose activation is added.
        b: the digit whose activation is subtracted.
        hooks: hook names or globs (default: every hook point).
        coeff: the vector's coefficient.
        method: ``"first"`` (first training image, the study) or ``"mean"`` (class means).
        images: the scoring set's images (default: the 10,000 MNIST test images).
        labels: their labels.

    Returns:
        A ``LayerSweep`` with one entry per hook.

    Examples:
        >>> from analysis import layer_sweep
        >>> from hookedmlp import HookedMLP
        >>> from hookedmlp.data import load_mnist
        >>> model = HookedMLP.from_pretrained("mnist-mlp")
        >>> images, labels = load_mnist("test")
        >>> layer_sweep(model, 3, 1, images=images[:300], labels=labels[:300]).hooks[:2]
        ['layer0.pre', 'layer0.post']
    """
    c = check_coeff(coeff)
    names = _hooks(model, hooks)
    images, labels = scoring_set(images, labels)
    acts, _ = class_activations(model, [a, b], names, method)
    contrasts = [Contrast(h, c * (acts[h][0] - acts[h][1]), a, b) for h in names]
    m = evaluate_contrasts(model, images, labels, contrasts)
    normal = unsteered_metrics(model, images, labels, [b])["loss"][0]
    return LayerSweep(a, b, c, method, names, *(m[k] for k in METRICS), normal=float(normal))


def coeff_sweep(model: HookedMLP, pairs: Sequence[tuple[int, int]] = ((3, 1),), coeffs: Sequence[float] = (-1, -0.5, 0, 0.25, 0.5, 0.75, 1, 1.5, 2),
                hook: str = "layer0.post", method: str = "first", images: Optional[Tensor] = None, labels: Optional[Tensor] = None) -> CoeffSweep:
    """Dose-response: each pair's vector scaled by each coefficient (negative and fractional too).

    Args:
        model: the model (evaluated as it is: put it in eval mode first).
        pairs: the ``(a, b)`` digit pairs.
        coeffs: the coefficients (finite).
        hook: where to add the vectors.
        method: ``"first"`` (first training image, the study) or ``"mean"`` (class means).
        images: the scoring set's images (default: the 10,000 MNIST test images).
        labels: their labels.

    Returns:
        A ``CoeffSweep`` with ``[pair, coeff]`` metrics.

    Examples:
        >>> from analysis import coeff_sweep
        >>> from hookedmlp import HookedMLP
        >>> from hookedmlp.data import load_mnist
        >>> model = HookedMLP.from_pretrained("mnist-mlp")
        >>> images, labels = load_mnist("test")
        >>> dose = coeff_sweep(model, [(3, 1)], [0.0, 0.5, 1.0], images=images[:100], labels=labels[:100])
        >>> dose.coeffs, dose.loss.shape
        ([0.0, 0.5, 1.0], (1, 3))
    """
    cs = [check_coeff(c) for c in coeffs]
    model.resolve_name(hook)
    images, labels = scoring_set(images, labels)
    digits = sorted({d for p in pairs for d in p})
    acts, _ = class_activations(model, digits, [hook], method)
    act = acts[hook]
    contrasts = [Contrast(hook, c * (act[digits.index(a)] - act[digits.index(b)]), a, b) for a, b in pairs for c in cs]
    m = evaluate_contrasts(model, images, labels, contrasts)
    shape = (len(pairs), len(cs))
    normal = unsteered_metrics(model, images, labels, [b for _, b in pairs])["loss"]
    return CoeffSweep(hook, method, [tuple(p) for p in pairs], cs, *(m[k].reshape(shape) for k in METRICS), normal=normal)


def all_pairs_sweep(model: HookedMLP, hooks: Optional[Sequence[str]] = None, coeff: float = 1.0, method: str = "first",
                    images: Optional[Tensor] = None, labels: Optional[Tensor] = None, digits: Sequence[int] = tuple(range(10)),
                    keep_distributions: bool = False, progress: bool = False) -> dict[str, GridResult]:
    """The full grid at every hook point (default: all), in one evaluation.

    Vectors that fold to the same place run once, so the sweep costs little more
    than the layer-0 grid alone.

    Args:
        model: the model (evaluated as it is: put it in eval mode first).
        hooks: hook names or globs (default: every hook point).
        coeff: the vectors' coefficient.
        method: ``"first"`` (first training image, the study) or ``"mean"`` (class means).
        images: the scoring set's images (default: the 10,000 MNIST test images).
        labels: their labels.
        digits: the digits for rows and columns.
        keep_distributions: keep each grid's ``[a, b, digit, class]`` distributions.
        progress: show a tqdm bar.

    Returns:
        ``{hook: GridResult}`` in hook order.

    Examples:
        >>> from analysis import all_pairs_sweep
        >>> from hookedmlp import HookedMLP
        >>> from hookedmlp.data import load_mnist
        >>> model = HookedMLP.from_pretrained("mnist-mlp")
        >>> images, labels = load_mnist("test")
        >>> grids = all_pairs_sweep(model, ["layer0.post", "layer3.post"], digits=(3, 1),
        ...                         images=images[:100], labels=labels[:100])
        >>> list(grids), grids["layer3.post"].loss.shape
        (['layer0.post', 'layer3.post'], (2, 2))
    """
    c = check_coeff(coeff)
    names = _hooks(model, hooks)
    images, labels = scoring_set(images, labels)
    acts, _ = class_activations(model, list(digits), names, method)
    contrasts = [Contrast(h, c * (acts[h][i] - acts[h][j]), a, b)
                 for h in names for i, a in enumerate(digits) for j, b in enumerate(digits)]
    m = evaluate_contrasts(model, images, labels, contrasts, progress=progress)
    normal = unsteered_metrics(model, images, labels, digits)
    k = len(digits) ** 2
    return {h: build_grid(model, h, c, method, digits, {name: v[i * k:(i + 1) * k] for name, v in m.items()},
                          normal, len(labels), keep_distributions) for i, h in enumerate(names)}
