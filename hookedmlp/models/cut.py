"""The graph cut: a hooked model's pass split at one hook point, so that only what it changes runs again.

Adding a vector (or patching a value) at hook point ``h`` changes only the nodes downstream of
``h``. ``Cut(view, h)`` compiles two parts of the model's graph: the *prefix*, computing ``h``'s
value and the *externals* (every other value the downstream part reads, such as a skip
connection's input) from the model's inputs, and the *suffix*, computing the logits from those
values. Running the prefix once and the suffix per vector gives exactly the full passes'
results. For a chain the cut is the old prefix/suffix split (there are no externals).

Several vectors may share one suffix pass (their images stacked into one batch) only if the
suffix treats each example on its own: ``Cut.stackable`` says whether every downstream
operation is known to be per-example in the current mode, and why not.

``graph_view`` gives any hooked model's graph: a captured network's own, or for a hand-written
``HookedRoot`` a capture of its forward with its HookPoints kept whole (None where that fails:
the callers then run full passes).
"""

import dataclasses
import operator
import weakref
from collections.abc import Sequence
from typing import Any, Optional

import torch
import torch.fx as fx
from torch import Tensor, nn

from hookedmlp.hooks.point import HookPoint
from hookedmlp.models import facts
from hookedmlp.models.capture import capture_graph
from hookedmlp.models.chains import shape_only
from hookedmlp.models.modules import fold as fold_module
from hookedmlp.models.modules import is_affine, keeps_shape
from hookedmlp.models.programs import Programs

__all__ = ["GraphView", "graph_view", "Cut", "fold", "first_name"]


@dataclasses.dataclass
class GraphView:
    """A hooked model's graph as the cut uses it: programs, and which node each hook point is."""

    owner: nn.Module  # what the graph's code runs on
    programs: Programs
    node_of: dict[str, str]  # hook name -> node name
    output: str  # the node whose value is the logits
    training_of: Any  # () -> the mode whose graph runs

    def graph(self) -> fx.Graph:
        return self.programs.graphs[self.training_of()]

    def hook_of(self, node: str) -> str:
        """The hook point at ``node`` (the first name it has); the node's own name where it has none."""
        for name, n in self.node_of.items():
            if n == node:
                return name
        return node

    def point(self, node: str) -> Optional[HookPoint]:
        return self.programs.points.get(node)


_VIEWS: "weakref.WeakKeyDictionary[Any, tuple[Any, Optional[GraphView]]]" = weakref.WeakKeyDictionary()


def graph_view(model: Any) -> Optional[GraphView]:
    """The graph of ``model`` (see the module's docs), or None where it cannot be captured."""
    view = getattr(model, "graph_view", None)
    if view is not None:
        return view()
    key = facts.structure_key(model)
    memo = _VIEWS.get(model)
    if memo is not None and memo[0] == key:
        return memo[1]
    found: Optional[GraphView] = None
    try:
        captured = capture_graph(model, (), lambda m: isinstance(m, HookPoint))
    except Exception:  # not capturable: full passes, which are always right
        captured = None
    if captured is not None and captured.kind == "fx":
        graph = captured.graphs[False]
        points = {
            n.name: model.get_submodule(str(n.target))
            for n in graph.nodes
            if n.op == "call_module" and isinstance(model.get_submodule(str(n.target)), HookPoint)
        }
        out = next(n for n in graph.nodes if n.op == "output").args[0]
        if isinstance(out, fx.Node):
            node_of = {hp.name: n for n, hp in points.items()}
            programs = Programs(captured.graphs, points, True, model)
            found = GraphView(model, programs, node_of, out.name, lambda: model.training)
    _VIEWS[model] = (key, found)
    return found


def _descendants(node: fx.Node) -> list[fx.Node]:
    seen: dict[fx.Node, None] = {}
    todo = list(node.users)
    while todo:
        n = todo.pop()
        if n not in seen and n.op != "output":
            seen[n] = None
            todo.extend(n.users)
    return list(seen)


def _depends_on_inputs(node: fx.Node) -> bool:
    todo, seen = [node], set()
    while todo:
        n = todo.pop()
        if n.op == "placeholder":
            return True
        if n not in seen:
            seen.add(n)
            todo.extend(n.all_input_nodes)
    return False


_ELEMENTWISE = {
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.neg,
    operator.pow,
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    torch.relu,
    torch.tanh,
    torch.sigmoid,
    torch.exp,
    torch.log,
    torch.abs,
    torch.clamp,
    torch.add,
    torch.sub,
    torch.mul,
    torch.div,
    torch.nn.functional.relu,
    torch.nn.functional.gelu,
    torch.nn.functional.silu,
    torch.nn.functional.elu,
    torch.nn.functional.leaky_relu,
    torch.nn.functional.softplus,
    torch.nn.functional.tanh,
    torch.nn.functional.sigmoid,
    torch.nn.functional.relu6,
}
_ELEMENTWISE_METHODS = {
    "relu",
    "tanh",
    "sigmoid",
    "exp",
    "log",
    "abs",
    "clamp",
    "add",
    "sub",
    "mul",
    "div",
    "neg",
    "pow",
    "relu_",
    "contiguous",
    "float",
    "detach",
    "clone",
}
_WITH_DIM = {"softmax", "log_softmax", "mean", "sum", "flatten", "amax", "amin", "cat", "stack", "unflatten"}


def _dim_not_batch(node: fx.Node) -> bool:
    """For an op taking a dimension: it is not the batch's (``dim >= 1``, or ``-1``)."""
    dim = node.kwargs.get("dim", node.kwargs.get("start_dim"))
    if dim is None and len(node.args) > 1 and isinstance(node.args[1], int):
        dim = node.args[1]
    return isinstance(dim, int) and (dim >= 1 or dim == -1)


def _per_example(node: fx.Node, owner: nn.Module) -> Optional[str]:
    """Why ``node`` may mix the examples of a batch, or None where it treats each on its own."""
    if node.op == "get_attr" or shape_only(node):
        return None
    if node.op == "call_module":
        m = owner.get_submodule(str(node.target))
        if isinstance(m, HookPoint):
            return None if not (m.fwd_hooks or m.bwd_hooks or m._forward_hooks) else f"hooks are attached at {m.name}"
        if any(s._forward_hooks or s._forward_pre_hooks for s in m.modules()):
            return f"module {node.target} has PyTorch hooks"
        if m.training and isinstance(m, facts.TRAINING_DEPENDENT):
            return f"module {node.target} ({type(m).__name__}) is in training mode"
        if type(m).__module__.startswith("torch.nn.") and (is_affine(m) or keeps_shape(m) or _torch_per_example(m)):
            return None
        return f"module {node.target} ({type(m).__name__}) may mix the examples of a batch"
    if node.op == "call_function" and node.target in _ELEMENTWISE:
        return None
    if node.op == "call_method" and node.target in _ELEMENTWISE_METHODS:
        return None
    name = getattr(node.target, "__name__", str(node.target))
    if name in _WITH_DIM and _dim_not_batch(node):
        return None
    if node.target is operator.getitem and isinstance(node.args[1], tuple) and node.args[1][:1] == (slice(None),):
        return None
    return f"{name} at {node.meta.get('source', '?')} may mix the examples of a batch"


_PER_EXAMPLE_TYPES = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.Softmax,
    nn.LogSoftmax,
    nn.PReLU,
    nn.Unflatten,
)


def _torch_per_example(m: nn.Module) -> bool:
    if isinstance(m, (nn.Softmax, nn.LogSoftmax)):
        return m.dim is not None and (m.dim >= 1 or m.dim == -1)
    return isinstance(m, _PER_EXAMPLE_TYPES)


class Cut:
    """The pass of ``view``'s model split at the node of hook point ``hook`` (see the module's docs).

    ``prefix(inputs)`` gives ``(value at hook, externals...)``; ``suffix(value, *externals)``
    gives the logits. With ``hooked`` the parts run the hook points (the model as it is, hooks
    included); the value at ``hook`` is the value after its own hooks.
    """

    def __init__(self, view: GraphView, hook: str, hooked: bool) -> None:
        training = view.training_of()
        graph = view.programs.graphs[training]
        nodes = {n.name: n for n in graph.nodes}
        node = nodes[view.node_of.get(hook, hook)]  # a hook point's name, or a node's (where a fold ended)
        down = _descendants(node)
        downset = set(down)
        externals: dict[fx.Node, None] = {}
        for n in down:
            for a in n.all_input_nodes:
                if a not in downset and a is not node and _depends_on_inputs(a):
                    externals[a] = None
        order = {n: i for i, n in enumerate(graph.nodes)}
        self.externals = sorted(externals, key=order.__getitem__)
        self.node = node.name
        reasons = [f"{e.name} (a shape read before {hook})" for e in self.externals if shape_only(e)]
        reasons += [r for r in (_per_example(n, view.owner) for n in down) if r is not None]
        self.why_not_stackable = reasons[0] if reasons else None
        inputs = [n.name for n in graph.nodes if n.op == "placeholder"]
        given = [node.name, *(e.name for e in self.externals)]
        self.owner = view.owner
        self._prefix = view.programs.part(training, inputs, given, hooked, single=False)
        self._suffix = view.programs.part(training, given, [view.output], hooked, single=True)

    @property
    def stackable(self) -> bool:
        """Whether several vectors' images may share one suffix pass (every downstream op is per-example)."""
        return self.why_not_stackable is None

    def prefix(self, *inputs: Any) -> tuple[Tensor, ...]:
        return tuple(self._prefix(self.owner, *inputs))

    def suffix(self, value: Tensor, *externals: Any) -> Tensor:
        return self._suffix(self.owner, value, *externals)

    def repeat(self, externals: Sequence[Any], times: int) -> list[Any]:
        """The externals of a batch repeated for ``times`` stacked vectors (``[times * n, ...]``)."""
        return [e.repeat(times, *[1] * (e.ndim - 1)) if isinstance(e, Tensor) else e for e in externals]


def _hooked(hp: Optional[HookPoint]) -> bool:
    return hp is not None and bool(hp.fwd_hooks or hp.bwd_hooks or hp._forward_hooks or hp._forward_pre_hooks)


def _point_call(view: GraphView, node: fx.Node) -> bool:
    """Whether ``node`` calls a ``HookPoint`` module (an identity), not a module or op whose value has a hook point."""
    return node.op == "call_module" and isinstance(view.owner.get_submodule(str(node.target)), HookPoint)


def fold(view: GraphView, node: str, vectors: Tensor) -> tuple[str, Tensor]:
    """Carry ``vectors`` ``[k, *shape]`` added at ``node`` forward through the affine modules after it.

    Adding ``v`` before an affine module ``L`` (Linear, Conv, eval-mode BatchNorm, Flatten,
    AvgPool...) equals adding ``L(v) - L(0)`` after it. A vector moves only through a node that
    is the single user of the one before (and through hook points with nothing attached), and
    never past a hook point or a module with hooks attached: what is attached there must see the
    steered value. Returns the node reached and the equivalent vectors there.
    """
    here = next(n for n in view.graph().nodes if n.name == node)
    named = set(view.node_of.values())
    kept = (here, vectors)  # the last place reached that a hook point names
    while not _hooked(view.point(here.name)):
        users = [u for u in here.users if not shape_only(u)]
        if len(users) != 1 or users[0].op != "call_module":
            break
        user = users[0]
        module = view.owner.get_submodule(str(user.target))
        if isinstance(module, HookPoint):
            if _hooked(module):
                break
        elif any(m._forward_hooks or m._forward_pre_hooks for m in module.modules()) or not is_affine(module):
            break
        else:
            vectors = fold_module(module, vectors)
        here = user
        if here.name in named:
            kept = (here, vectors)
    here, vectors = kept
    return first_name(view, here.name), vectors


def first_name(view: GraphView, node: str) -> str:
    """The first of the HookPoint calls that carry ``node``'s tensor unchanged (``layer1.pre`` -> ``layer0.post``).

    In a captured graph every node has a hook point, but only a call of a ``HookPoint`` module
    (with no hook attached) passes its input on unchanged.
    """
    here = next(n for n in view.graph().nodes if n.name == node)
    while view.programs.replace and _point_call(view, here):
        before = here.args[0]
        if not isinstance(before, fx.Node) or not _point_call(view, before):
            break
        if _hooked(view.point(before.name)) or _hooked(view.point(here.name)):
            break
        here = before
    return here.name
