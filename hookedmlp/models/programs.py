"""The compiled passes of a hooked graph, made once per mode and kind and kept with the model.

A hooked graph runs one of a few programs, each generated from its captured graph:

- the *bare* pass, used whenever no hook point has a hook: the graph as captured (without its
  ``HookPoint`` calls, for a network that has them), costing what the network's own forward costs;
- the *hooked* pass: each hook point's runner at its node (after a node whose value it is, or in
  place of a ``HookPoint`` call);
- *parts* of either, from given values to wanted ones: partial passes, and the graph cut of the
  analysis engine and of patching.

Names of given and wanted nodes are those of the captured graph; a value at a hook point is
the value after its hooks ran.
"""

from collections.abc import Callable, Sequence
from typing import Any, Optional

import torch.fx as fx
from torch import nn

from hookedmlp.hooks.point import HookPoint
from hookedmlp.models.codegen import Runner, compile_graph, strip, sub_graph, with_runners

__all__ = ["PointRunner", "Programs"]


class PointRunner(Runner):
    """Runs one hook point on the value passing its node."""

    def __init__(self, node: str, point: HookPoint) -> None:
        super().__init__(f"point_{node}")
        self.point = point

    def __call__(self, x: Any) -> Any:
        hp = self.point
        # PyTorch's own hooks on a hook point need its __call__; hookedmlp's run in forward
        return hp(x) if hp._forward_hooks or hp._forward_pre_hooks else hp.forward(x)


class Programs:
    """Compiled programs of a captured graph (see the module's docs).

    Args:
        graphs: the graph of each training mode.
        points: node name -> the hook point whose value that node is.
        replace: the nodes are ``HookPoint`` calls (a network with hook points in its
            forward), not values computed by the network.
    """

    def __init__(
        self,
        graphs: dict[bool, fx.Graph],
        points: dict[str, HookPoint],
        replace: bool,
        owner: Optional[nn.Module] = None,
    ) -> None:
        self.graphs, self.points, self.replace, self.owner = graphs, points, replace, owner
        self._graphs: dict[tuple[bool, bool], tuple[fx.Graph, dict[str, str]]] = {}
        self._made: dict[Any, Callable[..., Any]] = {}

    def _variant(self, training: bool, hooked: bool) -> tuple[fx.Graph, dict[str, str]]:
        """The graph to compile from, and what each node name of the captured graph is called in it."""
        key = (training, hooked)
        if key not in self._graphs:
            graph, rename = self.graphs[training], {}
            if hooked:
                runners = {n: PointRunner(n, hp) for n, hp in self.points.items()}
                graph, rename = with_runners(graph, runners, self.replace)
            elif self.replace:
                by_name = {n.name: n for n in graph.nodes}
                for name in self.points:  # a stripped HookPoint call's value is its input's
                    source = by_name[name].args[0]
                    while source.name in self.points:
                        source = source.args[0]
                    rename[name] = source.name
                graph = strip(graph, self.points)
            self._graphs[key] = (graph, rename)
        return self._graphs[key]

    def whole(self, training: bool, hooked: bool) -> Callable[..., Any]:
        """``fn(owner, *inputs)``: the whole pass in ``training`` mode, with the hook points if ``hooked``."""
        key = (training, hooked)
        fn = self._made.get(key)
        if fn is None:
            fn = self._made[key] = compile_graph(self._variant(training, hooked)[0], self.owner)
        return fn

    def part(
        self, training: bool, given: Sequence[str], wanted: Sequence[str], hooked: bool, single: bool = True
    ) -> Callable[..., Any]:
        """``fn(owner, *given values)``: the values of ``wanted`` (one, with ``single``; else a tuple)."""
        key = (training, tuple(given), tuple(wanted), hooked, single)
        fn = self._made.get(key)
        if fn is None:
            graph, rename = self._variant(training, hooked)
            names = [rename.get(n, n) for n in given], [rename.get(n, n) for n in wanted]
            fn = self._made[key] = compile_graph(sub_graph(graph, *names, single), self.owner)
        return fn
