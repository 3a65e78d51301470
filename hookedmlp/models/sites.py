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

__all__ = ["Site", "find_sites", "probe_inputs"]

_OPERATORS = {
    operator.add: "+", operator.sub: "-", operator.mul: "*", operator.truediv: "/", operator.matmul: "@",
    operator.neg: "unary -", operator.getitem: "[...]", operator.floordiv: "//", operator.pow: "**",
    operator.iadd: "+=", operator.isub: "-=", operator.imul: "*=", operator.itruediv: "/=",
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


def find_sites(owner: nn.Module, graph: fx.Graph, example: Sequence[Any], export: bool) -> list[Site]:
    """Every hook point of ``graph``, in graph order, from one eval-mode probe pass on ``example`` (batch first)."""
    probe = _Probe(owner, graph)
    with torch.no_grad():
        probe.run(*probe_inputs(example))
    names = _names(graph, export)
    sites = []
    for index, node in enumerate(graph.nodes):
        value = probe.values.get(node)
        if node not in names or not isinstance(value, Tensor) or node not in probe.dependent:
            continue
        if node.op == "call_module":
            module: Optional[str] = str(node.target)
            producer = _one_line(owner.get_submodule(module))
        elif node.op == "placeholder":
            module, producer = None, "input"
        else:
            module, producer = None, _op_label(node)
        sites.append(
            Site(
                node.name, names[node], index, module, producer, node.meta.get("source", ""),
                tuple(value.shape[1:]), value.dtype, node in probe.volatile,
            )
        )
    return sites
