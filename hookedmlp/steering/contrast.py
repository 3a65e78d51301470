"""Building a steering vector from a contrast: ``coeff * (act(a) - act(b))`` at one or more hook points.

A side of the contrast is a class label of some labelled data (see ``hookedmlp.data.labelled``:
the ``exemplar``-th example of the class, or its mean) or input tensors (averaged).
Activations come from a pass where no hook runs, so active steering never leaks into a new
vector.
"""

from collections.abc import Sequence
from typing import Any, Optional, Union

import torch
from torch import Tensor

from hookedmlp.checks import check_choice, check_class, check_coeff, check_int, check_scale_fits
from hookedmlp.data.labelled import METHODS, Labelled, as_labelled, default_data
from hookedmlp.errors import ArgumentTypeError, SteeringError, UsageError
from hookedmlp.hooks.context import HookContext
from hookedmlp.models import facts
from hookedmlp.steering.classes import class_activations
from hookedmlp.steering.provenance import model_fingerprint, warn_training_mode
from hookedmlp.steering.vector import SteeringVector

__all__ = ["build_steering_vector", "steer"]


def _side(
    model: Any, x: Any, which: str, hooks: list[str], method: str, exemplar: int, source: Optional[Labelled]
) -> tuple[dict[str, Tensor], int, str]:
    """Mean activation at each hook for a class label (of ``source``) or inputs, with its example count and label."""
    if isinstance(x, Tensor):
        batch = facts.as_batch(model, x)
        if not bool(torch.isfinite(batch).all()):
            raise SteeringError(f"contrast input {which} contains NaN or infinite values; pass finite inputs")
        acts = facts.clean_activations(model, batch, hooks)
        return {k: v.mean(0) for k, v in acts.items()}, batch.shape[0], f"input(n={batch.shape[0]})"
    source = source if source is not None else default_data(model)
    check_class(x, source.n_classes, f"{which} (a class of {source.name}, or input tensors)")
    acts, counts, _ = class_activations(model, [x], hooks, method, exemplar, source)
    return {k: v[0] for k, v in acts.items()}, counts[0], str(x)


def build_steering_vector(
    model: Any,
    a: Any,
    b: Any,
    hook: Union[str, Sequence[str]],
    coeff: float = 1.0,
    method: str = "first",
    exemplar: int = 0,
    data: Any = None,
) -> SteeringVector:
    """``coeff * (act(a) - act(b))`` at ``hook``: the function behind ``model.steering_vector``.

    ``a`` and ``b`` are class labels (int) or input tensors; anything else is refused with a
    message naming the side (annotated ``Any`` so that the message, not a type checker, says so).
    """
    c = check_coeff(coeff)
    method = check_choice(method, METHODS, "method")
    check_int(exemplar, "exemplar", low=0)
    names = [hook] if isinstance(hook, str) else list(hook)
    if not names:
        raise SteeringError("hook is an empty list; pass at least one hook name, e.g. 'layer0.post'")
    hooks = list(dict.fromkeys(n for h in names for n in model.resolve_names(h)))
    labels_used = not (isinstance(a, Tensor) and isinstance(b, Tensor))
    source = None
    if labels_used:
        source = as_labelled(data) if data is not None else default_data(model)
    warn_training_mode(model, "building a steering vector on")
    with torch.no_grad():
        acts_a, n_a, label_a = _side(model, a, "a", hooks, method, exemplar, source)
        acts_b, n_b, label_b = _side(model, b, "b", hooks, method, exemplar, source)
    diffs = {k: acts_a[k] - acts_b[k] for k in hooks}
    check_scale_fits(c, list(diffs.values()), next(iter(diffs.values())).dtype)
    meta: dict[str, Any] = {"label": f"{label_a} - {label_b}", "a": label_a, "b": label_b}
    if source is not None:
        meta.update(method=method, data=source.name)
        if method == "first" and exemplar:
            meta["exemplar"] = exemplar
    meta.update(n_examples=[n_a, n_b], coeff=c, model=model_fingerprint(model))
    return SteeringVector({k: c * v for k, v in diffs.items()}, meta)


def steer(
    model: Any,
    vector: Optional[SteeringVector] = None,
    *,
    a: Any = None,
    b: Any = None,
    hook: Union[str, Sequence[str], None] = None,
    coeff: float = 1.0,
    method: str = "first",
    exemplar: int = 0,
    data: Any = None,
) -> HookContext:
    """Context manager adding a steering vector to ``model``: ``with steer(model, a=3, b=1, hook="layer0.post"):``.

    Pass a ``SteeringVector`` (scaled by ``coeff``), or ``a``, ``b`` and ``hook`` to build one
    (see ``build_steering_vector``). Nested contexts add up; leaving one removes exactly its
    hooks. Works on any ``HookedRoot``; ``model.steer(...)`` is the same.

    Examples:
        >>> ones = images[labels == 1][:5]
        >>> with steer(model, a=3, b=1, hook="layer0.post"):
        ...     model(ones).argmax(-1).tolist()
        [3, 3, 3, 3, 3]
    """
    if vector is not None:
        if not isinstance(vector, SteeringVector):
            raise ArgumentTypeError(
                f"steer() takes a SteeringVector, got {type(vector).__name__}; or pass a=, b=, hook="
            )
        if a is not None or b is not None or hook is not None:
            raise UsageError("pass either a SteeringVector or a=, b=, hook=, not both")
        return vector.apply(model, coeff=coeff)
    missing = [k for k, v in (("a", a), ("b", b), ("hook", hook)) if v is None]
    if missing:
        raise UsageError(f"steer() needs a SteeringVector or all of a=, b=, hook=; missing {', '.join(missing)}")
    built = build_steering_vector(model, a, b, hook, coeff=coeff, method=method, exemplar=exemplar, data=data)
    return built.apply(model)
