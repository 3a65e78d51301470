"""Python code from captured graphs: the whole pass, the pass with hook points, and parts of it.

``compile_graph`` turns a graph into ``fn(owner, *inputs)`` with torch.fx's own code generator,
so a pass costs what the network's own ``forward`` costs: no interpreter. The code looks up
every module and parameter on ``owner`` when it runs (``self.fc1(x)``, ``self.logit_scale``), so
it always uses the network's live modules and weights. ``with_runners`` inserts a call after
each hook point's node; ``sub_graph`` keeps the nodes between given values and wanted ones (the
graph cut of the analysis engine and of patching, and a chain's partial passes).
"""

import hashlib
import linecache
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Optional

import torch.fx as fx
from torch import nn

__all__ = ["compile_graph", "with_runners", "strip", "sub_graph", "Runner"]

_CODE: dict[str, Any] = {}  # source -> compiled code object: models of one architecture share it


class Runner:
    """A callable inserted into a graph: fx's code generator names it by ``__name__`` and ``__module__``."""

    __module__ = "hookedmlp_graph"

    def __init__(self, name: str) -> None:
        self.__name__ = name.replace(".", "_")


def _fx_expr(target: str) -> str:
    """How torch.fx's code names ``self.<target>`` (``getattr(self.blocks, "0").fc`` where a part is a number)."""
    expr = "self"
    for part in target.split("."):
        expr = f"{expr}.{part}" if part.isidentifier() else f'getattr({expr}, "{part}")'
    return expr


def _dict_expr(owner: nn.Module, target: str) -> Optional[str]:
    """The same lookup through the modules' own dicts (``self._modules["fc"]``): live, without ``__getattr__``."""
    *path, last = target.split(".")
    module, expr = owner, "self"
    for part in path:
        if part not in module._modules:
            return None
        module, expr = module._modules[part], f"{expr}._modules[{part!r}]"
    for table in ("_modules", "_parameters", "_buffers"):
        if last in getattr(module, table):
            return f"{expr}.{table}[{last!r}]"
    return None  # a plain attribute: keep torch.fx's getattr


def _fast_lookups(src: str, graph: fx.Graph, owner: Optional[nn.Module]) -> str:
    if owner is None:
        return src
    targets = {str(n.target) for n in graph.nodes if n.op in ("call_module", "get_attr")}
    for target in sorted(targets, key=len, reverse=True):  # longest first: a.b before a
        fast = _dict_expr(owner, target)
        if fast is not None:
            src = re.sub(re.escape(_fx_expr(target)) + r"(?![\w])", lambda m, f=fast: f, src)
    return src


def compile_graph(graph: fx.Graph, owner: Optional[nn.Module] = None) -> Callable[..., Any]:
    """``forward(owner, *inputs)`` running ``graph``; tracebacks show the generated lines.

    With ``owner``, modules and parameters are looked up through their modules' dicts (still
    live: a module replaced later is the one called), which costs a fraction of ``getattr``.
    """
    code = graph.python_code(root_module="self")
    src = _fast_lookups(code.src, graph, owner)
    key = hashlib.sha1(src.encode()).hexdigest()[:16]
    compiled = _CODE.get(key)
    if compiled is None:
        filename = f"<hookedmlp graph {key}>"
        linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
        compiled = _CODE[key] = compile(src, filename, "exec")
    namespace = dict(code.globals)
    exec(compiled, namespace)
    return namespace["forward"]


def with_runners(
    graph: fx.Graph, runners: Mapping[str, Runner], replace: bool = False
) -> tuple[fx.Graph, dict[str, str]]:
    """A copy of ``graph`` where the value of each node named in ``runners`` passes through its runner.

    With ``replace`` the runner takes the node's place (the node is a ``HookPoint`` call: the
    runner gets its input instead). Returns the copy and, for each such node, the name of the
    runner's node (whose value the node's users now take).
    """
    out = _like(graph)
    env: dict[fx.Node, fx.Node] = {}
    after: dict[str, str] = {}
    for node in graph.nodes:
        runner = runners.get(node.name)
        if runner is not None and replace:
            new = out.call_function(runner, (env[node.args[0]],))
        else:
            new = out.node_copy(node, lambda n: env[n])
            if runner is not None:
                new = out.call_function(runner, (new,))
        if runner is not None:
            after[node.name] = new.name
        env[node] = new
    return out, after


def _like(graph: fx.Graph) -> fx.Graph:
    """An empty graph generating code the way ``graph`` does (torch.export's graphs pack inputs and outputs)."""
    out = fx.Graph()
    out.set_codegen(graph._codegen)
    return out


def strip(graph: fx.Graph, names: Iterable[str]) -> fx.Graph:
    """A copy of ``graph`` without the nodes ``names`` (identity calls: their users take their input)."""
    drop = set(names)
    out = _like(graph)
    env: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        env[node] = env[node.args[0]] if node.name in drop else out.node_copy(node, lambda n: env[n])
    return out


def _needed(wanted: Iterable[fx.Node], given: set[fx.Node]) -> set[fx.Node]:
    """The nodes that computing ``wanted`` from ``given`` runs (given ones excluded)."""
    seen: set[fx.Node] = set()
    todo = [n for n in wanted if n not in given]
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        todo.extend(a for a in n.all_input_nodes if a not in given and a not in seen)
    return seen


def sub_graph(graph: fx.Graph, given: Sequence[str], wanted: Sequence[str], single: bool = False) -> fx.Graph:
    """A graph taking the values of the nodes ``given`` (in order) and returning those of ``wanted``.

    Only the nodes between them run. Returns a tuple of ``wanted``'s values, or the value itself
    with ``single``. A wanted node that depends on an input placeholder not given is computed
    from it only if that placeholder is given too (``ValueError`` otherwise).
    """
    by_name = {n.name: n for n in graph.nodes}
    given_nodes = [by_name[g] for g in given]
    wanted_nodes = [by_name[w] for w in wanted]
    run = _needed(wanted_nodes, set(given_nodes))
    missing = [n.name for n in run if n.op == "placeholder"]
    if missing:
        raise ValueError(f"the values wanted need the inputs {missing}, which are not given")
    out = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for g in given_nodes:
        env[g] = out.placeholder(f"given_{g.name}")
    for node in graph.nodes:  # graph order keeps every input before its use
        if node in run:
            env[node] = out.node_copy(node, lambda n: env[n])
    results = [env[w] for w in wanted_nodes]
    out.output(results[0] if single else tuple(results))
    return out
