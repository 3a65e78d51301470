"""Directional ablation, activation patching and clamping, as hook contexts.

Each checks its arguments against the model when called (unknown hook, wrong shape, bad
index...), and returns a ``HookContext`` holding one hook: leaving the ``with`` block,
normally or by an exception, removes exactly that hook. Activations may have any shape per
example (``[512]`` for an MLP, ``[C, H, W]`` for a CNN); "units" are the first dimension.
"""

from collections.abc import Mapping, Sequence
from typing import Any, Union

import torch
from torch import Tensor

from hookedmlp.checks import check_finite
from hookedmlp.errors import (
    ArgumentTypeError,
    ShapeError,
    SteeringError,
    UnitIndexError,
)
from hookedmlp.hooks.context import HookContext
from hookedmlp.models import facts
from hookedmlp.models.facts import check_example_shape, example_shape

__all__ = ["ablate", "patch", "clamp"]


def _for_hook(model: Any, hook: str, value: Any, what: str) -> tuple[str, Tensor, tuple[int, ...]]:
    """The checked hook, ``value`` as a finite tensor (from a mapping holding ``hook``), and the activation shape."""
    hook = model.resolve_name(hook)
    if isinstance(value, Mapping):
        value = value[hook]
    if not isinstance(value, Tensor):
        raise ArgumentTypeError(
            f"{what} must be a tensor or a mapping (SteeringVector, ActivationCache) holding "
            f"{hook!r}, got {type(value).__name__}"
        )
    check_finite(value, what)  # one rule for every intervention: the values written into an activation are finite
    return hook, value, facts.activation_shape(model, hook)


def _on_model(model: Any, t: Tensor) -> Tensor:
    ref = facts.reference_tensor(model)
    t = t.detach() if t.is_floating_point() else t.detach().float()
    if ref is None:
        return t
    if t.dtype != ref.dtype and ref.is_floating_point():
        limit = torch.finfo(ref.dtype).max
        if t.numel() and float(t.abs().max()) > limit:
            raise SteeringError(
                f"values up to {float(t.abs().max()):.4g} do not fit the model's {ref.dtype} "
                f"(largest finite {limit:.4g})"
            )
    return t.to(device=ref.device, dtype=ref.dtype)


def ablate(model: Any, direction: Union[Tensor, Mapping[str, Tensor]], hook: str) -> HookContext:
    """Project ``direction`` out of the activation at ``hook``: ``act - (act . u) u`` with ``u = d / |d|``.

    ``direction`` has the shape of one example's activation (or is a steering vector holding
    ``hook``); the dot product runs over all its entries.

    Examples:
        >>> u = torch.tensor([1.0, 1.0] + [0.0] * 6)
        >>> with tiny.ablate(u, "layer0.post"):
        ...     _, cache = tiny.run_with_cache(tiny_x, names_filter="layer0.post")
        >>> bool((cache["layer0.post"] @ u).abs().max() < 1e-6)
        True
    """
    hook, direction, _ = _for_hook(model, hook, direction, "direction")
    check_example_shape(direction, model, hook, "direction")
    d = _on_model(model, direction).reshape(-1)
    norm = d.norm()
    if norm == 0:
        raise SteeringError("direction must be non-zero and finite to project out, got norm 0")
    # a float16 direction's norm may overflow where its entries do not
    u = d / norm if torch.isfinite(norm) else (d.double() / d.double().norm()).to(d.dtype)

    def project_out(act: Tensor, hook: Any) -> Tensor:
        flat = act.reshape(act.shape[0], -1)
        return (flat - (flat @ u).unsqueeze(-1) * u).reshape(act.shape)

    return HookContext(model, [(hook, project_out)])


def patch(model: Any, hook: str, activations: Union[Tensor, Mapping[str, Tensor]]) -> HookContext:
    """Replace the activation at ``hook`` with ``activations`` (e.g. another run's cache).

    ``activations`` is ``[batch, *shape]`` (the run's batch must then match), or ``shape`` or
    ``[1, *shape]`` (the same activation for every example), or a mapping holding ``hook``.

    Examples:
        >>> with tiny.patch("layer0.post", torch.zeros(8)):
        ...     logits = tiny(tiny_x)
        >>> torch.equal(logits[0], logits[1])
        True
    """
    hook, activations, shape = _for_hook(model, hook, activations, "patch activations")
    if tuple(activations.shape) == shape:
        activations = activations.unsqueeze(0)
    if activations.ndim != len(shape) + 1 or tuple(activations.shape[1:]) != shape:
        raise ShapeError(
            f"patch activations have shape {list(activations.shape)}; expected "
            f"[batch, {', '.join(map(str, shape))}] or one example's {example_shape(shape)} for {hook!r}"
        )
    patched = _on_model(model, activations)

    def replace(act: Tensor, hook: Any) -> Tensor:
        if patched.shape[0] not in (1, act.shape[0]):
            raise ShapeError(
                f"patch at {hook.name!r} holds a batch of {patched.shape[0]} but the run has {act.shape[0]}; "
                "patch with a matching batch or a single activation"
            )
        return patched.expand_as(act).clone()

    return HookContext(model, [(hook, replace)])


def clamp(model: Any, hook: str, index: Union[int, Sequence[int], Tensor], value: Union[float, Tensor]) -> HookContext:
    """Fix units ``index`` (of the activation's first dimension) at ``hook`` to ``value`` for every example.

    ``index`` is a unit, a list of units, or a boolean mask over the first dimension;
    ``value`` a finite scalar or one value per unit.

    Examples:
        >>> with tiny.clamp("layer1.post", [1], 5.0):
        ...     _, cache = tiny.run_with_cache(tiny_x, names_filter="layer1.post")
        >>> cache["layer1.post"][:, 1].tolist()
        [5.0, 5.0, 5.0, 5.0, 5.0]
    """
    hook = model.resolve_name(hook)
    shape = facts.activation_shape(model, hook)
    if not shape:
        raise ShapeError(
            f"clamp fixes units of the activation's first dimension, but {hook!r} holds one number per example"
        )
    units = shape[0]
    idx = torch.as_tensor(index if not isinstance(index, bool) else [index])
    if idx.numel() == 0 and not isinstance(index, Tensor):
        idx = idx.long()  # [] is an empty list of units: clamp nothing
    if idx.dtype == torch.bool:
        if idx.shape != (units,):
            raise ShapeError(f"boolean index has shape {list(idx.shape)}; expected [{units}] for {hook!r}")
        idx = idx.nonzero().squeeze(1)
    if idx.is_floating_point() or idx.ndim > 1:
        raise ArgumentTypeError(f"index must be an int, a list of ints or a boolean mask, got {index!r}")
    idx = idx.reshape(-1)
    if len(idx) and (int(idx.min()) < -units or int(idx.max()) >= units):
        of = f" (the first dimension of its {example_shape(shape)} activation)" if len(shape) > 1 else ""
        raise UnitIndexError(
            f"unit index out of range for {hook!r} with {units} units{of}: got {idx.tolist()}; "
            f"expected 0..{units - 1} (or -{units}..-1)"
        )
    value = torch.as_tensor(value)
    check_finite(value, "clamp value")
    val = _on_model(model, value)
    if val.ndim > 1 or (val.ndim == 1 and len(val) not in (1, len(idx))):
        raise ShapeError(f"clamp value has shape {list(val.shape)}; expected a scalar or [{len(idx)}] (one per index)")
    idx = idx.to(val.device)
    if val.ndim == 1 and len(idx):
        val = val.view(-1, *[1] * (len(shape) - 1))

    def fix(act: Tensor, hook: Any) -> Tensor:
        out = act.clone()
        out[:, idx] = val
        return out

    return HookContext(model, [(hook, fix)])
