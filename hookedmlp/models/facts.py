"""What the library reads off any hooked model: its inputs, its state's version, and its activations' shapes.

Each function works on any ``HookedRoot`` (a hand-written one included) through its hook
surface alone. A model class may answer faster or more precisely with a method of the same
name (a chain reads its shapes from its layout; a captured graph from its sites): the function
then uses that method. A model without ``input_shape`` takes its inputs as batches, as given.
"""

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, Optional

import torch
from torch import Tensor, nn

from hookedmlp.errors import ArgumentTypeError, InputDtypeError, ShapeError, UsageError
from hookedmlp.hooks.names import not_run_error
from hookedmlp.hooks.point import hooks_suppressed
from hookedmlp.sizes import activation_bytes, check_bytes

__all__ = [
    "TRAINING_DEPENDENT",
    "shape_variants",
    "reference_tensor",
    "check_tensor",
    "accepted_input_shapes",
    "prepare_input",
    "as_batch",
    "structure_key",
    "state_tensors",
    "state_version",
    "training_mode_modules",
    "activation_shapes",
    "observed_shapes",
    "shapes_from_pass",
    "activation_shape",
    "check_hook_names",
    "clean_activations",
    "example_shape",
    "select_logits",
    "check_example_shape",
    "select_output",
]

TRAINING_DEPENDENT = (
    nn.modules.dropout._DropoutNd,
    nn.modules.batchnorm._BatchNorm,
    nn.RReLU,
    nn.modules.instancenorm._InstanceNorm,
)


def _own_first(default: Callable[..., Any]) -> Callable[..., Any]:
    """``fact(model, ...)``: the model's own method of the same name if it has one, else ``default``."""

    @functools.wraps(default)
    def fact(model: Any, *args: Any, **kwargs: Any) -> Any:
        own = getattr(model, default.__name__, None)
        return own(*args, **kwargs) if own is not None else default(model, *args, **kwargs)

    fact.default = default  # type: ignore[attr-defined]
    return fact


def shape_variants(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """``shape``, its flattening, and for one channel of ``(1, H, W)`` also ``(H, W)``: the views an input may take."""
    variants = [shape, (math.prod(shape),)]
    if len(shape) == 3 and shape[0] == 1:
        variants.append(shape[1:])
    return list(dict.fromkeys(variants))


@_own_first
def reference_tensor(model: nn.Module) -> Optional[Tensor]:
    """A parameter (or floating buffer) whose dtype and device inputs must match; None for a model without any."""
    for t in model.parameters():
        return t
    for t in model.buffers():
        if t.is_floating_point():
            return t
    return None


@_own_first
def check_tensor(model: nn.Module, x: Any, what: str = "input") -> Tensor:
    """``x`` if it is a non-empty floating-point tensor on the model's dtype and device."""
    if not isinstance(x, Tensor):
        raise InputDtypeError(f"expected a torch.Tensor {what}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise InputDtypeError(
            f"expected a floating-point {what} (pixels in [0, 1]), got dtype {x.dtype}; "
            "convert with x.float() / 255 for uint8 images"
        )
    ref = reference_tensor(model)
    if ref is not None and (x.dtype is not ref.dtype or x.device != ref.device):
        if x.dtype != ref.dtype:
            raise InputDtypeError(
                f"{what} dtype {x.dtype} does not match the model's {ref.dtype}; "
                f"use x.to({ref.dtype}) or model.to({x.dtype})"
            )
        raise InputDtypeError(
            f"{what} is on {x.device} but the model is on {ref.device}; use x.to({str(ref.device)!r})"
        )
    if x.ndim == 0 or x.shape[0] == 0:
        raise ShapeError(f"empty batch: {what} has shape {list(x.shape)}; expected at least one example")
    return x


@_own_first
def accepted_input_shapes(model: nn.Module) -> Optional[list[tuple[int, ...]]]:
    """The shapes of one example ``forward`` accepts (inputs are reshaped to the first); None if not known."""
    shape = getattr(model, "input_shape", None)
    return shape_variants(tuple(shape)) if shape is not None else None


@_own_first
def prepare_input(model: nn.Module, x: Any) -> Tensor:
    """Check a batch ``[batch, *shape]`` (``shape`` one of ``accepted_input_shapes``), reshaped to the first."""
    shapes = accepted_input_shapes(model)
    if shapes is None:
        return check_tensor(model, x)
    tail = tuple(x.shape[1:]) if isinstance(x, Tensor) and x.ndim >= 2 else None
    if isinstance(x, Tensor) and tail not in shapes:
        expected = " or ".join("[batch, " + ", ".join(map(str, s)) + "]" for s in shapes)
        hint = "; add a batch dimension with x.unsqueeze(0)" if tuple(x.shape) in shapes else ""
        raise ShapeError(f"expected input of shape {expected}, got {list(x.shape)}{hint}")
    x = check_tensor(model, x)
    return x if tail == shapes[0] else x.reshape(x.shape[0], *shapes[0])


@_own_first
def as_batch(model: nn.Module, x: Any) -> Tensor:
    """Like ``prepare_input``, but one example (without a batch dimension) becomes a batch of one.

    A model that does not know its input shape takes ``x`` as a batch.
    """
    shapes = accepted_input_shapes(model)
    if shapes is not None and isinstance(x, Tensor) and tuple(x.shape) in shapes:
        x = x.unsqueeze(0)
    return prepare_input(model, x)


def select_logits(model: Any, out: Any) -> Tensor:
    """The class logits in what ``model`` returned: its chosen output for a tuple or dict (``capture(output=)``)."""
    pick = getattr(model, "select_output", None)
    return pick(out) if pick is not None else out


@_own_first
def structure_key(model: nn.Module) -> tuple[Any, ...]:
    """Changes whenever a module is replaced, changes mode, or a parameter changes shape."""
    return tuple((id(m), m.training) for m in model.modules()) + tuple(p.shape for p in model.parameters())


@_own_first
def state_tensors(model: nn.Module) -> list[tuple[str, Tensor]]:
    """Every parameter and buffer of the state dict, by name (what ``model_fingerprint`` hashes)."""
    return list(model.state_dict(keep_vars=True).items())


@_own_first
def state_version(model: nn.Module) -> tuple[Any, ...]:
    """Changes whenever a parameter or buffer is replaced or edited in place (identities, storages, versions)."""
    return tuple((id(t), t._version, t.data_ptr()) for _, t in state_tensors(model))


@_own_first
def training_mode_modules(model: nn.Module) -> list[str]:
    """The modules that compute something else in training mode (dropout, batch norm...), by path."""
    return [name for name, m in model.named_modules() if name and isinstance(m, TRAINING_DEPENDENT)]


@_own_first
def check_hook_names(model: Any, names: Any, what: str = "names") -> list[str]:
    """``names`` as a list of exact hook names (at least one), each checked (``HookNameError`` with the closest)."""
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ArgumentTypeError(f"{what} must be a list of hook names, got {type(names).__name__}")
    if not names:
        raise UsageError(f"{what} is empty; pass at least one hook name, e.g. {model.hook_names[-1]!r}")
    return [model.resolve_name(n) for n in names]


@_own_first
def clean_activations(model: Any, x: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
    """Activations at ``names`` from a pass where no hook runs (no steering, no intervention), without grad."""
    names = check_hook_names(model, names)
    with torch.no_grad(), hooks_suppressed():
        _, cache = model.run_with_cache(x, names_filter=names)
    return dict(cache.cache_dict)


def observed_shapes(model: Any, x: Tensor) -> dict[str, tuple[int, ...]]:
    """The shapes of one example's activations, from a clean pass on the first two examples of ``x`` (memoised).

    For a model that does not say its input shape, the analysis learns its shapes this way from
    the data it is given; ``activation_shapes`` then knows them too.
    """
    key = structure_key(model)
    found = shapes_from_pass(model, x[:2])
    model.__dict__["_shapes_memo"] = (key, found)
    return found


@_own_first
def select_output(model: Any, out: Any) -> Any:
    """The logits in what ``forward`` returned (a captured graph picks its chosen output of a tuple or dict)."""
    return out


@_own_first
def activation_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    """The shape of one example's activation at every hook point that runs (from a clean probe pass, memoised)."""
    key = structure_key(model)
    memo = model.__dict__.get("_shapes_memo")
    if memo is not None and memo[0] == key:
        return memo[1]
    shapes = accepted_input_shapes(model)
    if shapes is None:
        raise UsageError(
            f"{type(model).__name__} does not say its input shape, so its activations' shapes are known only "
            "from a pass; set model.input_shape (one example's shape), or run a batch first"
        )
    ref = reference_tensor(model)
    dtype = ref.dtype if ref is not None else torch.float32
    check_bytes(
        activation_bytes(shapes[0], 2, dtype), f"a probe batch of input_shape {list(shapes[0])}", "fix input_shape"
    )
    probe = torch.zeros(2, *shapes[0], dtype=dtype, device=ref.device if ref is not None else None)
    found = shapes_from_pass(model, probe)
    model.__dict__["_shapes_memo"] = (key, found)
    return found


def shapes_from_pass(model: Any, x: Tensor) -> dict[str, tuple[int, ...]]:
    """One example's activation shape at every hook point that runs in a clean pass on ``x`` (one never called
    has none: ``activation_shape`` then says it did not run)."""
    with torch.no_grad(), hooks_suppressed():
        _, cache = model.run_with_cache(x)
    return {k: tuple(v.shape[1:]) for k, v in cache.cache_dict.items()}


@_own_first
def activation_shape(model: Any, name: str) -> tuple[int, ...]:
    """The shape of one example's activation at hook point ``name`` (``HookNameError`` if it never runs)."""
    shapes, name = activation_shapes(model), model.resolve_name(name)
    if name not in shapes:
        raise not_run_error(model, [name], list(shapes))
    return shapes[name]


_AXES = {2: "C, L", 3: "C, H, W", 4: "C, D, H, W"}


def example_shape(shape: Sequence[int]) -> str:
    """``[512]``, or with the axes named for a feature map: ``[C, H, W] = [4, 6, 6]``."""
    dims = "[" + ", ".join(map(str, shape)) + "]"
    return f"[{_AXES[len(shape)]}] = {dims}" if len(shape) in _AXES else dims


def check_example_shape(t: Tensor, model: Any, hook: str, what: str) -> Optional[tuple[int, ...]]:
    """The activation shape at ``hook``; ``ShapeError`` (expected vs got) unless ``t`` has it.

    None for a model whose shapes are known only from a pass (the hooks check at run time).
    """
    if accepted_input_shapes(model) is None and not hasattr(model, "activation_shape"):
        return None
    shape = tuple(activation_shape(model, hook))
    if tuple(t.shape) != shape:
        got = example_shape(t.shape) if t.ndim == len(shape) else "[" + ", ".join(map(str, t.shape)) + "]"
        raise ShapeError(
            f"{what} at {hook!r} has shape {got}, but one example's activation there is "
            f"{example_shape(shape)} (a batch is [batch, {', '.join(map(str, shape))}]); "
            f"expected a tensor of shape {list(shape)}"
        )
    return shape
