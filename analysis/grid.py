"""The study's 10 x 10 grid: steer with ``a - b`` at one hook, score on the test set without b."""

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor

from analysis.engine import CHUNK_ROWS, METRICS, Contrast, evaluate_contrasts, unsteered_metrics
from hookedmlp import HookedMLP, UsageError
from hookedmlp.data import load_mnist
from hookedmlp.io import atomic_write
from hookedmlp.steering import check_coeff, class_activations, model_fingerprint

__all__ = ["GridResult", "steering_grid", "digit_vectors", "scoring_set"]

_TITLES = {
    "loss": "mean cross-entropy on the test set without digit b",
    "flip_rate": "share of b test images classified as a",
    "accuracy_other": "accuracy on the test images of other digits",
    "kl": "mean KL(unsteered || steered) on the other digits",
}


@dataclasses.dataclass
class GridResult:
    """One value per (a, b) cell for each metric; rows are ``a``, columns ``b``.

    Made by ``steering_grid`` and ``all_pairs_sweep``; compares equal by value and
    round-trips through ``save`` / ``load``.

    Args:
        hook: the hook point where the vectors were added.
        coeff: the vectors' coefficient.
        method: ``"first"`` or ``"mean"`` (how digits became activations).
        digits: the digits of the rows and columns.
        loss: ``[len(digits), len(digits)]`` mean cross-entropy on the set without ``b``.
        flip_rate: ``[len(digits), len(digits)]`` share of ``b`` images classified as ``a``.
        accuracy_other: ``[len(digits), len(digits)]`` accuracy on the other digits.
        kl: ``[len(digits), len(digits)]`` mean KL(unsteered || steered) on the other digits.
        normal: the unsteered model's loss without ``b``, ``[len(digits)]``.
        normal_accuracy: the unsteered model's accuracy without ``b``, ``[len(digits)]``.
        n_test: the number of images scored.
        model: the model's fingerprint (``hookedmlp.steering.model_fingerprint``).
        distributions: ``[a, b, digit, class]`` (softmax of the steered mean logits)
            or ``None`` when not kept.

    Examples:
        >>> from analysis import steering_grid
        >>> from hookedmlp import HookedMLP, UsageError
        >>> from hookedmlp.data import load_mnist
        >>> images, labels = load_mnist("test")
        >>> grid = steering_grid(HookedMLP.from_pretrained("mnist-mlp"), digits=(3, 1),
        ...                      images=images[:200], labels=labels[:200])
        >>> grid.digits, grid.loss.shape, grid.n_test
        ([3, 1], (2, 2), 200)
    """

    hook: str
    coeff: float
    method: str
    digits: list[int]
    loss: np.ndarray
    flip_rate: np.ndarray
    accuracy_other: np.ndarray
    kl: np.ndarray
    normal: np.ndarray
    normal_accuracy: np.ndarray
    n_test: int
    model: str
    distributions: Optional[np.ndarray] = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GridResult):
            return NotImplemented
        a, b = self.to_dict(), other.to_dict()
        return a.keys() == b.keys() and all(a[k] == b[k] for k in a)

    def metric(self, name: str) -> np.ndarray:
        """The ``[a, b]`` array of one metric (``loss``, ``flip_rate``, ``accuracy_other``, ``kl``).

        Args:
            name: the metric's name, one of ``METRICS``.

        Returns:
            The ``[len(digits), len(digits)]`` array.

        Raises:
            KeyError: an unknown metric.

        Examples:
            >>> from analysis import steering_grid
            >>> from hookedmlp import HookedMLP, UsageError
            >>> from hookedmlp.data import load_mnist
            >>> images, labels = load_mnist("test")
            >>> grid = steering_grid(HookedMLP.from_pretrained("mnist-mlp"), digits=(3, 1),
            ...                      images=images[:200], labels=labels[:200])
            >>> grid.metric("flip_rate").shape
            (2, 2)
        """
        if name not in METRICS:
            raise KeyError(f"unknown metric {name!r}; expected one of {', '.join(METRICS)}")
        return getattr(self, name)

    def cell(self, a: int, b: int) -> dict[str, float]:
        """All metrics of the cell ``a - b``.

        Args:
            a: the row digit (added).
            b: the column digit (subtracted, and left out of the scores).

        Returns:
            ``{metric: value}`` for each of ``METRICS``.

        Examples:
            >>> from analysis import steering_grid
            >>> from hookedmlp import HookedMLP, UsageError
            >>> from hookedmlp.data import load_mnist
            >>> images, labels = load_mnist("test")
            >>> grid = steering_grid(HookedMLP.from_pretrained("mnist-mlp"), digits=(3, 1),
            ...                      images=images[:200], labels=labels[:200])
            >>> sorted(grid.cell(3, 1))
            ['accuracy_other', 'flip_rate', 'kl', 'loss']
        """
        i, j = self.digits.index(a), self.digits.index(b)
        return {m: float(self.metric(m)[i, j]) for m in METRICS}

    def off_diagonal(self, name: str = "loss") -> np.ndarray:
        """The metric's values with ``a != b``, flattened row by row.

        Args:
            name: the metric's name, one of ``METRICS``.

        Returns:
            A 1-D array of ``len(digits) * (len(digits) - 1)`` values.

        Examples:
            >>> from analysis import steering_grid
            >>> from hookedmlp import HookedMLP, UsageError
            >>> from hookedmlp.data import load_mnist
            >>> images, labels = load_mnist("test")
            >>> grid = steering_grid(HookedMLP.from_pretrained("mnist-mlp"), digits=(3, 1),
            ...                      images=images[:200], labels=labels[:200])
            >>> bool((grid.off_diagonal("loss") == [grid.loss[0, 1], grid.loss[1, 0]]).all())
            True
        """
        values = self.metric(name)
        return values[~np.eye(len(self.digits), dtype=bool)]

    def to_markdown(self, metric: str = "loss", precision: int = 2) -> str:
        """A Markdown table, rows ``a``, columns ``b``; the loss table ends with the "Normal" row.

        Args:
            metric: the metric to show, one of ``METRICS``.
            precision: decimals of each cell.

        Returns:
            The title line, a blank line, then the table.

        Examples:
            >>> from analysis import steering_grid
            >>> from hookedmlp import HookedMLP, UsageError
            >>> from hookedmlp.data import load_mnist
            >>> images, labels = load_mnist("test")
            >>> grid = steering_grid(HookedMLP.from_pretrained("mnist-mlp"), digits=(3, 1),
            ...                      images=images[:200], labels=labels[:200])
            >>> table = grid.to_markdown("loss")
            >>> table.splitlines()[0]
            'mean cross-entropy on the test set without digit b (layer0.post, coeff 1, method first)'
            >>> table.splitlines()[-1].startswith("| Normal |")
            True
        """
        values = self.metric(metric)
        head = "| a \\ b | " + " | ".join(str(d) for d in self.digits) + " |"
        lines = [f"{_TITLES[metric]} ({self.hook}, coeff {self.coeff:g}, method {self.method})", "", head,
                 "|" + "---|" * (len(self.digits) + 1)]
        for i, a in enumerate(self.digits):
            lines.append(f"| {a} | " + " | ".join(f"{v:.{precision}f}" for v in values[i]) + " |")
        if metric == "loss":
            lines.append("| Normal | " + " | ".join(f"{v:.3f}" for v in self.normal) + " |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data.

        Returns:
            ``{field: value}`` with arrays as nested lists.

        Examples:
            >>> from analysis import steering_grid
            >>> from hookedmlp import HookedMLP, UsageError
            >>> from hookedmlp.data import load_mnist
            >>> images, labels = load_mnist("test")
            >>> grid = steering_grid(HookedMLP.from_pretrained("mnist-mlp"), digits=(3, 1),
            ...                      images=images[:200], labels=labels[:200])
            >>> d = grid.to_dict()
            >>> d["hook"], d["digits"], len(d["loss"])
            ('layer0.post', [3, 1], 2)
        """
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.tolist() if isinstance(v, np.ndarray) else v
        return out

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Write JSON atomically.

        Args:
            path: the file to write.

        Examples:
            >>> import pathlib, tempfile
            >>> from analysis import GridResult
            >>> from analysis import steering_grid
            >>> from hookedmlp import HookedMLP, UsageError
            >>> from hookedmlp.data import load_mnist
            >>> images, labels = load_mnist("test")
            >>> grid = steering_grid(HookedMLP.from_pretrained("mnist-mlp"), digits=(3, 1),
            ...                      images=images[:200], labels=labels[:200])
            >>> path = pathlib.Path(tempfile.mkdtemp()) / "grid.json"
            >>> grid.save(path)
            >>> GridResult.load(path) == grid
            True
        """
        with atomic_write(path, "w") as f:
            json.dump(self.to_dict(), f)

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"]) -> "GridResult":
        """Read a grid written by ``save``.

        Args:
            path: the JSON file.

        Returns:
            The grid, arrays as numpy arrays.

        Raises:
            ValueError: the file is not a saved ``GridResult``.

        Examples:
            >>> import pathlib, tempfile
            >>> from analysis import GridResult
            >>> from analysis import steering_grid
            >>> from hookedmlp import HookedMLP, UsageError
            >>> from hookedmlp.data import load_mnist
            >>> images, labels = load_mnist("test")
            >>> grid = steering_grid(HookedMLP.from_pretrained("mnist-mlp"), digits=(3, 1),
            ...                      images=images[:200], labels=labels[:200])
            >>> path = pathlib.Path(tempfile.mkdtemp()) / "grid.json"
            >>> grid.save(path)
            >>> GridResult.load(path).cell(3, 1) == grid.cell(3, 1)
            True
        """
        with open(path) as f:
            data = json.load(f)
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or not names - {"distributions"} <= set(data):
            raise ValueError(f"{str(path)!r} is not a saved GridResult; expected keys {sorted(names)}")
        arrays = {"loss", "flip_rate", "accuracy_other", "kl", "normal", "normal_accuracy", "distributions"}
        return cls(**{k: (np.asarray(v) if k in arrays and v is not None else v) for k, v in data.items() if k in names})

    def __repr__(self) -> str:
        off = self.off_diagonal("loss")
        return (f"GridResult({self.hook}, coeff={self.coeff:g}, method={self.method}, {len(self.digits)}x{len(self.digits)}, "
                f"mean loss off-diagonal {off.mean():.3f} (normal {self.normal.mean():.3f}), "
                f"mean flip rate {self.off_diagonal('flip_rate').mean():.3f}, n_test={self.n_test})")


def scoring_set(images: Optional[Tensor] = None, labels: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """The given set (checked: non-empty, finite, one integer label 0-9 per image), or the MNIST test set.

    Args:
        images: the images, or ``None`` (with ``labels``) for the MNIST test set.
        labels: their labels 0-9, or ``None``.

    Returns:
        ``(images, labels)``.

    Raises:
        ValueError: only one of the two, an empty or mismatched set, labels that are
            not integers 0-9, or non-finite images.

    Examples:
        >>> import torch
        >>> from analysis.grid import scoring_set
        >>> images, labels = scoring_set()
        >>> tuple(images.shape)
        (10000, 784)
        >>> scoring_set(torch.zeros(2, 784), torch.tensor([3, 1]))[1].tolist()
        [3, 1]
    """
    if images is None and labels is None:
        return load_mnist("test")
    if images is None or labels is None:
        raise UsageError("pass both images and labels, or neither (for the MNIST test set)")
    if len(images) == 0 or len(images) != len(labels):
        raise UsageError(f"the scoring set needs one label per image and at least one image; got {len(images)} images, {len(labels)} labels")
    if labels.is_floating_point() or labels.ndim != 1:
        raise UsageError(f"labels must be a 1-D integer tensor of digits 0-9, got dtype {labels.dtype}, shape {list(labels.shape)}")
    bad = labels[(labels < 0) | (labels > 9)]
    if len(bad):
        raise UsageError(f"labels must be a 1-D integer tensor of digits 0-9, got values {sorted(set(bad.tolist()))[:5]} "
                         f"out of range ({len(bad)} labels)")
    if not bool(torch.isfinite(images).all()):
        raise UsageError("images contain NaN or infinite values; the scores would be meaningless")
    return images, labels


def digit_vectors(model: HookedMLP, hook: str, digits: Sequence[int], coeff: float = 1.0, method: str = "first") -> dict[tuple[int, int], Tensor]:
    """``coeff * (act(a) - act(b))`` at ``hook`` for every pair of ``digits``.

    Args:
        model: a model on MNIST inputs.
        hook: one hook name.
        digits: the digits to pair (every ordered pair, ``a == b`` included).
        coeff: the vectors' coefficient.
        method: ``"first"`` (first training image) or ``"mean"`` (class means).

    Returns:
        ``{(a, b): vector}`` in row-major order of ``digits``.

    Examples:
        >>> from analysis.grid import digit_vectors
        >>> from hookedmlp import HookedMLP, UsageError
        >>> vectors = digit_vectors(HookedMLP.from_pretrained("mnist-mlp"), "layer0.post", [3, 1])
        >>> list(vectors), vectors[3, 1].shape
        ([(3, 3), (3, 1), (1, 3), (1, 1)], torch.Size([512]))
    """
    c = check_coeff(coeff)
    acts, _ = class_activations(model, list(digits), [hook], method)
    act = acts[hook]
    return {(a, b): c * (act[i] - act[j]) for i, a in enumerate(digits) for j, b in enumerate(digits)}


def build_grid(model: HookedMLP, hook: str, coeff: float, method: str, digits: Sequence[int],
               metrics: dict[str, np.ndarray], normal: dict[str, np.ndarray], n_test: int, keep_distributions: bool) -> GridResult:
    """Assemble a GridResult from per-cell metric arrays in row-major (a, b) order."""
    k = len(digits)
    shaped = {m: metrics[m].reshape(k, k) for m in METRICS}
    return GridResult(hook=hook, coeff=float(coeff), method=method, digits=list(digits), **shaped,
                      normal=normal["loss"], normal_accuracy=normal["accuracy_other"], n_test=n_test,
                      model=model_fingerprint(model),
                      distributions=metrics["distributions"].reshape(k, k, *metrics["distributions"].shape[1:]) if keep_distributions else None)


def steering_grid(model: HookedMLP, hook: str = "layer0.post", coeff: float = 1.0, method: str = "first",
                  images: Optional[Tensor] = None, labels: Optional[Tensor] = None, digits: Sequence[int] = tuple(range(10)),
                  chunk_rows: int = CHUNK_ROWS, keep_distributions: bool = False, progress: bool = False) -> GridResult:
    """Steer with ``a - b`` at ``hook`` for every pair and score each cell.

    Args:
        model: the model (evaluated as it is: put it in eval mode first).
        hook: where to add the vectors (the study: ``layer0.post``).
        coeff: the vectors' coefficient (see ``HookedMLP.steering_vector``).
        method: ``"first"`` (first training image, the study) or ``"mean"`` (class means).
        images: the scoring set's images (default: the 10,000 MNIST test images).
        labels: their labels.
        digits: the digits for rows and columns.
        chunk_rows: at most this many rows per suffix pass (bounds memory).
        keep_distributions: keep the ``[a, b, digit, class]`` distributions.
        progress: show a tqdm bar.

    Returns:
        A ``GridResult``. Equal to one full hooked forward pass per cell
            (``with model.steer(...)``), to float rounding.

    Examples:
        >>> from analysis import steering_grid
        >>> from hookedmlp import HookedMLP, UsageError
        >>> from hookedmlp.data import load_mnist
        >>> model = HookedMLP.from_pretrained("mnist-mlp")
        >>> images, labels = load_mnist("test")
        >>> grid = steering_grid(model, images=images[:50], labels=labels[:50])
        >>> grid.loss.shape
        (10, 10)
    """
    model.resolve_name(hook)
    images, labels = scoring_set(images, labels)
    vectors = digit_vectors(model, hook, digits, coeff, method)
    contrasts = [Contrast(hook, v, a, b) for (a, b), v in vectors.items()]
    metrics = evaluate_contrasts(model, images, labels, contrasts, chunk_rows=chunk_rows, progress=progress)
    normal = unsteered_metrics(model, images, labels, digits)
    return build_grid(model, hook, coeff, method, digits, metrics, normal, len(labels), keep_distributions)
