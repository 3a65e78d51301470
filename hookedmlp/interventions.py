"""Directional ablation, activation patching and clamping, as context managers.

Each validates its arguments against the model first (unknown hook, wrong
width, bad index...), then attaches one hook with ``model.hooks()``, so leaving
the ``with`` block, normally or by an exception, removes exactly that hook.
"""

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Union

import torch
from jaxtyping import Float
from torch import Tensor

from hookedmlp.errors import ShapeError, SteeringError

__all__ = ["ablate", "patch", "clamp"]


def _for_hook(model: Any, hook: str, value: Any, what: str) -> tuple[str, Tensor, int]:
    """Check ``hook``; take ``value`` (a tensor, or a mapping holding ``hook``); return the hook, tensor and width."""
    hook = model.resolve_name(hook)
    if isinstance(value, Mapping):
        value = value[hook]
    if not isinstance(value, Tensor):
        raise TypeError(f"{what} must be a tensor or a mapping (SteeringVector, ActivationCache) holding {hook!r}, got {type(value).__name__}")
    return hook, value, model.activation_width(hook)


def _on_model(model: Any, t: Tensor) -> Tensor:
    w = next(model.parameters())
    if not t.is_floating_point():
        t = t.float()
    return t.detach().to(device=w.device, dtype=w.dtype)


@contextmanager
def ablate(model: Any, direction: Union[Float[Tensor, " d"], Mapping[str, Tensor]], hook: str) -> Iterator[Any]:
    """Project ``direction`` out of the activation at ``hook``: ``act - (act . u) u``, ``u = d / |d|``.

    Args:
        model: the model (a ``HookedMLP``).
        direction: a tensor ``[width]``, or a steering vector (its tensor at ``hook``).
        hook: one hook name.

    Yields:
        The model, with the direction projected out inside the ``with`` block.

    Raises:
        ShapeError: a direction of the wrong width.
        SteeringError: a zero or non-finite direction.

    Examples:
        >>> import torch
        >>> from hookedmlp import HookedMLP, MLPConfig
        >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
        >>> from hookedmlp.interventions import ablate
        >>> u = torch.tensor([1.0, 1.0, 0.0])
        >>> with ablate(model, u, "layer0.post"):
        ...     _, cache = model.run_with_cache(torch.rand(2, 4), names_filter="layer0.post")
        >>> torch.allclose(cache["layer0.post"] @ u, torch.zeros(2), atol=1e-6)
        True
    """
    hook, direction, width = _for_hook(model, hook, direction, "direction")
    if direction.shape != (width,):
        raise ShapeError(f"direction has shape {list(direction.shape)}, but the activation at {hook!r} is [batch, {width}]; expected [{width}]")
    d = _on_model(model, direction)
    norm = d.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise SteeringError(f"direction must be non-zero and finite to project out, got norm {float(norm)}")
    u = d / norm

    def project_out(act: Tensor, hook_point: Any) -> Tensor:
        return act - (act @ u).unsqueeze(-1) * u

    with model.hooks(fwd_hooks=[(hook, project_out)]):
        yield model


@contextmanager
def patch(model: Any, hook: str, activations: Union[Tensor, Mapping[str, Tensor]]) -> Iterator[Any]:
    """Replace the activation at ``hook`` with ``activations`` (e.g. from another run's cache).

    Args:
        model: the model (a ``HookedMLP``).
        hook: one hook name.
        activations: ``[batch, d]`` (the batch size must then match the run's),
            ``[d]`` or ``[1, d]`` (broadcast to every example), or an
            ``ActivationCache`` / mapping holding ``hook``.

    Yields:
        The model, with the activation at ``hook`` replaced inside the ``with`` block.

    Raises:
        ShapeError: activations of the wrong width, or a batch that does not match the run's.

    Examples:
        >>> import torch
        >>> from hookedmlp import HookedMLP, MLPConfig
        >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
        >>> from hookedmlp.interventions import patch
        >>> with patch(model, "layer0.post", torch.zeros(3)):
        ...     logits = model(torch.rand(2, 4))
        >>> torch.equal(logits[0], logits[1])  # every example sees the same activation
        True
    """
    hook, activations, width = _for_hook(model, hook, activations, "activations")
    if activations.ndim not in (1, 2) or activations.shape[-1] != width:
        raise ShapeError(f"patch activations have shape {list(activations.shape)}; expected [batch, {width}] or [{width}] for {hook!r}")
    patched = _on_model(model, activations)
    if patched.ndim == 1:
        patched = patched.unsqueeze(0)

    def replace(act: Tensor, hook_point: Any) -> Tensor:
        if patched.shape[0] not in (1, act.shape[0]):
            raise ShapeError(f"patch at {hook!r} holds a batch of {patched.shape[0]} but the run has {act.shape[0]}; patch with a matching batch or a single activation")
        return patched.expand_as(act).clone()

    with model.hooks(fwd_hooks=[(hook, replace)]):
        yield model


@contextmanager
def clamp(model: Any, hook: str, index: Union[int, Sequence[int], Tensor], value: Union[float, Tensor]) -> Iterator[Any]:
    """Fix units ``index`` of the activation at ``hook`` to ``value`` for every example.

    Args:
        model: the model (a ``HookedMLP``).
        hook: one hook name.
        index: a unit index, a list of them, or a boolean mask ``[width]``.
        value: a finite scalar, or one value per index.

    Yields:
        The model, with the units clamped inside the ``with`` block.

    Raises:
        IndexError: a unit index out of range.
        ShapeError: a mask or ``value`` of the wrong shape.
        SteeringError: a non-finite ``value``.

    Examples:
        >>> import torch
        >>> from hookedmlp import HookedMLP, MLPConfig
        >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
        >>> from hookedmlp.interventions import clamp
        >>> with clamp(model, "layer1.post", [1], 5.0):
        ...     _, cache = model.run_with_cache(torch.rand(2, 4), names_filter="layer1.post")
        >>> cache["layer1.post"][:, 1].tolist()
        [5.0, 5.0]
    """
    hook = model.resolve_name(hook)
    width = model.activation_width(hook)
    idx = torch.as_tensor(index if not isinstance(index, bool) else [index])
    if idx.numel() == 0 and not isinstance(index, Tensor):
        idx = idx.long()  # [] is an empty list of ints: clamp nothing
    if idx.dtype == torch.bool:
        if idx.shape != (width,):
            raise ShapeError(f"boolean index has shape {list(idx.shape)}; expected [{width}] for {hook!r}")
        idx = idx.nonzero().squeeze(1)
    if idx.is_floating_point() or idx.ndim > 1:
        raise TypeError(f"index must be an int, a list of ints or a boolean mask, got {index!r}")
    idx = idx.reshape(-1)
    if len(idx) and (int(idx.min()) < -width or int(idx.max()) >= width):
        raise IndexError(f"unit index out of range for {hook!r} of width {width}: got {idx.tolist()}; expected 0..{width - 1}")
    val = _on_model(model, torch.as_tensor(value))
    if not bool(torch.isfinite(val).all()):
        raise SteeringError(f"clamp value must be finite, got {value!r}")
    if val.ndim > 1 or (val.ndim == 1 and len(val) not in (1, len(idx))):
        raise ShapeError(f"clamp value has shape {list(val.shape)}; expected a scalar or [{len(idx)}] (one per index)")
    idx = idx.to(val.device)

    def fix(act: Tensor, hook_point: Any) -> Tensor:
        out = act.clone()
        out[:, idx] = val
        return out

    with model.hooks(fwd_hooks=[(hook, fix)]):
        yield model
