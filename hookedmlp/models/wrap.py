"""Turning a user's network into a chain of modules, and proving the chain computes the same thing.

The network is run once on a probe batch with PyTorch hooks on every leaf module, recording
the order the leaves run in and the tensors that flow between them. The chain is accepted
only if each leaf runs exactly once and each one's input is exactly the previous one's output
(a pure reshape in ``forward``, like ``x.view(len(x), -1)``, becomes a ``Reshape`` module); the
hooked model is then checked against the original on the probe. Anything else (a functional
call such as ``F.relu``, a skip connection, a reused or unused module, an in-place edit between
modules) is refused with the module, its path and the way forward. Modules with
``inplace=True`` are replaced by out-of-place copies, so each hook point keeps its own tensor.
"""

import copy
import dataclasses
import math
from collections.abc import Sequence
from typing import Any, NamedTuple, Optional

import torch
from torch import Tensor, nn

from hookedmlp.errors import ShapeError, UnsupportedNetworkError, warn
from hookedmlp.models.configs import image_shape
from hookedmlp.models.modules import Reshape

__all__ = ["Chain", "chain_of", "probe_batch", "HOOKEDROOT_ROUTE"]

HOOKEDROOT_ROUTE = (
    "write it as a HookedRoot subclass with HookPoints placed in forward (see docs/your-own-network.md, "
    "and hookedmlp.ResidualMLP for an example)"
)


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
    for name, child in net._modules.items():  # not named_children(), which hides a module registered twice
        if child is None:
            continue
        path = f"{prefix}{name}"
        if id(child) in seen:
            raise UnsupportedNetworkError(
                f"module {path} ({type(child).__name__}) is the same object as module "
                f"{seen[id(child)]}: a module used twice is not a chain; {HOOKEDROOT_ROUTE}"
            )
        seen[id(child)] = path
        own = list(child.named_parameters(recurse=False)) + list(child.named_buffers(recurse=False))
        if next(child.children(), None) is None or own:
            out.append((path, child))  # a leaf, or a module with weights of its own: opaque as a whole
        else:
            _leaves(child, f"{path}.", seen, out)


def _guess_input_shape(net: nn.Module, leaves: list[tuple[str, nn.Module]]) -> tuple[int, ...]:
    for path, m in leaves:
        if isinstance(m, nn.Linear):
            return image_shape(m.in_features)
        if isinstance(m, nn.Conv2d):
            return (m.in_channels, 28, 28)
        if not isinstance(m, (nn.Flatten, nn.Identity, nn.modules.dropout._DropoutNd)):
            raise UnsupportedNetworkError(
                f"cannot infer {type(net).__name__}'s input shape from its first modules (module {path} is a "
                f"{type(m).__name__}); pass input_shape=(C, H, W) or (features,), the shape of one example"
            )
    raise UnsupportedNetworkError(
        f"cannot infer {type(net).__name__}'s input shape from its modules; pass "
        "input_shape=(C, H, W) or (features,), the shape of one example"
    )


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


class _Call(NamedTuple):
    path: str
    input: Any
    output: Any
    edited: bool  # the module edited its input in place
    version_in: int  # the input's version counter when the module started
    version_out: int  # the output's version counter when the module returned


def _record(net: nn.Module, leaves: list[tuple[str, nn.Module]], x: Tensor) -> tuple[list[_Call], Any]:
    """Run ``net`` on ``x`` in eval mode; return what each leaf call took and returned, and the output."""
    path_of = {id(m): p for p, m in leaves}
    calls: list[_Call] = []
    versions: dict[int, int] = {}
    running: list[str] = []  # the leaves that started and have not returned: where a failure happened
    handles = []

    def pre(module: nn.Module, args: tuple) -> None:
        running.append(path_of[id(module)])
        if args and isinstance(args[0], Tensor):
            versions[id(module)] = args[0]._version

    def post(module: nn.Module, args: tuple, output: Any) -> None:
        running.pop()
        inp = args[0] if len(args) == 1 else args
        before = versions.get(id(module), -1)
        edited = isinstance(inp, Tensor) and inp._version != before
        calls.append(
            _Call(
                path_of[id(module)], inp, output, edited, before, output._version if isinstance(output, Tensor) else -1
            )
        )

    modes = {m: m.training for m in net.modules()}
    try:
        for _, m in leaves:
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
        net.eval()
        with torch.no_grad():
            out = net(x)
    except Exception as e:
        bad = next((c for c in calls if not isinstance(c.output, Tensor)), None)
        if bad is not None:  # what made the next module fail
            raise UnsupportedNetworkError(
                f"module {bad.path} ({type(dict(leaves)[bad.path]).__name__}) returns "
                f"{type(bad.output).__name__}, not one tensor; {HOOKEDROOT_ROUTE}"
            ) from None
        where = (
            f"module {running[-1]} ({type(dict(leaves)[running[-1]]).__name__}) failed"
            if running
            else f"{type(net).__name__}.forward failed"
        )
        raise UnsupportedNetworkError(
            f"running {type(net).__name__} on a probe batch of shape {list(x.shape)}: {where} "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); if the "
            f"network takes other inputs, pass input_shape=, the shape of one example"
        ) from None
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return calls, out


def chain_of(net: Any, input_shape: Optional[Sequence[int]] = None) -> Chain:
    """The chain ``net`` runs, checked on a probe batch (see the module's docs)."""
    given_list = isinstance(net, (list, tuple))
    if given_list:
        net = nn.Sequential(*net)
    if not isinstance(net, nn.Module):
        raise UnsupportedNetworkError(f"expected an nn.Module (or a list of modules), got {type(net).__name__}")
    leaves: list[tuple[str, nn.Module]] = []
    _leaves(net, "", {}, leaves)
    if not leaves:
        raise UnsupportedNetworkError(f"{type(net).__name__} has no modules to hook; a chain needs at least one")
    if input_shape is not None and (
        not isinstance(input_shape, Sequence)
        or not input_shape
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in input_shape)
    ):
        raise ShapeError(
            f"input_shape must be one example's shape, a sequence of positive ints such as (1, 28, 28) or "
            f"(784,), got {input_shape!r}"
        )
    shape = tuple(input_shape) if input_shape is not None else _guess_input_shape(net, leaves)
    linear_first = isinstance(leaves[0][1], nn.Linear)  # its forward takes flat examples
    x = probe_batch((math.prod(shape),) if linear_first else shape, _reference(net))
    run_x = x.clone()  # a first module working in place must not edit the probe the hooked model is checked on
    version0 = run_x._version
    calls, out = _record(net, leaves, run_x)
    name = type(net).__name__
    ran = [c.path for c in calls]
    by_path = dict(leaves)
    for path, module in leaves:
        if path not in ran:
            raise UnsupportedNetworkError(
                f"module {path} ({type(module).__name__}) never runs in {name}.forward, so the chain of its modules is "
                f"not what forward computes; if it is unused, delete it (del net.{path}) before wrapping; otherwise "
                f"{HOOKEDROOT_ROUTE}"
            )
        if ran.count(path) > 1:
            raise UnsupportedNetworkError(
                f"module {path} ({type(module).__name__}) runs {ran.count(path)} times in {name}.forward: a module "
                f"used twice is not a chain; {HOOKEDROOT_ROUTE}"
            )
    modules: list[nn.Module] = []
    paths: list[str] = []
    previous, previous_path, previous_version = run_x, "the input", version0
    for call in calls:
        path, inp, output = call.path, call.input, call.output
        module = by_path[path]
        if not isinstance(inp, Tensor) or not isinstance(output, Tensor):
            raise UnsupportedNetworkError(
                f"module {path} ({type(module).__name__}) takes or returns something other than "
                f"one tensor; {HOOKEDROOT_ROUTE}"
            )
        if inp is not previous and not _same_values(inp, previous):
            raise UnsupportedNetworkError(
                f"{name}.forward changes the activation between {previous_path} and module {path} "
                f"({type(module).__name__}): a functional call such as F.relu, a skip connection, or arithmetic; the "
                f"chain of its modules would compute something else, so it is refused; {HOOKEDROOT_ROUTE}"
            )
        if inp is previous and call.version_in != previous_version:
            raise UnsupportedNetworkError(
                f"{name}.forward edits the activation in place between {previous_path} and module {path} "
                f"({type(module).__name__}) (e.g. x.mul_(2) or F.relu(x, inplace=True)); the chain of its modules "
                f"would compute something else, so it is refused; {HOOKEDROOT_ROUTE}"
            )
        if inp is not previous and inp.shape != previous.shape:
            modules.append(Reshape(inp.shape[1:]))  # a pure reshape in forward, such as x.view(len(x), -1)
            paths.append(f"<reshape in forward, before {path}>")
        if call.edited or getattr(module, "inplace", None) is True:
            module = _out_of_place(module, path)
        modules.append(module)
        paths.append(path)
        previous, previous_path, previous_version = output, f"module {path}", call.version_out
    if not isinstance(out, Tensor):
        raise UnsupportedNetworkError(
            f"{name}.forward returns {type(out).__name__}, not one tensor; {HOOKEDROOT_ROUTE}"
        )
    if out is not previous and not _same_values(out, previous):
        raise UnsupportedNetworkError(
            f"{name}.forward changes the output after its last {previous_path} (a skip connection, a functional call "
            f"such as F.log_softmax, or arithmetic); the chain of its modules would compute something else, so it is "
            f"refused; {HOOKEDROOT_ROUTE}"
        )
    if out is not previous and out.shape != previous.shape:
        modules.append(Reshape(out.shape[1:]))
        paths.append("<reshape in forward, at the end>")
    first_shape = tuple(x.shape[1:])
    if (
        modules
        and (
            isinstance(modules[0], nn.Flatten)
            and modules[0].start_dim == 1
            and modules[0].end_dim == -1
            or isinstance(modules[0], Reshape)
            and len(modules[0].shape) == 1
        )
        and len(modules) > 1
    ):
        first_shape = (math.prod(shape),)  # a leading flatten: the model flattens its input itself
        modules, paths = modules[1:], paths[1:]
    if given_list:
        _warn_linear_pairs(modules, paths)
    return Chain(modules, paths, shape, first_shape, x, out)


def _out_of_place(module: nn.Module, path: str) -> nn.Module:
    """An equal module that leaves its input alone (each hook point must keep its own tensor)."""
    if getattr(module, "inplace", None) is True:
        fresh = copy.deepcopy(module)  # (a shallow copy would share its hook dicts with the original)
        fresh.inplace = False
        return fresh
    raise UnsupportedNetworkError(
        f"module {path} ({type(module).__name__}) edits its input in place, which would change "
        "what the hook point before it recorded, and has no inplace=False switch; make its "
        f"forward out of place, or {HOOKEDROOT_ROUTE}"
    )


def _warn_linear_pairs(modules: Sequence[nn.Module], paths: Sequence[str]) -> None:
    """A list of Linear layers with nothing between two of them is what ``list(net.children())`` gives for a
    network applying ``F.relu`` in its forward: say so, since the list alone cannot show it."""
    for (a, pa), (b, pb) in zip(zip(modules, paths), zip(modules[1:], paths[1:])):
        if isinstance(a, nn.Linear) and isinstance(b, nn.Linear):
            warn(
                f"modules {pa} and {pb} are two Linear layers with no activation between them; if this list came from "
                "list(net.children()) of a network whose forward applies F.relu (or similar), wrap the network itself "
                "with HookedMLP.from_module(net), which checks it",
                UserWarning,
            )
            return
