"""Hook classes: hook points that are affine-equivalent, so adding a vector at any of them gives the same result.

Between two hook points joined only by affine operations (Linear, Conv, eval-mode Dropout and
BatchNorm, Flatten, Identity, or the ``.pre``/``.post`` aliases of one tensor), adding
``act(a) - act(b)`` at the first equals adding it at the second: the map carries the difference
over exactly (``L(h + c v) = L(h) + c (L(h_a) - L(h_b))``). So each class is computed once.

- The class that reaches the logits through affine maps only is the *logit class*: steering
  there is adding a constant vector to the logits, a control, never a "best hook".
- The class holding the model's input is the *input class*: steering there is pixel arithmetic.
- Classes are indexed by relative depth: 0 for the first, 1 for the last, evenly between.

The one thing this module knows about a network's structure is ``affine_next``: a chain's
layout, or any other model's graph (``hookedmlp.models.cut.graph_view``), walked along the
single-user steps through affine modules that ``hookedmlp.models.cut.fold`` also takes.
"""

import dataclasses
from typing import Optional

import torch

from hookedmlp import HookedMLP, HookedRoot, UsageError
from hookedmlp.hooks.point import HookPoint
from hookedmlp.models.chains import shape_only
from hookedmlp.models.cut import GraphView, graph_view
from hookedmlp.models.modules import is_affine

__all__ = ["INPUT", "OUTPUT", "HookClass", "affine_next", "hook_classes", "fold_between"]

INPUT = "<input>"  # the model's input, as a pseudo hook point
OUTPUT = "<output>"  # the model's output (the logits), as a pseudo hook point


def _output_hooks(model: HookedRoot) -> set[str]:
    """The hook points whose activation *is* the tensor the model returns (a probe pass)."""
    seen: dict[str, torch.Tensor] = {}

    def record(act: torch.Tensor, hook: HookPoint) -> None:
        seen[hook.name] = act

    ref = model.reference_tensor()
    probe = torch.zeros(
        2,
        *model.accepted_input_shapes()[0],
        dtype=ref.dtype if ref is not None else torch.float32,
        device=ref.device if ref is not None else None,
    )
    with torch.no_grad(), model.hooks(fwd_hooks=[(n, record) for n in model.hook_names]):
        out = model(probe)
    return {n for n, act in seen.items() if act is out}


def affine_next(model: HookedRoot, name: str) -> Optional[str]:
    """The hook point that ``name``'s activation reaches through affine operations only, or None.

    ``OUTPUT`` when ``name``'s activation is the model's output itself; ``name`` may be ``INPUT``
    (the first hook point the input reaches unchanged but for affine maps). On a ``HookedMLP``
    this reads the layout (each module's ``affine`` flag; ``layer{i}.post`` and
    ``layer{i+1}.pre`` are one tensor); on any other model it walks the graph: a step is taken
    only where the value has one user and that user is a hook point or an affine module in its
    current mode. Where no graph can be captured, only the output is known.

    Examples:
        >>> affine_next(tiny, "layer0.pre"), affine_next(tiny, "layer1.pre"), affine_next(tiny, "layer0.post")
        ('layer0.post', None, 'layer1.pre')
    """
    if isinstance(model, HookedMLP):
        layout = model.layout
        if name == INPUT:
            return layout.names[0]
        site = layout.site(model.resolve_name(name))
        if site.side == "pre":
            return layout.post(site.layer) if layout.layers[site.layer].affine else None
        return OUTPUT if site.layer == len(layout.layers) - 1 else layout.sites[site.position + 1].name
    view = graph_view(model)
    if view is not None:
        return _graph_next(view, model.hook_names, name)
    if name == INPUT:
        return None
    return OUTPUT if model.resolve_name(name) in _output_hooks(model) else None


def _graph_next(view: GraphView, names: list[str], name: str) -> Optional[str]:
    """``affine_next`` on a graph: the next named node along single-user affine steps."""
    nodes = {n.name: n for n in view.graph().nodes}
    if name == INPUT:
        here = next(n for n in nodes.values() if n.op == "placeholder")
    else:
        here = nodes[view.node_of[name]]
        aliases = [n for n in names if view.node_of.get(n) == here.name]
        if aliases.index(name) + 1 < len(aliases):  # two names of one tensor (a chain's .post and next .pre)
            return aliases[aliases.index(name) + 1]
        if here.name == view.output:
            return OUTPUT
    named = {node: hook for hook, node in reversed(view.node_of.items())}  # a node's first name
    while True:
        users = [u for u in here.users if not shape_only(u)]
        if len(users) != 1 or users[0].op != "call_module":
            return None
        here = users[0]
        module = view.owner.get_submodule(str(here.target))
        if not isinstance(module, HookPoint) and not is_affine(module):
            return None
        if here.name in named:
            return named[here.name]


@dataclasses.dataclass(frozen=True)
class HookClass:
    """Affine-equivalent hook points, in hook order; ``depth`` is the class's relative depth (0 first, 1 last)."""

    index: int
    hooks: tuple[str, ...]
    depth: float
    holds_input: bool  # steering here is pixel arithmetic
    reaches_logits: bool  # the logit class: steering here is a constant added to the logits

    @property
    def role(self) -> str:
        """``"logits"``, ``"input"`` or ``"internal"``."""
        return "logits" if self.reaches_logits else "input" if self.holds_input else "internal"

    @property
    def representative(self) -> str:
        """Where the class is described: its first hook point (norms and random controls are taken there)."""
        return self.hooks[0]

    @property
    def last(self) -> str:
        """Where vectors are added: its last hook point, which leaves the least of the network to run."""
        return self.hooks[-1]

    @property
    def label(self) -> str:
        """``layer1.post`` or ``layer1.post..layer3.pre`` (first and last member)."""
        return self.hooks[0] if len(self.hooks) == 1 else f"{self.hooks[0]}..{self.hooks[-1]}"


def hook_classes(model: HookedRoot) -> list[HookClass]:
    """The model's hook points grouped into affine-equivalent classes, in order of their first member.

    Refused while hooks are attached: a hook may do anything, so no two points would be equivalent.

    Examples:
        >>> [c.label for c in hook_classes(tiny)]
        ['layer0.pre..layer1.pre', 'layer1.post..layer3.pre', 'layer3.post..layer4.post']
        >>> [(c.role, c.depth) for c in hook_classes(tiny)]
        [('input', 0.0), ('internal', 0.5), ('logits', 1.0)]
    """
    if model.attached_hooks():
        raise UsageError(
            f"hook classes describe the bare network, but {len(model.attached_hooks())} hook(s) are attached; "
            "remove them first with model.reset_hooks()"
        )
    names = model.hook_names
    parent = {n: n for n in names}

    def root(n: str) -> str:
        while parent[n] != n:
            n = parent[n]
        return n

    nxt = {n: affine_next(model, n) for n in names}
    for n, m in nxt.items():
        if m is not None and m != OUTPUT:
            parent[root(m)] = root(n)
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(root(n), []).append(n)
    first_input = affine_next(model, INPUT)
    members = sorted(groups.values(), key=lambda g: names.index(g[0]))
    k = len(members)
    return [
        HookClass(
            i,
            tuple(g),
            i / (k - 1) if k > 1 else 0.0,
            first_input in g,
            any(nxt[n] == OUTPUT for n in g),
        )
        for i, g in enumerate(members)
    ]


def fold_between(model: HookedRoot, start: str, end: str, vectors: torch.Tensor) -> torch.Tensor:
    """``vectors`` ``[k, *shape at start]`` carried to ``end`` through the affine map between them: ``g(v) - g(0)``.

    The activation at ``start`` is replaced by each vector and by zero, and ``end`` is read; the
    same hook class holds both points, so the map is affine and this is exact up to float rounding.
    """
    if start == end:
        return vectors
    ref = model.reference_tensor()
    replaced = torch.cat([vectors, torch.zeros_like(vectors[:1])])
    probe = torch.zeros(
        len(replaced),
        *model.accepted_input_shapes()[0],
        dtype=ref.dtype if ref is not None else vectors.dtype,
        device=ref.device if ref is not None else vectors.device,
    )
    with torch.no_grad(), model.hooks(fwd_hooks=[(start, lambda act, hook: replaced.to(act.dtype))]):
        _, cache = model.run_with_cache(probe, names_filter=[end])
    out = cache[end]
    return out[:-1] - out[-1:]
