"""Turning a user's network into a chain of modules, and proving the chain computes the same thing.

The network is run once on a probe batch with PyTorch hooks on every leaf module, recording
the order the leaves run in and the tensors that flow between them. The chain is accepted
only if each leaf runs once and each one's input is exactly the previous one's output (a pure
reshape in ``forward``, like ``x.view(len(x), -1)``, becomes a ``Reshape`` module); the hooked
model is then checked against the original on the probe. Anything else (a functional call such
as ``F.relu``, a skip connection, a reused module) is refused with the place it happens.
"""

import copy
import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Optional

import torch
from torch import Tensor, nn

from hookedmlp.config import image_shape
from hookedmlp.errors import UnsupportedNetworkError
from hookedmlp.modules import Reshape

__all__ = ["Chain", "chain_of", "probe_batch", "HOOKEDROOT_ROUTE"]

HOOKEDROOT_ROUTE = ("write it as a HookedRoot subclass with HookPoints placed in forward (see docs/your-own-network.md, "
                    "and hookedmlp.ResidualMLP for an example)")


@dataclasses.dataclass
class Chain:
    """The leaves of a network in the order they run, with their original paths and one example's input shape."""

    modules: list[nn.Module]
    paths: list[str]
    input_shape: tuple[int, ...]
    first_shape: tuple[int, ...]  # what the first module reads (flattened when a leading Flatten was absorbed)
    probe: Tensor  # the probe batch, as the original network took it
    expected: Tensor  # the original network's output on it, in eval mode


def _leaves(net: nn.Module, prefix: str, seen: dict[int, str], out: list[tuple[str, nn.Module]]) -> None:
    for name, child in net.named_children():
        path = f"{prefix}{name}"
        if id(child) in seen:
            raise UnsupportedNetworkError(f"module {path} is the same object as {seen[id(child)]}: a module used twice "
                                          f"is not a chain; {HOOKEDROOT_ROUTE}")
        seen[id(child)] = path
        own = list(child.named_parameters(recurse=False)) + list(child.named_buffers(recurse=False))
        if next(child.children(), None) is None or own:
            out.append((path, child))  # a leaf, or a module with weights of its own: opaque as a whole
        else:
            _leaves(child, f"{path}.", seen, out)


def _guess_input_shape(leaves: list[tuple[str, nn.Module]]) -> tuple[int, ...]:
    for path, m in leaves:
        if isinstance(m, nn.Linear):
            return image_shape(m.in_features)
        if isinstance(m, nn.Conv2d):
            return (m.in_channels, 28, 28)
        if isinstance(m, nn.Conv1d):
            break
        if not isinstance(m, (nn.Flatten, nn.Identity, nn.modules.dropout._DropoutNd)):
            break
    raise UnsupportedNetworkError("cannot infer the network's input shape from its first modules; pass "
                                  "input_shape=(C, H, W) or (features,), the shape of one example")


def probe_batch(shape: Sequence[int], ref: Optional[Tensor]) -> Tensor:
    """Three seeded examples in [0, 1), on ``ref``'s device and dtype (the global RNG is untouched)."""
    g = torch.Generator().manual_seed(20240607)
    x = torch.rand(3, *shape, generator=g)
    return x.to(ref.device, ref.dtype) if ref is not None and ref.is_floating_point() else x


def _reference(net: nn.Module) -> Optional[Tensor]:
    param = next(iter(net.parameters()), None)
    return param if param is not None else next((b for b in net.buffers() if b.is_floating_point()), None)


def _same_values(a: Tensor, b: Tensor) -> bool:
    return a.shape[0] == b.shape[0] and a.numel() == b.numel() and torch.equal(a.reshape(-1), b.reshape(-1))


def _record(net: nn.Module, leaves: list[tuple[str, nn.Module]], x: Tensor) -> tuple[list[tuple[str, Any, Any, bool]], Any]:
    """Run ``net`` on ``x`` in eval mode; return (path, input, output, edited its input in place) per leaf call, and the output."""
    path_of = {id(m): p for p, m in leaves}
    calls: list[tuple[str, Any, Any, bool]] = []
    versions: dict[int, int] = {}
    handles = []

    def pre(module: nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], Tensor):
            versions[id(module)] = args[0]._version

    def post(module: nn.Module, args: tuple, output: Any) -> None:
        inp = args[0] if len(args) == 1 else args
        edited = isinstance(inp, Tensor) and inp._version != versions.get(id(module), inp._version)
        calls.append((path_of[id(module)], inp, output, edited))

    modes = {m: m.training for m in net.modules()}
    try:
        for _, m in leaves:
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
        net.eval()
        with torch.no_grad():
            out = net(x)
    except Exception as e:
        raise UnsupportedNetworkError(f"running the network on a probe batch of shape {list(x.shape)} failed "
                                      f"({type(e).__name__}: {e}); pass input_shape=, the shape of one example") from None
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return calls, out


def chain_of(net: Any, input_shape: Optional[Sequence[int]] = None) -> Chain:
    """The chain ``net`` runs, checked on a probe batch (see the module's docs)."""
    if isinstance(net, (list, tuple)):
        net = nn.Sequential(*net)
    if not isinstance(net, nn.Module):
        raise UnsupportedNetworkError(f"expected an nn.Module (or a list of modules), got {type(net).__name__}")
    leaves: list[tuple[str, nn.Module]] = []
    _leaves(net, "", {}, leaves)
    if not leaves:
        raise UnsupportedNetworkError(f"{type(net).__name__} has no modules to hook; a chain needs at least one")
    shape = tuple(input_shape) if input_shape is not None else _guess_input_shape(leaves)
    linear_first = isinstance(leaves[0][1], nn.Linear)  # its forward takes flat examples
    x = probe_batch((math.prod(shape),) if linear_first else shape, _reference(net))
    calls, out = _record(net, leaves, x)
    ran = [c[0] for c in calls]
    for path, _ in leaves:
        if ran.count(path) != 1:
            how = "never runs" if path not in ran else f"runs {ran.count(path)} times"
            raise UnsupportedNetworkError(f"module {path} {how} in {type(net).__name__}.forward, so it is not a chain of "
                                          f"modules; {HOOKEDROOT_ROUTE}")
    by_path = dict(leaves)
    modules: list[nn.Module] = []
    paths: list[str] = []
    previous, previous_path = x, "the input"
    for path, inp, output, edited in calls:
        module = by_path[path]
        if not isinstance(inp, Tensor) or not isinstance(output, Tensor):
            raise UnsupportedNetworkError(f"module {path} ({type(module).__name__}) takes or returns something other than "
                                          f"one tensor; {HOOKEDROOT_ROUTE}")
        if inp is not previous:
            if not _same_values(inp, previous):
                raise UnsupportedNetworkError(
                    f"{type(net).__name__}.forward changes the activation between {previous_path} and {path} (a "
                    f"functional call such as F.relu, a skip connection, or arithmetic); the chain of its modules would "
                    f"compute something else, so it is refused; {HOOKEDROOT_ROUTE}")
            modules.append(Reshape(inp.shape[1:]))
            paths.append(f"<reshape in forward, before {path}>")
        if edited:
            module = _out_of_place(module, path)
        modules.append(module)
        paths.append(path)
        previous, previous_path = output, path
    if not isinstance(out, Tensor) or (out is not previous and not _same_values(out, previous)):
        raise UnsupportedNetworkError(f"{type(net).__name__}.forward changes the output after its last module {previous_path} "
                                      f"(e.g. F.log_softmax) or returns more than one tensor; {HOOKEDROOT_ROUTE}")
    if out is not previous:
        modules.append(Reshape(out.shape[1:]))
        paths.append("<reshape in forward, at the end>")
    first_shape = tuple(x.shape[1:])
    if modules and (isinstance(modules[0], nn.Flatten) and modules[0].start_dim == 1 and modules[0].end_dim == -1
                    or isinstance(modules[0], Reshape) and len(modules[0].shape) == 1) and len(modules) > 1:
        first_shape = (math.prod(shape),)  # a leading flatten: the model flattens its input itself
        modules, paths = modules[1:], paths[1:]
    return Chain(modules, paths, shape, first_shape, x, out)


def _out_of_place(module: nn.Module, path: str) -> nn.Module:
    """An equal module that leaves its input alone (each hook point must keep its own tensor)."""
    if getattr(module, "inplace", None) is True:
        fresh = copy.copy(module)
        fresh.inplace = False
        return fresh
    raise UnsupportedNetworkError(f"module {path} ({type(module).__name__}) edits its input in place, which would change "
                                  "what the hook point before it recorded; make it out of place")
