"""The hook points of a captured graph: which nodes they are, their names, shapes and producers.

Every node whose value is a tensor computed from the inputs is a hook point (a *site*):
module calls, functional ops (``F.relu``, ``torch.tanh``, the ``+`` of a skip connection,
``clamp``, ``view``...) and the inputs. Names follow torchvision's ``get_graph_node_names``: a
module's output is its path (``layer1.0.conv1``; a second call of one module ``layer1.0.relu_1``),
an op is named in the scope of the module whose forward runs it (``layer1.0.add``, top-level
``add_1``, ``clamp``). Shapes come from one probe pass in eval mode, which also finds the values
an in-place op edits later in the pass (a cache must copy those).
"""

import dataclasses
import operator
import re
from collections.abc import Sequence
from typing import Any, Optional

import torch
import torch.fx as fx
from torch import Tensor, nn

from hookedmlp.errors import UnsupportedNetworkError
from hookedmlp.hooks.point import HookPoint

__all__ = ["Site", "find_sites", "probe_inputs"]

_OPERATORS = {
    operator.add: "+",
    operator.sub: "-",
    operator.mul: "*",
    operator.truediv: "/",
    operator.matmul: "@",
    operator.neg: "unary -",
    operator.getitem: "[...]",
    operator.floordiv: "//",
    operator.pow: "**",
    operator.iadd: "+=",
    operator.isub: "-=",
    operator.imul: "*=",
    operator.itruediv: "/=",
}


@dataclasses.dataclass(frozen=True)
class Site:
    """One hook point of a graph: the node, its hook name, what produced it, its per-example shape.

    ``module`` is the producing module's path for a module call (None for an op or an input);
    ``volatile``: an in-place operation later in the pass edits this value (or a view of it).
    """

    node: str
    name: str
    index: int
    module: Optional[str]
    producer: str
    source: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    volatile: bool


def _scope(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack")
    return next(reversed(stack.values()))[0] if stack else ""


def _base(node: fx.Node) -> str:
    return re.sub(r"_\d+$", "", node.name)


def _op_label(node: fx.Node) -> str:
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    target = node.target
    if target in _OPERATORS:
        return _OPERATORS[target]
    module = getattr(target, "__module__", "") or ""
    name = getattr(target, "__name__", str(target))
    if module == "torch.nn.functional":
        return f"F.{name}"
    if isinstance(target, torch._ops.OpOverload):
        return f"aten.{target._schema.name.split('::')[-1]}"
    return f"torch.{name}" if module.startswith("torch") else name


def _one_line(module: nn.Module) -> str:
    text = repr(module)
    return text if "\n" not in text and len(text) <= 80 else f"{type(module).__name__}(...)"


def _names(graph: fx.Graph, export: bool) -> dict[fx.Node, str]:
    """torchvision-style names for every node that may be a hook point."""
    nodes = list(graph.nodes)
    taken: set[str] = set()
    out: dict[fx.Node, str] = {}

    def unique(base: str) -> str:
        name, k = base, 0
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        return name

    for i, node in enumerate(nodes):
        if node.op == "placeholder":
            out[node] = unique(str(node.target).lstrip("*"))
        elif node.op == "call_module":
            out[node] = unique(str(node.target))
        elif node.op in ("call_function", "call_method"):
            scope = _scope(node)
            after = _scope(nodes[i + 1]) if i + 1 < len(nodes) else ""
            if export and scope and after != scope and not after.startswith(scope + "."):
                out[node] = unique(scope)  # the last op of a module call: the module's output
            else:
                out[node] = unique(f"{scope}.{_base(node)}" if scope else _base(node))
    return out


class _Probe(fx.Interpreter):
    """Runs the graph once, recording each node's value, whether it depends on the inputs, and in-place edits."""

    def __init__(self, owner: nn.Module, graph: fx.Graph) -> None:
        super().__init__(owner, graph=graph, garbage_collect_values=False)
        self.values: dict[fx.Node, Any] = {}
        self.dependent: set[fx.Node] = set()
        self.volatile: set[fx.Node] = set()
        self._by_storage: dict[int, list[fx.Node]] = {}

    def run_node(self, n: fx.Node) -> Any:
        inputs = [a for a in n.all_input_nodes if isinstance(self.values.get(a), Tensor)]
        versions = [self.values[a]._version for a in inputs]
        value = super().run_node(n)
        for a, v in zip(inputs, versions):
            if self.values[a]._version != v:  # edited in place: every value on that storage changed
                self.volatile.update(self._by_storage.get(_storage(self.values[a]), ()))
        if n.op == "placeholder" or any(a in self.dependent for a in n.all_input_nodes):
            self.dependent.add(n)
        if isinstance(value, Tensor):
            self._by_storage.setdefault(_storage(value), []).append(n)
        self.values[n] = value
        return value


def _storage(t: Tensor) -> int:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return id(t)


def probe_inputs(example: Sequence[Any]) -> tuple[Any, ...]:
    """The probe's inputs: ``example``'s tensors cloned (a graph may edit its input in place)."""
    return tuple(a.clone() if isinstance(a, Tensor) else a for a in example)


def _failed(owner: nn.Module, graph: fx.Graph, probe: "_Probe", e: Exception, example: Sequence[Any]) -> Exception:
    """The error for an example batch the network cannot take: which node failed, and how to pass other inputs."""
    done = set(probe.values)
    node = next((n for n in graph.nodes if n not in done), None)
    what = "its forward"
    if node is not None and node.op == "call_module":
        what = f"module {node.target} ({type(owner.get_submodule(str(node.target))).__name__})"
    elif node is not None:
        what = f"{_op_label(node)} at {node.meta.get('source', '?')}"
    shape = list(example[0].shape) if example and isinstance(example[0], Tensor) else "?"
    first = str(e).splitlines()[0] if str(e) else ""
    return UnsupportedNetworkError(
        f"running {type(owner).__name__} on an example batch of shape {shape}: {what} failed "
        f"({type(e).__name__}: {first}); if the network takes other inputs, pass input_shape=, the shape of one "
        "example (or example=, its inputs)"
    )


def find_sites(
    owner: nn.Module, graph: fx.Graph, example: Sequence[Any], export: bool, points_only: bool = False
) -> list[Site]:
    """Every hook point of ``graph``, in graph order, from one eval-mode probe pass on ``example`` (batch first).

    With ``points_only`` (a network with ``HookPoint`` modules in its forward), the hook points
    are those calls alone, named by the HookPoints' paths.
    """
    probe = _Probe(owner, graph)
    modes = {m: m.training for m in owner.modules()}
    try:
        for m in modes:  # eval mode: a batch norm learns nothing from the probe
            m.training = False
        with torch.no_grad():
            probe.run(*probe_inputs(example))
    except Exception as e:
        raise _failed(owner, graph, probe, e, example) from None
    finally:
        for m, mode in modes.items():
            m.training = mode
    names = _names(graph, export)
    sites = []
    for index, node in enumerate(graph.nodes):
        value = probe.values.get(node)
        if node not in names or not isinstance(value, Tensor):
            continue
        module: Optional[str] = str(node.target) if node.op == "call_module" else None
        if points_only:
            if module is None or not isinstance(owner.get_submodule(module), HookPoint):
                continue
            name, producer = module, "hook point in forward"
        elif node not in probe.dependent:
            continue
        else:
            name = names[node]
            producer = (
                _one_line(owner.get_submodule(module))
                if module
                else "input"
                if node.op == "placeholder"
                else _op_label(node)
            )
        sites.append(
            Site(
                node.name,
                name,
                index,
                module,
                producer,
                node.meta.get("source", ""),
                tuple(value.shape[1:]),
                value.dtype,
                node in probe.volatile,
            )
        )
    return sites
