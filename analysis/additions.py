"""Building the additions of an analysis: the ``a - b`` vector of every pair, at every hook, at every coefficient."""

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from hookedmlp import HookedRoot
from hookedmlp.checks import check_coeff, check_scale_fits
from hookedmlp.data.labelled import Labelled, as_labelled, default_data
from hookedmlp.steering import class_activations
from hookedmlp_analysis.engine import Addition

__all__ = ["class_vectors", "pair_additions", "source_data", "all_pairs"]


def source_data(model: HookedRoot, data: Any) -> Labelled:
    """Where exemplars and class means come from: ``data``, or MNIST's training set for an MNIST-shaped model."""
    return as_labelled(data) if data is not None else default_data(model)


def class_vectors(
    model: HookedRoot,
    hooks: Sequence[str],
    classes: Sequence[int],
    method: str = "first",
    exemplar: int = 0,
    data: Any = None,
) -> dict[str, Tensor]:
    """``{hook: [len(classes), *shape]}``: the activation standing for each class (see ``class_activations``)."""
    acts, _, _ = class_activations(model, list(classes), list(hooks), method, exemplar, source_data(model, data))
    return acts


def pair_additions(
    model: HookedRoot,
    hooks: Sequence[str],
    pairs: Sequence[tuple[int, int]],
    coeffs: Sequence[float] = (1.0,),
    method: str = "first",
    exemplar: int = 0,
    data: Any = None,
) -> list[Addition]:
    """``coeff * (act(a) - act(b))`` for every hook, then pair, then coefficient (in that order)."""
    cs = [check_coeff(c) for c in coeffs]
    classes = sorted({c for pair in pairs for c in pair})
    acts = class_vectors(model, hooks, classes, method, exemplar, data)
    index = {c: i for i, c in enumerate(classes)}
    ia, ib = (torch.tensor([index[p[k]] for p in pairs]) for k in (0, 1))
    out = []
    for hook in hooks:
        diffs = acts[hook][ia] - acts[hook][ib]
        check_scale_fits(max(abs(c) for c in cs), [diffs], diffs.dtype)  # one overflow check for all of the hook's
        for (a, b), diff in zip(pairs, diffs):
            out.extend(Addition(hook, c * diff if c != 1.0 else diff, a, b) for c in cs)
    return out


def all_pairs(classes: Sequence[int]) -> list[tuple[int, int]]:
    """Every ordered pair of ``classes``, ``a == b`` included, row-major."""
    return [(a, b) for a in classes for b in classes]
