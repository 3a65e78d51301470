"""The inputs a network is captured and checked with, and which of its outputs is the logits.

An example batch comes from ``example=`` (inputs with a batch dimension), from ``input_shape=``,
or, for a network whose first module is a Linear, from its ``in_features``. Nothing else is
guessed silently: a network starting with a convolution is taken to read MNIST-sized images
(C x 28 x 28) with a warning saying so, and anything else must say its input shape.
"""

from collections.abc import Sequence
from typing import Any, Optional, Union

import torch
import torch.fx as fx
from torch import Tensor, nn

from hookedmlp.errors import ShapeError, UnsupportedNetworkError, UsageError, warn
from hookedmlp.models.configs import image_shape
from hookedmlp.sizes import activation_bytes, check_bytes

__all__ = ["example_inputs", "output_node", "check_input_shape", "guess_input_shape", "reference"]

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


def guess_input_shape(net: nn.Module, image: bool = False) -> tuple[int, ...]:
    """One example's shape, read from the network's first module with weights (see the module's docs).

    With ``image``, a first Linear of ``s * s`` inputs is taken to read flattened ``1 x s x s``
    images (``HookedMLP``'s habit: it accepts both).
    """
    flattened = False
    for path, m in net.named_modules():
        if (
            m is net
            and next(m.children(), None) is not None
            or next(m.children(), None) is not None
            and not (m._parameters or m._buffers)
        ):
            continue  # containers: their first leaf decides
        if isinstance(m, nn.Linear):
            return image_shape(m.in_features) if flattened or image else (m.in_features,)
        if isinstance(m, nn.Conv2d):
            warn(
                f"{type(net).__name__} starts with {path or 'a'} Conv2d: taking MNIST-sized inputs "
                f"[{m.in_channels}, 28, 28]; pass input_shape=(C, H, W) if they are not",
                UserWarning,
            )
            return (m.in_channels, 28, 28)
        if not isinstance(m, _PASS_THROUGH):
            raise UnsupportedNetworkError(
                f"cannot infer {type(net).__name__}'s input shape from its first modules (module {path or '(the '}"
                f"{'network)' if not path else ''} is a {type(m).__name__}); pass input_shape=(C, H, W) or "
                "(features,), the shape of one example"
            )
        flattened = flattened or isinstance(m, nn.Flatten)
    raise UnsupportedNetworkError(
        f"cannot infer {type(net).__name__}'s input shape from its modules; pass input_shape=(C, H, W) or "
        "(features,), the shape of one example"
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
    shape = check_input_shape(input_shape) if input_shape is not None else guess_input_shape(net)
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    check_bytes(
        activation_bytes(shape, 2, dtype),
        f"an example batch of input_shape {list(shape)}",
        "pass input_shape=, the shape of one example (not of a batch)",
    )
    g = torch.Generator().manual_seed(20240607)
    x = torch.rand(2, *shape, generator=g)
    return (x.to(ref.device, dtype) if ref is not None else x,)


def output_node(graph: fx.Graph, inputs: tuple[Any, ...], net: nn.Module, output: Union[int, str, None]) -> str:
    """The node whose value is the logits: the graph's output, or its element ``output`` (a tuple's or dict's)."""
    out = next(n for n in graph.nodes if n.op == "output").args[0]
    if output is None and isinstance(out, (tuple, list)) and len(out) == 1:
        out = out[0]  # one output, packed (torch.export's graphs return their outputs flattened)
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
