"""The second line behind capture: the hooked model against the network on check inputs, both modes, gradients.

Capture makes the hooked model run the network's own graph, so they agree by construction;
this check catches what a trace cannot see (a forward reading state that tracing missed).
The check inputs cover the capture batch (values in [0, 1)) and a seeded batch with negative
and large values. In training mode both runs draw the same random numbers (the RNG is reset
before each), and batch-norm statistics are restored afterwards; the global RNG is left as it
was. Gradients with respect to the inputs and the parameters must be equal too.
"""

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hookedmlp.errors import UnsupportedNetworkError
from hookedmlp.models.capture import HOOKEDROOT_ROUTE

__all__ = ["verify"]


def _tensors(out: Any) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    return []


def _check_inputs(inputs: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Inputs with negative and large values as well as the capture batch's [0, 1) (for float inputs)."""
    first = inputs[0]
    if not (isinstance(first, Tensor) and first.is_floating_point()):
        return [tuple(inputs)]
    g = torch.Generator().manual_seed(7)
    wide = torch.rand(first.shape, generator=g, dtype=torch.float64) * 8 - 4
    wide.view(-1)[:: max(1, wide.numel() // 7)] *= 100  # a few large values
    wide.view(-1)[1 :: max(1, wide.numel() // 5)] = torch.rand(1, generator=g).item()  # and some in [0, 1)
    return [(wide.to(first.device, first.dtype), *inputs[1:])]


def _run(fn: Any, inputs: tuple[Any, ...], params: list[Tensor], seed: int) -> tuple[list[Tensor], list[Any]]:
    """Outputs and gradients (w.r.t. floating inputs and ``params``) of one run from RNG state ``seed``."""
    xs = tuple(
        a.detach().clone().requires_grad_(True) if isinstance(a, Tensor) and a.is_floating_point() else a
        for a in inputs
    )
    torch.manual_seed(seed)
    outs = _tensors(fn(*xs))
    leaves = [a for a in xs if isinstance(a, Tensor) and a.requires_grad] + params
    floats = [o for o in outs if o.is_floating_point() and o.requires_grad]
    if not floats:
        return [o.detach() for o in outs], []
    try:
        grads = torch.autograd.grad(sum(o.double().sum() for o in floats), leaves, allow_unused=True)
    except RuntimeError as e:  # e.g. in-place modules in training mode: the network itself cannot backpropagate
        return [o.detach() for o in outs], [type(e).__name__]
    return [o.detach() for o in outs], list(grads)


def _same(a: list[Any], b: list[Any]) -> bool:
    """Equal lists of tensors (bit for bit), of None where a gradient is unused, or of the same error's name."""

    def same(x: Any, y: Any) -> bool:
        if isinstance(x, Tensor) and isinstance(y, Tensor):
            return x.shape == y.shape and x.dtype == y.dtype and bool(torch.equal(x, y))
        return not isinstance(x, Tensor) and not isinstance(y, Tensor) and x == y

    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))


def verify(model: nn.Module, net: nn.Module, inputs: Sequence[Any]) -> None:
    """Raise ``UnsupportedNetworkError`` unless ``model`` (hooked ``net``) matches ``net`` (see the module's docs)."""
    params = [p for p in net.parameters() if p.requires_grad]
    buffers = {k: v.clone() for k, v in net.state_dict(keep_vars=True).items() if k not in dict(net.named_parameters())}
    modes = {m: m.training for m in net.modules()}
    devices = sorted({t.device.index or 0 for t in params if t.device.type == "cuda"})
    name = type(net).__name__
    try:
        with torch.random.fork_rng(devices=devices):
            for training in (False, True):
                net.train(training)
                for k, x in enumerate(_check_inputs(inputs)):
                    got = _run(model, x, params, 1234 + k)
                    net.load_state_dict(buffers, strict=False)
                    want = _run(net, x, params, 1234 + k)
                    net.load_state_dict(buffers, strict=False)
                    for what, a, b in (("outputs", got[0], want[0]), ("gradients", got[1], want[1])):
                        if not _same(a, b):
                            raise UnsupportedNetworkError(
                                f"the captured graph of {name} gives other {what} than {name}.forward on a check "
                                f"input in {'training' if training else 'eval'} mode; its forward reads something the "
                                f"trace cannot see; {HOOKEDROOT_ROUTE}"
                            )
    finally:
        for m, mode in modes.items():
            m.training = mode
