"""The inputs a network is captured and checked with, and which of its outputs is the logits.

An example batch comes from ``example=`` (inputs with a batch dimension), from ``input_shape=``,
or, for a network whose first module is a Linear, from its ``in_features``. Nothing else is
guessed: a network starting with a convolution must say its input shape (one with a single
input channel is taken to be MNIST-sized, 1 x 28 x 28, with a warning saying so).
"""

import math
from collections.abc import Sequence
from typing import Any, Optional, Union

import torch
import torch.fx as fx
from torch import Tensor, nn

from hookedmlp.errors import ShapeError, UnsupportedNetworkError, UsageError, warn
from hookedmlp.models.configs import image_shape

__all__ = ["example_inputs", "output_node", "check_input_shape", "reference"]

_PASS_THROUGH = (nn.Flatten, nn.Identity, nn.modules.dropout._DropoutNd)


def check_input_shape(shape: Any) -> tuple[int, ...]:
    """``shape`` as one example's shape: a non-empty sequence of positive ints (``ShapeError`` otherwise)."""
    if (
        not isinstance(shape, Sequence)
        or isinstance(shape, str)
        or not shape
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)
    ):
        raise ShapeError(
            f"input_shape must be one example's shape, a sequence of positive ints such as (1, 28, 28) or "
            f"(784,), got {shape!r}"
        )
    return tuple(shape)


def reference(net: nn.Module) -> Optional[Tensor]:
    """The first parameter (or floating buffer): the dtype and device inputs take."""
    param = next(iter(net.parameters()), None)
    return param if param is not None else next((b for b in net.buffers() if b.is_floating_point()), None)


def _guess(net: nn.Module) -> tuple[int, ...]:
    flattened = False
    for path, m in net.named_modules():
        if m is net or next(m.children(), None) is not None and not (m._parameters or m._buffers):
            continue  # containers: their first leaf decides
        if isinstance(m, nn.Linear):
            return image_shape(m.in_features) if flattened else (m.in_features,)
        if isinstance(m, nn.Conv2d) and m.in_channels == 1:
            warn(
                f"{type(net).__name__} starts with {path} (Conv2d with 1 input channel): taking MNIST-sized inputs "
                "[1, 28, 28]; pass input_shape=(C, H, W) if they are not",
                UserWarning,
            )
            return (1, 28, 28)
        if not isinstance(m, _PASS_THROUGH):
            raise UnsupportedNetworkError(
                f"cannot tell {type(net).__name__}'s input shape from its first module ({path or 'the network'}, a "
                f"{type(m).__name__}); pass input_shape=(C, H, W) or (features,), the shape of one example"
            )
        flattened = flattened or isinstance(m, nn.Flatten)
    raise UnsupportedNetworkError(
        f"cannot tell {type(net).__name__}'s input shape from its modules; pass input_shape=, the shape of one example"
    )


def example_inputs(
    net: nn.Module, input_shape: Optional[Sequence[int]], example: Optional[Sequence[Any]]
) -> tuple[Any, ...]:
    """A batch of two inputs to capture ``net`` with (seeded; the global RNG is untouched)."""
    ref = reference(net)
    if ref is not None and ref.device.type == "meta":
        raise UnsupportedNetworkError(
            f"{type(net).__name__}'s weights are on the meta device (no values); load its weights first, e.g. "
            "with net.to_empty(device='cpu') and load_state_dict(..., assign=True)"
        )
    if example is not None:
        if input_shape is not None:
            raise UsageError("pass input_shape= or example=, not both")
        example = tuple(example) if isinstance(example, (tuple, list)) else (example,)
        if not example or not isinstance(example[0], Tensor) or example[0].ndim == 0:
            raise ShapeError("example= must be the forward pass's inputs, the first a tensor with a batch dimension")
        return example
    shape = check_input_shape(input_shape) if input_shape is not None else _guess(net)
    g = torch.Generator().manual_seed(20240607)
    x = torch.rand(2, *shape, generator=g)
    if ref is not None:
        x = x.to(ref.device, ref.dtype if ref.is_floating_point() else x.dtype)
    if math.prod(shape) > 1 << 26:
        raise ShapeError(f"input_shape {list(shape)} has {math.prod(shape):,} values per example; is it right?")
    return (x,)


def output_node(graph: fx.Graph, inputs: tuple[Any, ...], net: nn.Module, output: Union[int, str, None]) -> str:
    """The node whose value is the logits: the graph's output, or its element ``output`` (a tuple's or dict's)."""
    out = next(n for n in graph.nodes if n.op == "output").args[0]
    name = type(net).__name__
    if isinstance(out, fx.Node):
        if output is not None:
            raise UsageError(f"{name}.forward returns one tensor; drop output= (it picks one of several outputs)")
        return out.name
    if output is None:
        return ""  # several outputs and none chosen: what needs the logits asks for output=
    keys = list(range(len(out))) if isinstance(out, (tuple, list)) else list(out) if isinstance(out, dict) else []
    if output not in keys:
        raise UsageError(
            f"output={output!r} is not one of {name}.forward's outputs; valid: {', '.join(map(repr, keys))}"
        )
    chosen = out[output]
    if not isinstance(chosen, fx.Node):
        raise UsageError(f"{name}.forward's output {output!r} is not a tensor the graph computes")
    return chosen.name
