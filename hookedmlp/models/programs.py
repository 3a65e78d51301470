"""The compiled passes of a hooked graph, made once and kept until the model's structure changes.

A hooked graph runs one of a few programs, each generated from the captured graph:

- the *bare* pass: the graph as captured, used whenever no hook point has a hook (it costs what
  the network's own forward costs);
- the *hooked* pass: the same graph with a runner after every hook point's node, which runs the
  hook points there in order;
- *parts*: from given node values to wanted ones (partial passes, the engine's graph cut).

Programs are keyed by the training mode (each mode may have its own graph), by what they run,
and by whether runners are in them.
"""

from collections.abc import Callable, Sequence
from typing import Any, Optional

import torch.fx as fx

from hookedmlp.hooks.point import HookPoint
from hookedmlp.models.codegen import Runner, compile_graph, sub_graph, with_runners

__all__ = ["PointRunner", "Programs"]


class PointRunner(Runner):
    """Runs the hook points of one node in order; each sees the previous one's result."""

    def __init__(self, name: str, points: Sequence[HookPoint]) -> None:
        super().__init__(name)
        self.points = tuple(points)

    def __call__(self, x: Any) -> Any:
        for hp in self.points:
            # PyTorch's own hooks on a hook point need its __call__; hookedmlp's run in forward
            x = hp(x) if hp._forward_hooks or hp._forward_pre_hooks else hp.forward(x)
        return x


class Programs:
    """Compiled programs of a captured graph per (mode, kind): see the module's docs."""

    def __init__(self, graphs: dict[bool, fx.Graph], points: dict[str, list[HookPoint]]) -> None:
        self.graphs = graphs
        self.points = points  # node name -> its hook points, in run order
        self._made: dict[Any, Callable[..., Any]] = {}

    def whole(self, training: bool, hooked: bool) -> Callable[..., Any]:
        """The whole pass in ``training`` mode, with runners at every hook point if ``hooked``."""
        key = (training, hooked)
        fn = self._made.get(key)
        if fn is None:
            graph = self.graphs[training]
            if hooked:
                graph, _ = with_runners(graph, {n: PointRunner(n, ps) for n, ps in self.points.items()})
            fn = self._made[key] = compile_graph(graph)
        return fn

    def part(
        self,
        training: bool,
        given: Sequence[str],
        wanted: Sequence[str],
        points: Optional[dict[str, Sequence[HookPoint]]] = None,
        single: bool = True,
    ) -> Callable[..., Any]:
        """``fn(owner, *given values)`` computing the values of ``wanted`` (see ``codegen.sub_graph``).

        ``points`` (node name -> hook points) puts runners in the part: a wanted node among them
        is returned after its hook points ran; a given node must not be among them (its value is
        taken as it is). None gives a bare part.
        """
        key = (
            training,
            tuple(given),
            tuple(wanted),
            None if points is None else tuple((n, tuple(map(id, ps))) for n, ps in points.items()),
            single,
        )
        fn = self._made.get(key)
        if fn is None:
            graph = self.graphs[training]
            if points:
                graph, after = with_runners(graph, {n: PointRunner(n, ps) for n, ps in points.items() if ps})
                wanted = [after.get(w, w) for w in wanted]
            fn = self._made[key] = compile_graph(sub_graph(graph, given, wanted, single))
        return fn
