"""Capturing a network's forward pass as a graph: ``torch.fx`` first, ``torch.export`` where fx cannot.

The graph *is* the forward pass: the hooked model runs it, so it computes what the network
computes by construction. What a trace cannot represent is refused here, with the line of
``forward`` and the route to a hand-written ``HookedRoot``:

- control flow that depends on the data (``if h.sum() > 0``);
- Python state the forward pass changes (``self.calls += 1``): a trace would freeze one value;
- a branch on ``self.training`` that changes which operations run (a flag passed on as an
  argument, such as ``F.dropout(x, p, self.training)``, is fine: each mode gets its own graph).

Python values the forward pass reads (``self.scale``, ``self.use_skip``, ``self.downsample is
None``) are baked into the graph; each becomes a guard that the hooked model checks at every
call, so a later change is refused instead of ignored. Modules torch.nn provides, modules that
carry PyTorch hooks, and ``HookPoint``s stay whole (leaves); the others are traced through.
"""

import contextlib
import dataclasses
import io
import linecache
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, Optional

import torch
import torch.fx as fx
from torch import nn
from torch.fx import _symbolic_trace

from hookedmlp.errors import UnsupportedNetworkError

__all__ = ["Captured", "Guard", "capture_graph", "HOOKEDROOT_ROUTE", "has_torch_hooks"]

HOOKEDROOT_ROUTE = (
    "write it as a HookedRoot subclass with HookPoints placed in forward (see docs/your-own-network.md, "
    "and hookedmlp.ResidualMLP for an example)"
)
_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_THIS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # hookedmlp/
# frames of torch, of hookedmlp, and of the runtime type checkers that wrap hookedmlp's functions in its tests
_NOT_USER = tuple(
    os.path.dirname(m.__file__) + os.sep
    for m in (torch, sys.modules.get("jaxtyping"), sys.modules.get("typeguard"))
    if m is not None and getattr(m, "__file__", None)
) + (_THIS_DIR,)
_PLAIN = (bool, int, float, str, type(None))


def has_torch_hooks(m: nn.Module) -> bool:
    """Whether PyTorch hooks of any kind are registered on ``m`` itself."""
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)


def user_line() -> str:
    """``file:line: code`` of the innermost frame outside torch and hookedmlp (the user's forward)."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if not name.startswith(_NOT_USER) and not name.startswith("<"):
            code = linecache.getline(name, frame.f_lineno).strip()
            return f"{os.path.basename(name)}:{frame.f_lineno}: {code}"
        frame = frame.f_back
    return "(unknown line)"


@dataclasses.dataclass(frozen=True)
class Guard:
    """A Python value ``forward`` read at capture time: ``module.attr`` was ``value``, read at ``line``."""

    module: nn.Module
    path: str
    attr: str
    value: Any
    line: str

    def holds(self) -> bool:
        now = getattr(self.module, self.attr, _MISSING)
        return now is self.value or (type(now) is type(self.value) and now == self.value)


_MISSING = object()


@dataclasses.dataclass
class Captured:
    """A network's forward pass as graphs: one per training mode (the same object when the mode is not read).

    ``owner`` is what the graph's ``self`` is: the network itself for fx (so every module and
    parameter is looked up live), the unlifted module for ``torch.export``.
    """

    net: nn.Module
    graphs: dict[bool, fx.Graph]
    owner: nn.Module
    kind: str  # "fx" or "export"
    guards: tuple[Guard, ...]
    inlined: tuple[tuple[str, nn.Module], ...]  # traced-through modules: their PyTorch hooks would not fire


class _Log:
    """What the forward pass read and wrote on traced-through modules during one trace."""

    def __init__(self, paths: dict[int, str]) -> None:
        self.paths = paths
        self.reads: dict[tuple[int, str], Guard] = {}
        self.writes: list[str] = []
        self.mode_reads: list[str] = []


def _spy_class(cls: type, log: _Log) -> type:
    """A subclass of ``cls`` recording reads of plain Python attributes and every assignment."""

    def __getattribute__(self: Any, name: str) -> Any:
        value = cls.__getattribute__(self, name)
        if name[0] != "_" and name in object.__getattribute__(self, "__dict__"):
            if name == "training":
                log.mode_reads.append(user_line())
            elif isinstance(value, _PLAIN) or isinstance(value, tuple) and all(isinstance(v, _PLAIN) for v in value):
                key = (id(self), name)
                if key not in log.reads:
                    log.reads[key] = Guard(self, log.paths[id(self)], name, value, user_line())
        return value

    def __setattr__(self: Any, name: str, value: Any) -> None:
        path = log.paths.get(id(self), "")
        log.writes.append(f"self.{name}{f' (module {path})' if path else ''} at {user_line()}")
        cls.__setattr__(self, name, value)

    return type(
        cls.__name__,
        (cls,),
        {
            "__getattribute__": __getattribute__,
            "__setattr__": __setattr__,
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
        },
    )


class _Tracer(fx.Tracer):
    """fx's tracer with hookedmlp's leaves, and each node's line of ``forward`` in ``node.meta["source"]``."""

    def __init__(self, leaf: Callable[[nn.Module], bool]) -> None:
        super().__init__()
        self.leaf = leaf

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return self.leaf(m) or has_torch_hooks(m) or super().is_leaf_module(m, qualname)

    def create_node(self, *args: Any, **kwargs: Any) -> fx.Node:
        node = super().create_node(*args, **kwargs)
        node.meta["source"] = user_line()
        return node


def _forward_globals(modules: list[nn.Module]) -> list[dict[str, Any]]:
    """The global namespaces of the modules' ``forward`` functions (where ``len`` is looked up)."""
    found = (getattr(type(m).forward, "__globals__", None) for m in modules)
    return [g for g in found if isinstance(g, dict)]


def _trace(net: nn.Module, leaf: Callable[[nn.Module], bool], training: bool) -> tuple[fx.Graph, _Log]:
    """One fx trace of ``net`` with every module in mode ``training``, spying on traced-through modules."""
    tracer = _Tracer(leaf)
    paths = {id(m): p for p, m in net.named_modules(remove_duplicate=False)}
    inner = [m for p, m in net.named_modules() if m is net or not tracer.is_leaf_module(m, p)]
    log = _Log(paths)
    modes = {m: m.training for m in net.modules()}
    swapped: list[tuple[nn.Module, type]] = []
    # len(x) on a traced value is recorded as a call, as torch.fx.wrap("len") would at each forward's module scope
    wrapped = [(id(g), "len") for g in {id(g): g for g in _forward_globals(inner)}.values()]
    wrapped = [k for k in wrapped if k not in _symbolic_trace._wrapped_fns_to_patch]
    globals_by_id = {id(g): g for g in _forward_globals(inner)}
    try:
        for key in wrapped:
            _symbolic_trace._wrapped_fns_to_patch[key] = globals_by_id[key[0]]
        for m in modes:
            m.training = training
        for m in inner:
            try:
                spy = _spy_class(type(m), log)
                object.__setattr__(m, "__class__", spy)
                swapped.append((m, type(m).__mro__[1]))
            except TypeError:  # a class that cannot be subclassed: its reads go unguarded
                pass
        graph = tracer.trace(net)
    finally:
        for key in wrapped:
            _symbolic_trace._wrapped_fns_to_patch.pop(key, None)
        for m, cls in swapped:
            object.__setattr__(m, "__class__", cls)
        for m, mode in modes.items():
            object.__setattr__(m, "training", mode)
    return graph, log


def _same_structure(a: fx.Graph, b: fx.Graph) -> bool:
    key = lambda g: [(n.op, n.target if isinstance(n.target, str) else id(n.target)) for n in g.nodes]  # noqa: E731
    return key(a) == key(b)


def _where(e: BaseException) -> str:
    """The line of the user's code an exception was raised from (the innermost frame outside torch/hookedmlp)."""
    tb, found = e.__traceback__, "(unknown line)"
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if not name.startswith(_NOT_USER) and not name.startswith("<"):
            found = f"{os.path.basename(name)}:{tb.tb_lineno}: {linecache.getline(name, tb.tb_lineno).strip()}"
        tb = tb.tb_next
    return found


def _reason(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "control flow" in text:
        return "it uses control flow that depends on the data (an if or loop on a tensor's value)"
    if "'len' is not supported" in text:
        return "it calls len() on a tensor (use x.size(0) or x.shape[0] instead)"
    return f"tracing failed ({type(e).__name__}: {text})"


def _export(net: nn.Module, example: tuple[Any, ...]) -> Optional[Captured]:
    """``torch.export`` of ``net`` in both modes, or None where it fails or freezes the batch size."""
    graphs: dict[bool, fx.Graph] = {}
    owners: dict[bool, nn.Module] = {}
    modes = {m: m.training for m in net.modules()}
    dims = tuple({0: torch.export.Dim.AUTO} if isinstance(a, torch.Tensor) else None for a in example)
    quiet = logging.getLogger("torch")
    level = quiet.level
    try:
        quiet.setLevel(logging.CRITICAL)  # export logs its failures at length: fx's reason is the one reported
        for training in (False, True):
            net.train(training)
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                ep = torch.export.export(net, example, dynamic_shapes=dims, strict=False)
            batch = next(
                n for n in ep.graph.nodes if n.op == "placeholder" and n.name in ep.graph_signature.user_inputs
            )
            if isinstance(batch.meta["val"].shape[0], int):
                return None  # the batch size was frozen into the graph
            owners[training] = ep.module()
            graphs[training] = owners[training].graph
    except Exception:  # export's failures are many; fx's reason is the one reported
        return None
    finally:
        quiet.setLevel(level)
        for m, mode in modes.items():
            m.training = mode
    # the mode is baked into each export: the hooked model runs the one matching its mode
    return Captured(net, graphs, owners[False], "export", (), ())


def capture_graph(
    net: nn.Module, example: tuple[Any, ...], leaf: Callable[[nn.Module], bool] = lambda m: False
) -> Captured:
    """Capture ``net``'s forward pass (see the module's docs); ``example`` are inputs for the export fallback.

    Raises:
        UnsupportedNetworkError: what cannot be captured, with the reason and the line of ``forward``.
    """
    name = type(net).__name__
    if has_torch_hooks(net):
        raise UnsupportedNetworkError(
            f"{name} itself carries PyTorch hooks, which the captured graph would not run; register them on the "
            "hooked model instead (model.register_forward_hook), or on one of the network's modules"
        )
    try:
        graph, log = _trace(net, leaf, training=False)
    except Exception as e:
        exported = _export(net, example)
        if exported is not None:
            return exported
        raise UnsupportedNetworkError(
            f"cannot capture {name}.forward: {_reason(e)}, at {_where(e)}; {HOOKEDROOT_ROUTE}"
        ) from None
    if log.writes:
        raise UnsupportedNetworkError(
            f"cannot capture {name}.forward: it assigns {log.writes[0]}; Python state that changes at every call "
            f"would be frozen at one value in the graph; keep such state outside forward, or {HOOKEDROOT_ROUTE}"
        )
    graphs = {False: graph, True: graph}
    if log.mode_reads:
        train_graph, _ = _trace(net, leaf, training=True)
        if not _same_structure(graph, train_graph):
            raise UnsupportedNetworkError(
                f"cannot capture {name}.forward: it branches on self.training at {log.mode_reads[0]}, so "
                "training and evaluation run different operations and a trace would freeze one branch; use a "
                f"module that behaves by mode (nn.Dropout, nn.BatchNorm1d...) instead, or {HOOKEDROOT_ROUTE}"
            )
        graphs[True] = train_graph
    tracer = _Tracer(leaf)
    inlined = tuple((p, m) for p, m in net.named_modules() if m is not net and not tracer.is_leaf_module(m, p))
    return Captured(net, graphs, net, "fx", tuple(log.reads.values()), inlined)
