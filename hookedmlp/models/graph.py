"""HookedGraph: any network torch can capture, hooked at every module call and every op.

``hookedmlp.capture(net)`` (or ``HookedGraph(net)``) captures ``net.forward`` as a graph
(``hookedmlp.models.capture``) and runs that graph: the hooked model computes what the network
computes by construction, in both modes, gradients included. Each tensor the pass computes is a
hook point (``hookedmlp.models.sites``), named as ``print(net)`` and torchvision's
``get_graph_node_names`` name it. A chain also answers to the study's ``layer{i}.pre`` /
``layer{i}.post``.

The hooked model *shares* the network's modules, parameters and buffers (its ``state_dict`` is
the network's): an update to either is seen by both, and the graph looks every module and
parameter up when it runs, so replacing ``net.fc`` replaces it for the hooked model too.
"""

import linecache
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import torch
import torch.fx as fx
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from hookedmlp.errors import UnsupportedNetworkError, UsageError
from hookedmlp.hooks.point import HOOK_EPOCH, HookPoint
from hookedmlp.hooks.root import HookedRoot
from hookedmlp.models.api import HookedModel
from hookedmlp.models.capture import Captured, capture_graph, has_torch_hooks
from hookedmlp.models.chains import chain_aliases
from hookedmlp.models.cut import GraphView
from hookedmlp.models.example import example_inputs, output_node
from hookedmlp.models.programs import Programs
from hookedmlp.models.sites import Site, find_sites
from hookedmlp.models.verify import verify

__all__ = ["HookedGraph", "capture"]

OutputKey = Union[int, str, None]


class HookedGraph(HookedModel):
    """A network opened by capturing its graph: every module call and every op is a hook point.

    Args:
        net: the network (any ``nn.Module`` torch.fx or torch.export can capture; a bare
            ``nn.Linear`` is fine).
        input_shape: one example's shape (default: read from a first Linear; required for
            a network that starts with anything else).
        example: instead of ``input_shape``, example inputs ``(x, ...)`` with a batch
            dimension, for a ``forward`` taking several arguments.
        output: for a ``forward`` returning a tuple or dict, which output is the logits (its
            index or key); the analysis scores that one.
        check: also compare the hooked model with the network on check inputs (negative and
            large values, both modes, gradients), a second line behind capture.

    Raises:
        UnsupportedNetworkError: the network cannot be captured (the reason, the line of
            ``forward``, and the route to a hand-written ``HookedRoot``).

    Examples:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> hooked = HookedGraph(net)
        >>> hooked.hook_names
        ['input', '0', '1', '2']
        >>> torch.equal(hooked(torch.ones(1, 4)), net(torch.ones(1, 4)))
        True
    """

    def __init__(
        self,
        net: nn.Module,
        input_shape: Optional[Sequence[int]] = None,
        *,
        example: Optional[Sequence[Any]] = None,
        output: OutputKey = None,
        check: bool = True,
        leaf: Optional[Callable[[nn.Module], bool]] = None,
        captured: Optional[Captured] = None,
    ) -> None:
        super().__init__()
        if not isinstance(net, nn.Module) or isinstance(net, HookedRoot):
            what = "already a hooked model" if isinstance(net, HookedRoot) else type(net).__name__
            raise UnsupportedNetworkError(f"capture() takes a torch nn.Module, got {what}")
        inputs = example_inputs(net, input_shape, example)
        points_in_forward = any(isinstance(m, HookPoint) for m in net.modules())
        with torch.random.fork_rng(devices=[]):  # capture leaves the global RNG as it was, also when it refuses
            if captured is None:
                captured = capture_graph(net, inputs, leaf or (lambda m: isinstance(m, HookPoint)))
            sites = find_sites(
                captured.owner, captured.graphs[False], inputs, captured.kind == "export", points_in_forward
            )
        self._open(net, captured, sites, tuple(inputs[0].shape[1:]))
        self.__dict__["_output"] = output_node(captured.graphs[False], inputs, net, output)
        self.output = output
        if check:
            with torch.random.fork_rng(devices=[]):
                verify(self, net, inputs)

    def _open(self, net: nn.Module, captured: Captured, sites: list[Site], input_shape: tuple[int, ...]) -> None:
        """Become the hooked ``net``: share its modules, parameters and buffers, and make the hook points."""
        for name in ("_modules", "_parameters", "_buffers", "_non_persistent_buffers_set"):
            object.__setattr__(self, name, getattr(net, name))
        in_forward = any(isinstance(m, HookPoint) for m in net.modules())
        self.__dict__.update(_net=net, _captured=captured, _sites=sites, _active=(None, False), _in_forward=in_forward)
        out = next(n for n in captured.graphs[False].nodes if n.op == "output").args[0]
        if isinstance(out, (tuple, list)) and len(out) == 1:
            out = out[0]  # one output, packed (torch.export's graphs return their outputs flattened)
        self.__dict__["_output"] = out.name if isinstance(out, fx.Node) else ""
        self.output = None
        self.input_shape = input_shape
        self.training = net.training
        self.setup()

    # -- hook points ---------------------------------------------------------------------
    def setup(self) -> None:
        """Make (or, for HookPoints placed in ``forward``, find) the hook points of the graph's sites."""
        sites = self._sites
        self.mod_dict = {n: m for n, m in self.named_modules() if n}
        if self._in_forward:
            super().setup()  # the HookPoints are the network's own modules, named by their paths
            by_node = {s.node: self.hook_dict[s.name] for s in sites}
            aliases: dict[str, str] = {}
        else:
            self.hook_dict, by_node = {}, {}
            for site in sites:
                by_node[site.node] = self.hook_dict[site.name] = HookPoint()
                self.hook_dict[site.name].name = site.name
            aliases = chain_aliases(self._captured.graphs[False], sites)
        for site in sites:
            by_node[site.node].volatile = site.volatile
        self.__dict__.update(_aliases=aliases, _site_of={s.name: s for s in sites})
        self.__dict__["_programs"] = Programs(self._captured.graphs, by_node, self._in_forward, self._captured.owner)

    def resolve_names(self, names_filter: Any) -> list[str]:
        """As ``HookedRoot.resolve_names``; another name of a hook point (an alias) resolves to it."""
        aliases = self.__dict__["_aliases"]
        if isinstance(names_filter, str) and names_filter in aliases:
            return [aliases[names_filter]]
        if isinstance(names_filter, (list, tuple)) and any(isinstance(n, str) and n in aliases for n in names_filter):
            names_filter = list(dict.fromkeys(aliases.get(n, n) if isinstance(n, str) else n for n in names_filter))
        return super().resolve_names(names_filter)

    def resolve_name(self, name: str) -> str:
        aliases = self.__dict__["_aliases"]
        return aliases[name] if isinstance(name, str) and name in aliases else super().resolve_name(name)

    @property
    def sites(self) -> list[Site]:
        """Every tensor the pass computes, in order: node, hook name, producer, line of ``forward``, shape."""
        return list(self._sites)

    def site(self, name: str) -> Site:
        """The site of hook point (or alias) ``name``."""
        hook = self.resolve_name(name)  # unknown: the did-you-mean error
        if hook not in self._site_of:
            raise UsageError(
                f"hook point {hook!r} never runs: {type(self._net).__name__}.forward does not call it, so it has no "
                "activation; call it in forward, or remove it"
            )
        return self._site_of[hook]

    def activation_shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: s.shape for n, s in self._site_of.items()}

    def prepare_input(self, x: Any) -> Tensor:
        """``x`` checked (a non-empty floating-point batch on the model's dtype and device), as the network takes it."""
        return self.check_tensor(x)

    def as_batch(self, x: Any) -> Tensor:
        """Like ``prepare_input``; one example of the captured input shape becomes a batch of one."""
        if isinstance(x, Tensor) and tuple(x.shape) == self.input_shape:
            x = x.unsqueeze(0)
        return self.prepare_input(x)

    def activation_shape(self, name: str) -> tuple[int, ...]:
        return self.site(name).shape

    def aliases_of(self, name: str) -> list[str]:
        """The other names of ``name``'s tensor: aliases, and hook points at the same node."""
        site = self.site(name)
        same = [n for n, s in self._site_of.items() if s.node == site.node]
        return same + [a for a, n in self._aliases.items() if n in same]

    # -- running -------------------------------------------------------------------------
    def _any_hook(self) -> bool:
        """Whether any hook point has a hook; rescanned only after a hook was added or removed anywhere."""
        key = (HOOK_EPOCH[0], RemovableHandle.next_id)
        seen, active = self.__dict__["_active"]
        if seen == key:
            return active
        for path, m in self._captured.inlined:
            if has_torch_hooks(m):
                raise UsageError(
                    f"module {path} ({type(m).__name__}) carries a PyTorch hook registered after the network was "
                    "captured, but its forward is part of the graph, so the hook would not run; register it before "
                    "capturing (the module then stays whole), or use model.add_hook on one of its hook points"
                )
        active = any(
            hp.fwd_hooks or hp.bwd_hooks or hp._forward_hooks or hp._forward_pre_hooks for hp in self.hook_dict.values()
        )
        self.__dict__["_active"] = (key, active)
        return active

    def _check_guards(self) -> None:
        for guard in self._captured.guards:
            if not guard.holds():
                where = f"{guard.path}.{guard.attr}" if guard.path else guard.attr
                raise UsageError(
                    f"{where} was {guard.value!r} when the network was captured and is now "
                    f"{getattr(guard.module, guard.attr, '<deleted>')!r}; forward read it at {guard.line}, so the "
                    "graph holds the old value: capture the network again after changing it"
                )

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the captured graph (with the hook points when any hook is attached); returns what ``net`` returns."""
        if self._captured.guards:
            self._check_guards()
        fn = self._programs.whole(self._net.training, self._any_hook())
        try:
            return fn(self._captured.owner, *args, **kwargs)
        except Exception as e:
            _explain(self, e, args)
            raise

    def train(self, mode: bool = True) -> "HookedGraph":
        super().train(mode)
        self._net.train(mode)
        return self

    def select_output(self, out: Any) -> Tensor:
        """The logits in what ``forward`` returned (``out[output]`` for a tuple or dict output)."""
        return out if self.output is None else out[self.output]

    def graph_view(self) -> GraphView:
        """The graph as the cut (``hookedmlp.models.cut``) uses it: programs, hook points' nodes, the logits' node."""
        programs = self._programs
        memo = self.__dict__.get("_view")
        if memo is None or memo.programs is not programs:
            node_of = {n: s.node for n, s in self._site_of.items()}
            node_of.update({a: node_of[n] for a, n in self._aliases.items()})
            net = self._net
            memo = self.__dict__["_view"] = GraphView(
                self._captured.owner, programs, node_of, self.output_node, lambda: net.training
            )
        return memo

    @property
    def output_node(self) -> str:
        """The graph node whose value is the logits (what ``select_output`` picks)."""
        return self.__dict__["_output"]

    # -- display ---------------------------------------------------------------------------
    def hook_table(self) -> list[tuple[str, str, str]]:
        """``(hook name, [batch, *shape], what produced it)`` per hook point; names of one tensor share a row."""
        rows = []
        for site in self._sites:
            names = [n for n, s in self._site_of.items() if s is site]
            also = [a for a, n in self._aliases.items() if n in names]
            shape = "[" + ", ".join(["batch", *map(str, site.shape)]) + "]"
            what = site.producer if site.module is None else f"{site.producer} ({site.module})"
            where = f", {site.source}" if site.module is None and site.source and site.producer != "input" else ""
            same = f"  [same tensor: {', '.join(names[1:] + also)}]" if len(names) > 1 or also else ""
            rows.append((names[0], shape, what + where + same))
        return rows

    def __repr__(self) -> str:
        rows = self.hook_table()
        width = max((len(r[0]) for r in rows), default=0) + 2
        shape_width = max((len(r[1]) for r in rows), default=0) + 2
        head = (
            f"{type(self).__name__}({type(self._net).__name__}, captured by {self._captured.kind}; "
            f"{len(self.hook_dict)} hook points, {len(self.attached_hooks())} hooks attached"
        )
        return "\n".join([head, *(f"  {n:<{width}}{s:<{shape_width}}{w}" for n, s, w in rows), ")"])

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_programs"] = None  # compiled code: made again after unpickling
        state["_active"] = (None, False)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        by_node = {s.node: self.hook_dict[s.name] for s in self._sites}
        self.__dict__["_programs"] = Programs(self._captured.graphs, by_node, self._in_forward, self._captured.owner)


def _explain(model: HookedGraph, e: Exception, args: tuple[Any, ...]) -> None:
    """Add a note naming the node that failed, its line of ``forward``, and the shapes it was opened with."""
    tb, line = e.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.startswith("<hookedmlp graph"):
            line = tb.tb_frame.f_code.co_filename, tb.tb_lineno
        tb = tb.tb_next
    if line is None:
        return
    text = linecache.getline(*line).strip()
    node = text.split(" = ", 1)[0].strip() if " = " in text else ""
    if node.startswith("point_"):  # raised by a hook (or a check of what it returned): the user's own code
        return
    site = next((s for s in model._sites if s.node == node), None)
    got = ", ".join(str(list(a.shape)) for a in args if isinstance(a, Tensor))
    what = f"{site.name} ({site.producer}{', ' + site.source if site.source else ''})" if site else node or "a node"
    e.add_note(
        f"hookedmlp: while running {what} of the captured {type(model._net).__name__}.forward on inputs of shape "
        f"{got}; the network was captured with inputs of shape [batch, {', '.join(map(str, model.input_shape))}]"
    )


def capture(
    net: nn.Module,
    input_shape: Optional[Sequence[int]] = None,
    *,
    example: Optional[Sequence[Any]] = None,
    output: OutputKey = None,
) -> HookedGraph:
    """Open any network torch can capture: ``HookedGraph(net, ...)`` (see there).

    Examples:
        >>> hooked = capture(nn.Sequential(nn.Flatten(), nn.Linear(16, 4), nn.ReLU()), input_shape=(1, 4, 4))
        >>> [row[:2] for row in hooked.hook_table()]
        [('input', '[batch, 1, 4, 4]'), ('0', '[batch, 16]'), ('1', '[batch, 4]'), ('2', '[batch, 4]')]
    """
    return HookedGraph(net, input_shape, example=example, output=output)
