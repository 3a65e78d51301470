"""The study's 10 x 10 grid: steer with ``a - b`` at one hook point, score every cell on the test set."""

import dataclasses
import html
import json
import os
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor

from hookedmlp import ConfigError, HookedRoot, SteeringError, UsageError
from hookedmlp.checks import check_choice, check_coeff
from hookedmlp.data import load_mnist
from hookedmlp.data.labelled import as_labelled
from hookedmlp.files.atomic import atomic_write
from hookedmlp.models import facts
from hookedmlp.steering import model_fingerprint
from hookedmlp_analysis.additions import all_pairs, pair_additions, source_data
from hookedmlp_analysis.engine import CHUNK_ELEMENTS, Addition, Evaluation, evaluate_additions
from hookedmlp_analysis.metrics import METRICS, ByName

__all__ = ["GridResult", "steering_grid", "scoring_set", "grids_from_evaluation", "check_overflow", "NORMAL_ROW"]

NORMAL_ROW = (
    "Normal (the study's name): the unsteered model, no vector added, scored on the same test images as each column."
)


@dataclasses.dataclass
class GridResult(ByName):
    """One value per ``(a, b)`` cell for each metric (rows ``a``, columns ``b``), and the unsteered row.

    ``grid.loss``, ``grid.flip_rate``... are ``grid.metrics[name]``; ``grid.normal[name]`` is
    the unsteered model with ``b`` left out. Compares equal by value; ``save`` / ``load``
    round-trip through JSON.
    """

    hook: str
    coeff: float
    method: str
    digits: list[int]
    metrics: dict[str, np.ndarray]
    normal: dict[str, np.ndarray]
    n_test: int
    model: str
    exemplar: int = 0
    engine: str = ""
    distributions: Optional[np.ndarray] = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GridResult):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def metric(self, name: str) -> np.ndarray:
        return self.metrics[check_choice(name, tuple(self.metrics), "metric")]

    def cell(self, a: int, b: int) -> dict[str, float]:
        """Every metric of the cell ``a - b``."""
        i, j = self.digits.index(a), self.digits.index(b)
        return {m: float(v[i, j]) for m, v in self.metrics.items()}

    def kept_distributions(self) -> np.ndarray:
        """``distributions`` ``[a, b, digit, class]``, or a UsageError if the grid was computed without them."""
        if self.distributions is None:
            raise UsageError(
                "this grid has no distributions; compute it with steering_grid(..., keep_distributions=True)"
            )
        return self.distributions

    def off_diagonal(self, name: str = "loss") -> np.ndarray:
        """The metric's values with ``a != b``, row by row."""
        return self.metric(name)[~np.eye(len(self.digits), dtype=bool)]

    @property
    def vectors(self) -> str:
        """How each digit became an activation, in words."""
        if self.method == "mean":
            return "class mean of each digit's training images"
        return (
            "first training image of each digit"
            if self.exemplar == 0
            else f"training image {self.exemplar + 1} of each digit"
        )

    def to_markdown(self, metric: str = "loss", precision: int = 2) -> str:
        """A Markdown table, rows ``a``, columns ``b``, ending with the unsteered ("Normal") row and what it is."""
        values = self.metric(metric)
        title = METRICS[metric].title if metric in METRICS else metric
        lines = [
            f"{title} ({self.hook}, coeff {self.coeff:g}, {self.vectors})",
            "",
            "| a \\ b | " + " | ".join(map(str, self.digits)) + " |",
            "|" + "---|" * (len(self.digits) + 1),
        ]
        for i, a in enumerate(self.digits):
            lines.append(f"| {a} | " + " | ".join(f"{v:.{precision}f}" for v in values[i]) + " |")
        if metric in self.normal:
            lines.append("| Normal | " + " | ".join(f"{v:.{precision + 1}f}" for v in self.normal[metric]) + " |")
            lines += ["", NORMAL_ROW]
        return "\n".join(lines)

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Write JSON atomically."""
        with atomic_write(path, "w") as f:
            json.dump(self.to_dict(), f)

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"]) -> "GridResult":
        """Read a grid written by ``save``."""
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def __repr__(self) -> str:
        return (
            f"GridResult({self.hook}, coeff={self.coeff:g}, {self.vectors}, {len(self.digits)}x{len(self.digits)}, "
            f"mean loss off-diagonal {self.off_diagonal('loss').mean():.3f} (normal {self.normal['loss'].mean():.3f}), "
            f"mean flip rate {self.off_diagonal('flip_rate').mean():.3f}, n_test={self.n_test})"
        )

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{b}</th>" for b in self.digits)
        rows = "".join(
            f"<tr><th>{a}</th>" + "".join(f"<td>{v:.2f}</td>" for v in self.loss[i]) + "</tr>"
            for i, a in enumerate(self.digits)
        )
        return (
            f"<table><caption>{html.escape(METRICS['loss'].title)} ({html.escape(self.hook)}, coeff {self.coeff:g}, "
            f"{html.escape(self.vectors)}); rows a, columns b</caption><thead><tr><th>a \\ b</th>{head}</tr></thead>"
            f"<tbody>{rows}</tbody></table><p>{html.escape(repr(self))}</p>"
        )


def scoring_set(test: Any = None) -> tuple[Tensor, Tensor]:
    """``test`` (``(images, labels)`` or a labelled ``Dataset``) to score on, or MNIST's test set."""
    if test is None:
        return load_mnist("test")
    data = as_labelled(test)
    images = data.rows(torch.arange(len(data)))
    if not images.is_floating_point():
        raise UsageError(f"test images must be floating point, got dtype {images.dtype}; convert with x.float() / 255")
    if not bool(torch.isfinite(images).all()):
        raise UsageError("test images contain NaN or infinite values; the scores would be meaningless")
    return images, data.labels


def grids_from_evaluation(
    model: HookedRoot,
    hooks: Sequence[str],
    digits: Sequence[int],
    coeff: float,
    method: str,
    exemplar: int,
    result: Evaluation,
    n_test: int,
    keep_distributions: bool,
) -> dict[str, GridResult]:
    """``{hook: GridResult}`` from an evaluation of ``pair_additions(model, hooks, all_pairs(digits))``.

    The unsteered row is the diagonal: ``a - a`` is the zero vector, which the engine scores
    on the unsteered logits, with ``b`` left out as for every cell.
    """
    k = len(digits)
    grids = {}
    for i, hook in enumerate(hooks):
        cells = slice(i * k * k, (i + 1) * k * k)
        metrics = {m: v[cells].reshape(k, k) for m, v in result.values.items()}
        normal = {m: np.diagonal(v).copy() for m, v in metrics.items()}
        dist = (
            result.distributions[cells].reshape(k, k, *result.distributions.shape[1:]) if keep_distributions else None
        )
        grids[hook] = GridResult(
            hook,
            float(coeff),
            method,
            list(digits),
            metrics,
            normal,
            n_test,
            model_fingerprint(model),
            exemplar,
            result.engine,
            dist,
        )
    return grids


@torch.no_grad()
def check_overflow(
    model: HookedRoot, additions: Sequence[Addition], images: Tensor, labels: Tensor, coeff: float
) -> None:
    """``SteeringError`` naming the addition's own hook if it makes the logits of a probe image inf or NaN.

    The probe is the first test image of each class, steered by every addition in one batched pass
    per hook. (The evaluation checks every image again, but reports where a vector was carried
    to, a later hook point, not where it was added.)
    """
    classes = sorted(set(labels.tolist()))
    probe = images[[int((labels == c).nonzero()[0, 0]) for c in classes]]
    ref = facts.reference_tensor(model)
    probe = facts.prepare_input(model, probe.to(ref.device, ref.dtype) if ref is not None else probe)
    for hook in dict.fromkeys(a.hook for a in additions):
        group = [a for a in additions if a.hook == hook]
        vectors = torch.stack([a.vector for a in group]).repeat_interleave(len(probe), 0)
        batch = probe.repeat(len(group), *[1] * (probe.ndim - 1))
        out = model.run_with_hooks(
            batch, fwd_hooks=[(hook, lambda act, hook, v=vectors: act + v.to(act.device, act.dtype))]
        )
        logits = facts.select_logits(model, out)
        bad = ~torch.isfinite(logits).all(1)
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            add, cls = group[row // len(probe)], classes[row % len(probe)]
            raise SteeringError(
                f"the vector for {add.a} - {add.b} added at {hook} with coeff {coeff:g} makes the logits overflow "
                f"{logits.dtype} (inf or NaN) on the first test image of class {cls}: the activations grow past the "
                f"dtype's range after {hook}; use a smaller coeff"
            )


def steering_grid(
    model: HookedRoot,
    hook: str = "layer0.post",
    coeff: float = 1.0,
    method: str = "first",
    exemplar: int = 0,
    data: Any = None,
    test: Any = None,
    digits: Optional[Sequence[int]] = None,
    keep_distributions: bool = False,
    chunk_elements: int = CHUNK_ELEMENTS,
    progress: bool = False,
) -> GridResult:
    """Steer with ``a - b`` at ``hook`` for every pair of digits and score each cell.

    Each cell equals one full hooked pass ``with model.steer(a=a, b=b, hook=hook)`` over the
    test set, to float rounding (see ``analysis.engine`` for how it is faster).

    Args:
        model: the model, evaluated as it is (put it in eval mode first).
        hook: where to add the vectors (the study: ``"layer0.post"``).
        coeff: the vectors' coefficient.
        method: ``"first"`` (the ``exemplar``-th training image of each digit; 0 is the study's)
            or ``"mean"`` (class means).
        exemplar: which training image ``"first"`` takes.
        data: where exemplars come from: ``(images, labels)`` or a ``Dataset`` (default: MNIST train).
        test: the scoring set, likewise (default: MNIST's 10,000 test images).
        digits: rows and columns (default: every class of ``data``).
        keep_distributions: keep ``[a, b, digit, class]``, the softmax of each digit's mean logits.
        chunk_elements: at most this many activation entries per suffix pass.
        progress: show a progress bar.

    Examples:
        >>> grid = steering_grid(model, test=(images[:200], labels[:200]), digits=(3, 1))
        >>> grid.loss.shape, round(float(grid.flip_rate[0, 1]), 2)
        ((2, 2), 1.0)
    """
    model.resolve_name(hook)
    check_coeff(coeff)
    images, labels = scoring_set(test)
    source = source_data(model, data)
    digits = list(range(source.n_classes)) if digits is None else list(digits)
    if not digits:
        raise ConfigError("digits is empty; pass at least one class")
    additions = pair_additions(model, [hook], all_pairs(digits), [coeff], method, exemplar, source)
    check_overflow(model, additions, images, labels, coeff)
    result = evaluate_additions(model, images, labels, additions, chunk_elements, progress)
    return grids_from_evaluation(
        model, [hook], digits, coeff, method, exemplar, result, len(labels), keep_distributions
    )[hook]
