"""Evaluating many activation additions on one labelled set, fast, and the plain way to check it against.

The plain way (``evaluate_plain``) runs one full hooked forward pass per addition. On any model
whose graph can be captured (``hookedmlp.models.cut.graph_view``: every ``HookedGraph``, so every
``HookedMLP``, and any hand-written ``HookedRoot`` whose forward traces) ``evaluate_additions``
gives the same numbers faster:

1. *Folding* (``hookedmlp.models.cut.fold``). Adding ``v`` before an affine module ``L``
   (Linear, Conv, eval-mode BatchNorm, Flatten, AvgPool...) equals adding ``L(v) - L(0)`` after
   it, so each vector is carried forward to the next nonlinearity or the logits (where it costs
   one add). It is never carried past a hook point (or module) with hooks attached.
2. *The graph cut* (``hookedmlp.models.cut.Cut``). The prefix (the value at the folded hook point,
   and every other value the part after it reads, such as a skip connection's input) runs once
   over the whole set; only the suffix runs per vector, over chunks of images of at most
   ``chunk_elements`` activation entries, several vectors stacked into one batch when the set is
   small. Where the suffix may mix the examples of a batch (hooks attached after the hook point,
   a training-mode batch norm, a module or op not known to be per-example), each vector instead
   runs alone on the whole set, exactly as in its full pass. On a chain of torch.nn modules the
   stacked suffix runs through ``analysis.suffix`` (in-place ReLUs, tiled max pools).
3. *No repeats.* Additions that fold to the same place with the same values run once (their
   metrics are still computed for each ``a``, ``b``); zero vectors reuse the unsteered logits.

A model whose graph cannot be captured gets one full pass per distinct addition, which is
correct and says so in ``Evaluation.engine``.
"""

import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from hookedmlp import HookedMLP, HookedRoot, ShapeError, SteeringError, UsageError
from hookedmlp.checks import check_int
from hookedmlp.models import facts
from hookedmlp.models.cut import Cut, GraphView, graph_view
from hookedmlp.models.cut import fold as fold_node
from hookedmlp_analysis.metrics import METRICS, ScoringSet
from hookedmlp_analysis.suffix import compile_suffix

__all__ = ["Addition", "Evaluation", "CHUNK_ELEMENTS", "fold", "evaluate_additions", "evaluate_plain", "unsteered"]

# Activation entries per suffix pass: 1 Mi floats (4 MiB) keeps each pass's intermediates in cache.
CHUNK_ELEMENTS = 1 << 20


@dataclasses.dataclass(frozen=True)
class Addition:
    """Add ``vector`` (one example's activation shape) at ``hook``; ``a``/``b`` name the contrast it stands for."""

    hook: str
    vector: Tensor
    a: int
    b: int


@dataclasses.dataclass
class Evaluation:
    """Per addition: each metric's value, the per-class distributions ``[class, class]``, and how it was computed.

    ``distinct`` counts the distinct vectors evaluated (after folding), ``passes`` the suffix
    or full passes over the set that ran (zero vectors and vectors folded onto the logits need none).
    """

    values: dict[str, np.ndarray]
    distributions: np.ndarray
    engine: str
    distinct: int = 0
    passes: int = 0


def _shape(t: Any) -> str:
    return str(list(t.shape)) if isinstance(t, Tensor) else type(t).__name__


class _Group:
    """The distinct vectors added at one hook, and the distinct ``(vector, a, b)`` rows scored for them."""

    def __init__(self, node: str, hook: str) -> None:
        self.node, self.hook = node, hook  # where the vectors are added: the graph's node, its hook point's name
        self.vectors: list[Tensor] = []
        self.norms: list[float] = []
        self.rows: dict[tuple[int, int, int], int] = {}
        self.keys: list[tuple[int, int, int]] = []  # each row's (vector, a, b)
        self.rows_of: list[list[int]] = []  # the rows of each vector

    def add(self, v: Tensor, a: int, b: int) -> int:
        """The row of ``(v, a, b)``, adding ``v`` unless a vector equal to it up to float rounding is here."""
        tol = 1e-5 * max(1.0, float(v.abs().max()))  # float rounding of an exact identity
        norm, slack = float(v.norm()), tol * math.sqrt(v.numel())  # |norm(u) - norm(v)| <= norm(u - v)
        same = next(
            (
                i
                for i, (u, un) in enumerate(zip(self.vectors, self.norms))
                if abs(un - norm) <= slack and torch.allclose(u, v, rtol=0, atol=tol)
            ),
            None,
        )
        if same is None:
            same = len(self.vectors)
            self.vectors.append(v)
            self.norms.append(norm)
            self.rows_of.append([])
        key = (same, int(a), int(b))
        if key not in self.rows:
            self.rows[key] = len(self.keys)
            self.keys.append(key)
            self.rows_of[same].append(self.rows[key])
        return self.rows[key]


class _Results:
    """Every metric of each row of a group, filled in as batches of its vectors' logits come."""

    def __init__(self, group: _Group, data: ScoringSet) -> None:
        self.group, self.data = group, data
        dtype, device = data.base.dtype, data.device
        self.values = {m: torch.zeros(len(group.keys), dtype=dtype, device=device) for m in METRICS}
        self.means = torch.zeros(len(group.keys), data.n_classes, data.n_classes, dtype=dtype, device=device)

    def add(self, vectors: list[int], logits: Tensor) -> None:
        """Score ``logits [k, n, classes]`` (of ``vectors``, or one tensor shared by all of them) for their rows."""
        keys = self.group.keys
        rows = [r for i in vectors for r in self.group.rows_of[i]]
        local = {i: j for j, i in enumerate(vectors)}
        pick = [local[keys[r][0]] for r in rows]
        if logits.shape[0] == 1:
            logits = logits.expand(len(rows), -1, -1)
        elif pick != list(range(len(rows))):
            logits = logits[torch.tensor(pick, device=logits.device)]
        vals, mean = self.data.score(logits, [keys[r][1] for r in rows], [keys[r][2] for r in rows])
        index = torch.tensor(rows, device=self.data.device)
        for m in METRICS:
            self.values[m][index] = vals[m]
        self.means[index] = mean

    def numpy(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        # every image's logits enter its class's mean, so one non-finite logit makes a mean non-finite
        finite = torch.isfinite(self.means).flatten(1).all(1)
        if not bool(finite.all()):
            _, a, b = self.group.keys[int((~finite).nonzero()[0, 0])]
            raise SteeringError(
                f"the vector for {a} - {b} added at {self.group.hook} makes the logits overflow {self.means.dtype} "
                "(inf or NaN): its activations grow past the dtype's range after that hook point; use a smaller "
                "coefficient"
            )
        return {m: v.cpu().numpy() for m, v in self.values.items()}, F.softmax(self.means, -1).cpu().numpy()


def _stacked(
    cut: Cut, suffix: Any, data: ScoringSet, vecs: Tensor, acts: Tensor, ext: list[Any], chunk: int
) -> Iterator[tuple[slice, Tensor]]:
    """``(vector slice, logits [k, n, classes])``: several vectors per suffix pass, over chunks of images."""
    shape = acts.shape[1:]
    width = math.prod(shape)
    images = min(data.n, max(1, chunk // width))
    k = 1 if images < data.n else max(1, chunk // (width * data.n))
    for j in range(0, len(vecs), k):
        v = vecs[j : j + k]
        logits = torch.empty(len(v), data.n, data.n_classes, device=data.device, dtype=data.base.dtype)
        for s in range(0, data.n, images):
            part = acts[s : s + images]
            x = (part.unsqueeze(0) + v.unsqueeze(1)).reshape(len(v) * len(part), *shape)  # a fresh tensor: ours
            rest = cut.repeat([e[s : s + images] if isinstance(e, Tensor) else e for e in ext], len(v))
            logits[:, s : s + len(part)] = suffix(x, *rest).view(len(v), len(part), -1)
        yield slice(j, j + len(v)), logits


def _cut_logits(
    model: Any, view: GraphView, data: ScoringSet, group: _Group, hooked: bool, chunk: int, reasons: dict[str, str]
) -> Iterator[tuple[list[int], Tensor]]:
    """``(vector indices, their logits [k, n, classes])`` for every vector of ``group`` (added at its node)."""
    todo = [i for i, v in enumerate(group.vectors) if bool(v.any())]
    zeros = [i for i in range(len(group.vectors)) if i not in todo]
    if zeros:
        yield zeros, data.base.unsqueeze(0)
    if not todo:
        return
    vecs = torch.stack([group.vectors[i] for i in todo])
    if group.node == view.output:  # folded onto the logits: one add per vector
        k = max(1, chunk // (data.n * data.n_classes))
        for j in range(0, len(todo), k):
            yield todo[j : j + k], data.base.unsqueeze(0) + vecs[j : j + k].unsqueeze(1)
        return
    cut = Cut(view, group.node, hooked)
    acts, *ext = cut.prefix(*data.inputs(model))
    if not cut.stackable:
        reasons[group.hook] = cut.why_not_stackable  # type: ignore[assignment]
        for j, i in enumerate(todo):
            yield [i], cut.suffix(acts + vecs[j], *ext).unsqueeze(0)
        return
    suffix = cut.suffix
    modules = _chain_modules(model, view, group.node) if not hooked and not ext else None
    if modules is not None:  # a chain of torch.nn modules after the hook point: its shortcuts
        run = compile_suffix(modules)
        suffix = lambda x: run(x)  # noqa: E731
    for where, logits in _stacked(cut, suffix, data, vecs, acts, ext, chunk):
        yield todo[where], logits


def _chain_modules(model: Any, view: GraphView, node: str) -> Optional[list[Any]]:
    """The torch.nn modules after ``node`` of a chain (None for any other model or module)."""
    if not isinstance(model, HookedMLP):
        return None
    site = model.layout.site(view.hook_of(node))
    modules = [layer.module for layer in model.layout.layers[model.layout.next_layer(site.name) :]]
    return modules if all(type(m).__module__.startswith("torch.nn.") for m in modules) else None


def _full_logits(model: HookedRoot, data: ScoringSet, group: _Group) -> Iterator[tuple[list[int], Tensor]]:
    for i, v in enumerate(group.vectors):
        if not bool(v.any()):
            yield [i], data.base.unsqueeze(0)
            continue
        with model.hooks(fwd_hooks=[(group.hook, lambda act, hook, v=v: act + v)]):
            logits = data.logits(model(data.images))
        yield [i], logits.unsqueeze(0)


def _checked(model: HookedRoot, data: ScoringSet, additions: Sequence[Addition]) -> list[Addition]:
    if not additions:
        raise UsageError("no additions to evaluate; pass at least one Addition")
    out, shapes = [], {}
    for add in additions:
        if not shapes and facts.accepted_input_shapes(model) is None:  # shapes known only from a pass
            shapes.update(facts.observed_shapes(model, data.images))
        if add.hook not in shapes:
            shapes[add.hook] = facts.activation_shape(model, add.hook)
        shape = shapes[add.hook]
        if not isinstance(add.vector, Tensor) or tuple(add.vector.shape) != shape:
            raise ShapeError(
                f"the vector added at {add.hook!r} has shape {_shape(add.vector)}; one example's activation "
                f"there is {list(shape)}"
            )
        out.append(dataclasses.replace(add, vector=add.vector.detach().to(device=data.device, dtype=data.dtype)))
    return out


def fold(model: HookedRoot, hook: str, vectors: Tensor) -> tuple[str, Tensor]:
    """Carry ``vectors`` ``[k, *shape]`` added at ``hook`` forward through the affine modules after it.

    Returns the hook point reached and the equivalent vectors there; the result always equals
    adding the vectors at ``hook`` itself (``hookedmlp.models.cut.fold``, named by hook point).

    Examples:
        >>> hook, v = fold(tiny, "layer1.post", torch.ones(1, 8))
        >>> hook, torch.allclose(v, torch.ones(1, 8) @ tiny.layer2.module.weight.T)
        ('layer2.post', True)
    """
    view = graph_view(model)
    if view is None:
        return model.resolve_name(hook), vectors
    node, vectors = fold_node(view, view.node_of[model.resolve_name(hook)], vectors)
    return view.hook_of(node), vectors


def _grouped(
    model: HookedRoot, additions: list[Addition], view: Optional[GraphView]
) -> tuple[dict[str, _Group], list[tuple[str, int]]]:
    """The additions by folded node (when the graph is known), and where each one's row is."""
    at_hook: dict[str, list[int]] = {}
    for i, add in enumerate(additions):
        at_hook.setdefault(add.hook, []).append(i)
    groups: dict[str, _Group] = {}
    where: list[tuple[str, int]] = [("", 0)] * len(additions)
    for hook, idx in at_hook.items():  # the vectors added at one hook fold in one batch
        vectors = torch.stack([additions[i].vector for i in idx])
        node = hook
        if view is not None:
            node, vectors = fold_node(view, view.node_of[hook], vectors)
        group = groups.setdefault(node, _Group(node, view.hook_of(node) if view is not None else hook))
        for i, v in zip(idx, vectors):
            where[i] = (node, group.add(v, additions[i].a, additions[i].b))
    order = {n.name: i for i, n in enumerate(view.graph().nodes)} if view is not None else None
    names = model.hook_names
    key = (lambda n: order[n]) if order is not None else names.index
    return {n: groups[n] for n in sorted(groups, key=key)}, where


def evaluate_additions(
    model: HookedRoot,
    images: Tensor,
    labels: Tensor,
    additions: Sequence[Addition],
    chunk_elements: int = CHUNK_ELEMENTS,
    progress: bool = False,
) -> Evaluation:
    """Every metric of ``METRICS`` for every addition, with the model as it is (hooks and mode included).

    Each result equals ``evaluate_plain``'s (one full hooked pass per addition) to float rounding.

    Args:
        model: any hooked model (folded graph cut where its graph is known, else full passes).
        images: the scoring set's inputs ``[n, ...]`` (moved to the model's device).
        labels: their classes ``[n]``, from 0 to the model's number of outputs.
        additions: what to evaluate, each on its own.
        chunk_elements: at most this many activation entries per suffix pass (memory and cache).
        progress: show a progress bar.

    Returns:
        An ``Evaluation``, one entry per addition, in order.

    Examples:
        >>> adds = [Addition("layer1.post", torch.ones(8), a=2, b=0), Addition("layer2.pre", torch.ones(8), a=2, b=0)]
        >>> result = evaluate_additions(tiny, tiny_x, torch.tensor([0, 1, 2, 0, 1]), adds)
        >>> result.values["loss"].shape, result.distinct, result.passes
        ((2,), 1, 1)
    """
    check_int(chunk_elements, "chunk_elements", low=1)
    view = graph_view(model)
    hooked = bool(model.attached_hooks()) or any(hp._forward_hooks for hp in model.hook_dict.values())
    with torch.no_grad():
        data = ScoringSet(model, images, labels)
        groups, where = _grouped(model, _checked(model, data, additions), view)
        results = {n: _Results(g, data) for n, g in groups.items()}
        distinct = sum(len(g.vectors) for g in groups.values())
        output = view.output if view is not None else None
        passes = sum(bool(v.any()) for n, g in groups.items() for v in g.vectors if n != output)
        reasons: dict[str, str] = {}
        batches = (
            (n, idx, logits)
            for n, g in groups.items()
            for idx, logits in (
                _cut_logits(model, view, data, g, hooked, chunk_elements, reasons)
                if view is not None
                else _full_logits(model, data, g)
            )
        )
        with tqdm(total=distinct, desc="steering", unit="vector", disable=not progress) as bar:
            for node, idx, logits in batches:
                results[node].add(idx, logits)
                bar.update(len(idx))
    done = {n: r.numpy() for n, r in results.items()}
    out = {m: np.stack([done[n][0][m][r] for n, r in where]) for m in METRICS}
    dists = np.stack([done[n][1][r] for n, r in where])
    if view is None:
        how = f"full passes, one per distinct addition ({type(model).__name__}'s forward could not be captured)"
    elif reasons:
        how = "folded prefix/suffix, per vector on the whole set at " + "; ".join(
            f"{h} ({r})" for h, r in reasons.items()
        )
    else:
        how = f"folded prefix/suffix, stacked in chunks of at most {chunk_elements} activation entries"
    return Evaluation(
        out, dists, f"{how}; {len(where)} additions, {distinct} distinct, {passes} passes", distinct, passes
    )


def evaluate_plain(model: HookedRoot, images: Tensor, labels: Tensor, additions: Sequence[Addition]) -> Evaluation:
    """The plain way, for reference and benchmarks: one full hooked forward pass per addition.

    Examples:
        >>> adds = [Addition("layer1.post", torch.ones(8), 2, 0)]
        >>> plain = evaluate_plain(tiny, tiny_x, torch.tensor([0, 1, 2, 0, 1]), adds)
        >>> plain.passes, plain.engine
        (1, 'full passes, one per addition (the plain way)')
    """
    with torch.no_grad():
        data = ScoringSet(model, images, labels)
        values: dict[str, list[Tensor]] = {m: [] for m in METRICS}
        dists = []
        for add in _checked(model, data, additions):
            with model.hooks(fwd_hooks=[(add.hook, lambda act, hook, v=add.vector: act + v)]):
                logits = data.logits(model(data.images))
            vals, mean = data.score(logits.unsqueeze(0), [add.a], [add.b])
            for m in METRICS:
                values[m].append(vals[m])
            dists.append(F.softmax(mean, -1))
    out = {m: torch.cat(v).cpu().numpy() for m, v in values.items()}
    return Evaluation(
        out,
        torch.cat(dists).cpu().numpy(),
        "full passes, one per addition (the plain way)",
        len(additions),
        len(additions),
    )


def unsteered(model: HookedRoot, images: Tensor, labels: Tensor, bs: Sequence[int]) -> dict[str, np.ndarray]:
    """Each metric of the unsteered model with ``b`` left out, for each ``b`` in ``bs`` (the study's "Normal" row).

    Examples:
        >>> unsteered(tiny, tiny_x, torch.tensor([0, 1, 2, 0, 1]), [0, 1])["kl"].tolist()
        [0.0, 0.0]
    """
    with torch.no_grad():
        data = ScoringSet(model, images, labels)
        bs = [int(b) for b in bs]
        vals, _ = data.score(data.base.unsqueeze(0).expand(len(bs), -1, -1), bs, bs)
    return {m: v.cpu().numpy() for m, v in vals.items()}
