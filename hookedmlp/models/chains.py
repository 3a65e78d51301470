"""Recognising a chain in a captured graph: each value computed from the one before it alone.

A captured network whose hook points form one path from the input to the output is a chain;
it then answers to the study's names too: ``layer{i}.post`` is the value of the chain's step
``i`` and ``layer{i}.pre`` the value before it. A first step that only reshapes the input (a
flatten, a view) is absorbed: ``layer0.pre`` is its result, as in the study's network.
``module_chain`` finds the chain of *modules* that ``HookedMLP.from_module`` wraps, refusing a
forward that computes anything between its modules.
"""

import operator
from collections.abc import Sequence
from typing import Optional

import torch.fx as fx
from torch import nn

from hookedmlp.errors import UnsupportedNetworkError
from hookedmlp.models.sites import Site

__all__ = ["chain_order", "chain_aliases", "module_chain", "shape_only", "RESHAPES"]

RESHAPES = ("view", "reshape", "flatten", "unflatten")  # ops that only reshape each example
_SHAPE_METHODS = ("size", "dim", "numel")


def shape_only(node: fx.Node) -> bool:
    """Whether a node reads only the shape of its input (``len(x)``, ``x.size(0)``, ``x.shape[1]``), not its values."""
    if node.op == "call_method":
        return node.target in _SHAPE_METHODS
    if node.op == "call_function":
        if node.target is len or node.target is getattr and node.args[1:] == ("shape",):
            return True
        return node.target is operator.getitem and isinstance(node.args[0], fx.Node) and shape_only(node.args[0])
    return False


def _site_inputs(node: fx.Node, site_nodes: set[fx.Node]) -> set[fx.Node]:
    """The sites a node's value is computed from, looking through nodes that are not sites (sizes, constants)."""
    found: set[fx.Node] = set()
    todo, seen = list(node.all_input_nodes), set()
    while todo:
        n = todo.pop()
        if n in seen or shape_only(n):  # a batch size or a shape is not a value flowing between steps
            continue
        seen.add(n)
        if n in site_nodes:
            found.add(n)
        else:
            todo.extend(n.all_input_nodes)
    return found


def chain_order(graph: fx.Graph, sites: Sequence[Site]) -> Optional[list[Site]]:
    """``sites`` if they form a chain (the input first, each next computed from the one before alone), else None."""
    by_name = {n.name: n for n in graph.nodes}
    nodes = [by_name[s.node] for s in sites]
    site_nodes = set(nodes)
    if len(nodes) < 2 or nodes[0].op != "placeholder" or sum(n.op == "placeholder" for n in nodes) != 1:
        return None
    for before, node in zip(nodes, nodes[1:]):
        if _site_inputs(node, site_nodes) != {before}:
            return None
    for node in nodes[:-1]:  # each value feeds only the next step
        if any(
            _site_inputs(user, site_nodes) - {node} or user.op == "output"
            for user in node.users
            if user not in site_nodes
        ):
            return None
    output = next(n for n in graph.nodes if n.op == "output")
    return list(sites) if output.args[0] is nodes[-1] else None


def _is_reshape(site: Site) -> bool:
    kind = site.producer.split("(")[0].removeprefix("Tensor.").removeprefix("torch.")
    return kind in RESHAPES or kind in ("Flatten", "Unflatten")


def chain_aliases(graph: fx.Graph, sites: Sequence[Site]) -> dict[str, str]:
    """``layer{i}.pre`` / ``layer{i}.post`` -> the hook name of their value, for a chain (else empty)."""
    order = chain_order(graph, sites)
    if order is None:
        return {}
    steps = order[1:]
    start = order[0]
    if len(steps) > 1 and _is_reshape(steps[0]):
        start, steps = steps[0], steps[1:]
    aliases = {"layer0.pre": start.name}
    for i, site in enumerate(steps):
        aliases[f"layer{i}.post"] = site.name
        if i + 1 < len(steps):
            aliases[f"layer{i + 1}.pre"] = site.name
    return aliases


def _why_not(graph: fx.Graph, sites: Sequence[Site]) -> str:
    """Where a graph stops being a chain: the first value computed from something else than the value before it."""
    by_name = {n.name: n for n in graph.nodes}
    nodes = [by_name[s.node] for s in sites]
    site_nodes = set(nodes)
    if sum(n.op == "placeholder" for n in nodes) != 1:
        return "forward takes several inputs"
    for before, node, site in zip(nodes, nodes[1:], sites[1:]):
        found = _site_inputs(node, site_nodes)
        if found != {before}:
            names = ", ".join(s.name for s in sites if by_name[s.node] in found)
            return f"{site.name} ({site.producer}) at {site.source} combines {names} (a skip connection or a branch)"
    return "its output is not its last value alone (several outputs, or a value used twice)"


def module_chain(
    graph: fx.Graph, sites: Sequence[Site], net: nn.Module, route: str
) -> tuple[list[Optional[nn.Module]], list[str]]:
    """The modules ``net``'s forward runs one after another, with their paths (a pure reshape as ``None``).

    Raises ``UnsupportedNetworkError`` naming the first thing forward computes that is not a
    module call on the previous value (an op such as ``F.relu``, a skip connection, a
    parameter used directly), with its line of forward and ``route``.
    """
    name = type(net).__name__
    hint = f"open it with hookedmlp.capture(net), which hooks every module and op, or {route}"
    for site in sites[1:]:
        if site.module is None and not _is_reshape(site):
            raise UnsupportedNetworkError(
                f"{name}.forward is not a chain of modules: it applies {site.producer} at {site.source}, an operation "
                f"outside any module (named {site.name!r} in its graph); {hint}"
            )
    order = chain_order(graph, sites)
    if order is None:
        raise UnsupportedNetworkError(f"{name}.forward is not a chain: {_why_not(graph, sites)}; {hint}")
    modules: list[Optional[nn.Module]] = []
    paths: list[str] = []
    for site in order[1:]:
        if site.module is not None:
            modules.append(net.get_submodule(site.module))
            paths.append(site.module)
        else:  # a reshape: the only operation outside a module that a chain of modules holds
            modules.append(None)
            paths.append(f"<{site.producer} in forward, at {site.source}>")
    return modules, paths
