"""Linear probes: cross-validated accuracy of L2-regularised logistic regression on activations.

Plain torch, float64, fitted by L-BFGS from zero weights with seeded stratified folds, so a probe
is deterministic. The activations are centred and scaled once over every given example (by
per-feature means and one overall scale making the mean squared example norm 1, no labels
used), so the penalty means the same at every hook point of any width, and the fit is well
conditioned. Every (problem, fold) fit is one block of a single sum of independent convex
objectives: one L-BFGS run and one matrix product per step fit them all.
"""

import dataclasses
from collections.abc import Sequence
from typing import Optional

import torch
from jaxtyping import Float, Int, Shaped
from torch import Tensor

from hookedmlp.checks import check_int, check_number
from hookedmlp.errors import ConfigError, InputDtypeError, ShapeError, UsageError

__all__ = ["ProbeResult", "linear_probe"]


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """Cross-validated accuracy of each probe: ``accuracy[p]`` pooled over folds, ``fold_accuracy[p, f]`` per fold.

    ``classes[p]`` are the classes probe ``p`` tells apart (every class for one multinomial probe,
    ``(a, b)`` for a pair); ``grad_max`` is the largest gradient entry left when L-BFGS stopped.
    """

    classes: list[tuple[int, ...]]
    accuracy: Float[Tensor, " p"]
    fold_accuracy: Float[Tensor, "p f"]
    grad_max: float


def _folds(labels: Tensor, classes: Sequence[int], folds: int, seed: int) -> Tensor:
    """``[n]``: each example's fold (-1 outside ``classes``); a shuffle within each class, dealt in turn.

    Each class's shuffle is seeded by ``(seed, class)`` alone, so a class's folds do not depend on
    which other classes are probed.
    """
    out = torch.full((len(labels),), -1, dtype=torch.long)
    for c in sorted(classes):
        g = torch.Generator().manual_seed(seed * 1_000_003 + c)
        rows = (labels == c).nonzero().squeeze(1)
        if len(rows) < folds:
            raise UsageError(
                f"class {c} has {len(rows)} example(s); {folds}-fold cross-validation needs at least {folds} "
                "per class: pass fewer folds or more examples"
            )
        out[rows[torch.randperm(len(rows), generator=g)]] = torch.arange(len(rows)) % folds
    return out


def _fit(z: Tensor, target: Tensor, train: Tensor, n_out: int, l2: float, max_iter: int) -> tuple[Tensor, float]:
    """Logits ``[p, m, f, classes]``: problem ``p``'s rows ``z[p]`` ``[m, r]``, fitted once per fold ``f`` on the rows
    ``train[p, :, f]`` marks (``target``: each row's class within its problem).

    ``n_out == 1`` is binary logistic regression (the first class's logit fixed at 0); otherwise
    multinomial. Each fit minimises its mean cross-entropy plus ``l2 / 2 * ||W||^2`` (biases free).
    """
    p, m, r = z.shape
    f = train.shape[2]
    w = torch.zeros(p, f * n_out, r, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(p, 1, f, n_out, dtype=torch.float64, requires_grad=True)
    weight = train.to(torch.float64) / train.sum(1, keepdim=True).clamp(min=1)  # [p, m, f]
    index = target.clamp(min=0).view(p, m, 1, 1).expand(p, m, f, 1)

    def logits() -> Tensor:
        out = (z @ w.transpose(1, 2)).view(p, m, f, n_out) + b
        return torch.cat([torch.zeros_like(out[..., :1]), out], 3) if n_out == 1 else out

    def closure() -> Tensor:
        opt.zero_grad()
        nll = -torch.log_softmax(logits(), 3).gather(3, index).squeeze(3)
        loss = (nll * weight).sum() + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-7,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    with torch.enable_grad():  # a caller's no_grad must not stop the fit
        opt.step(closure)
        closure()
    grad_max = max(float(w.grad.abs().max()), float(b.grad.abs().max()))
    with torch.no_grad():
        return logits(), grad_max


def _rows(x: Tensor, rows: list[Tensor]) -> Tensor:
    """``[p, m, r]``: each problem's rows (zero-padded), in coordinates of their own span when that is smaller.

    A fit's optimal weights lie in the span of its training rows (the penalty removes any other
    component), so where ``d`` exceeds the ``m`` rows, fitting on ``U sqrt(L)`` from the rows' Gram
    matrix ``X X^T = U L U^T`` (which is ``X V`` for ``X``'s right singular vectors ``V``) is the same
    fit with ``m`` features instead of ``d``.
    """
    m = max(len(r) for r in rows)
    padded = torch.zeros(len(rows), m, x.shape[1], dtype=torch.float64)
    for j, idx in enumerate(rows):
        padded[j, : len(idx)] = x[idx]
    if x.shape[1] <= m:
        return padded
    evals, evecs = torch.linalg.eigh(padded @ padded.transpose(1, 2))
    return evecs * evals.clamp(min=0).sqrt().unsqueeze(1)


def linear_probe(
    activations: Shaped[Tensor, "n *example"],  # noqa: F821 (a jaxtyping shape)
    labels: Int[Tensor, " n_labels"],
    pairs: Optional[Sequence[tuple[int, int]]] = None,
    folds: int = 5,
    l2: float = 1e-3,
    seed: int = 0,
    max_iter: int = 500,
) -> ProbeResult:
    """Cross-validated accuracy of linear probes (logistic regression) reading the classes from ``activations``.

    Without ``pairs``, one multinomial probe tells every class in ``labels`` apart; with ``pairs``,
    one binary probe per pair ``(a, b)`` tells ``a`` from ``b`` on their examples only. Folds are
    stratified: each class's examples, shuffled by ``seed``, are dealt to the folds in turn; each
    fold is scored by the probe fitted on the others. Each fit minimises the mean cross-entropy
    over its training examples plus ``l2 / 2`` times the squared weights (not the biases): the
    objective of scikit-learn's ``LogisticRegression(C=1 / (l2 * n_train))`` on the same
    centred and scaled features.

    Args:
        activations: ``[n, *shape]`` (flattened to ``[n, d]``), finite floating point.
        labels: ``[n]`` integer classes.
        pairs: the ``(a, b)`` pairs to probe, or None for one probe of every class.
        folds: the number of folds (at least 2; every probed class needs that many examples).
        l2: the penalty on the weights (> 0: the fit is unique even where the classes separate).
        seed: seeds the shuffle that deals examples to folds.
        max_iter: L-BFGS iterations at most.

    Returns:
        A ``ProbeResult``: accuracy per probe (pooled over folds) and per fold.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(40, 3, generator=g) + torch.arange(2).repeat_interleave(20)[:, None] * 4
        >>> y = torch.arange(2).repeat_interleave(20)
        >>> linear_probe(x, y).accuracy.tolist()
        [1.0]
    """
    if not activations.is_floating_point():
        raise InputDtypeError(f"activations must be floating point, got {activations.dtype}; convert with .float()")
    if activations.ndim < 2 or labels.ndim != 1 or len(labels) != len(activations):
        raise ShapeError(
            f"expected activations [n, *shape] and labels [n], got {list(activations.shape)} and {list(labels.shape)}"
        )
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise InputDtypeError(f"labels must be integer classes, got {labels.dtype}; convert with .long()")
    folds = check_int(folds, "folds", low=2)
    l2 = check_number(l2, "l2", 0.0, low_open=True)
    check_int(seed, "seed", low=0)
    check_int(max_iter, "max_iter", low=1)
    x = activations.detach().reshape(len(activations), -1).to("cpu", torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise UsageError("activations contain NaN or infinite values; a probe needs finite activations")
    labels = labels.to("cpu").long()
    present = sorted(set(labels.tolist()))
    problems = [tuple(present)] if pairs is None else [tuple(p) for p in pairs]
    for p in problems:
        if len(p) < 2 or len(set(p)) != len(p):
            raise ConfigError(f"a probe needs two or more distinct classes, got {p}")
        missing = [c for c in p if c not in present]
        if missing:
            raise ConfigError(f"class(es) {missing} have no example in labels; the labels hold {present}")
    fold = _folds(labels, sorted({c for p in problems for c in p}), folds, seed)
    x = x - x.mean(0)
    scale = x.pow(2).sum(1).mean().sqrt()  # the mean squared example norm becomes 1: one l2 fits every width
    x = x / (scale if scale > 0 else 1.0)
    # a pair and its reverse are one probe (the same rows and folds; the weights change sign)
    unique = list(dict.fromkeys(tuple(sorted(p)) for p in problems))
    rows = [torch.isin(labels, torch.tensor(p)).nonzero().squeeze(1) for p in unique]
    m = max(len(r) for r in rows)
    target = torch.full((len(unique), m), -1, dtype=torch.long)  # each row's class within its problem
    held = torch.zeros(len(unique), m, folds, dtype=torch.bool)
    for j, (p, idx) in enumerate(zip(unique, rows)):
        target[j, : len(idx)] = torch.tensor([p.index(c) for c in labels[idx].tolist()])
        held[j, : len(idx)] = fold[idx].unsqueeze(1) == torch.arange(folds)
    inside = (target >= 0).unsqueeze(2)
    n_out = len(unique[0]) if pairs is None else 1
    logits, grad_max = _fit(_rows(x, rows), target, inside & ~held, n_out, l2, max_iter)
    correct = logits.argmax(3) == target.unsqueeze(2)  # [p, m, f]
    hits, totals = (correct & held).sum(1).to(torch.float64), held.sum(1).to(torch.float64)
    back = [unique.index(tuple(sorted(p))) for p in problems]
    return ProbeResult(problems, (hits.sum(1) / totals.sum(1))[back], (hits / totals)[back], grad_max)
