"""Evaluating many activation additions on one labelled set, fast, and the plain way to check it against.

The plain way (``evaluate_plain``) runs one full hooked forward pass per addition. On a
``HookedMLP`` (any chain of modules) ``evaluate_additions`` gives the same numbers faster:

1. *Folding* (``analysis.folding``). Adding ``v`` before an affine module ``L`` (Linear, Conv,
   eval-mode BatchNorm, Flatten, AvgPool...) equals adding ``L(v) - L(0)`` after it, so each
   vector is carried forward to the next nonlinearity or the logits (where it costs one add).
   It is never carried past a hook point (or module) with hooks attached.
2. *Prefix once.* The activation at each folded hook is computed once, for the whole set, each
   prefix continuing the previous one; only the suffix runs per vector, over chunks of images
   of at most ``chunk_elements`` activation entries (small enough to stay in cache), several
   vectors stacked into one batch when the set is small, through an exact compiled suffix
   (``analysis.suffix``). Where the suffix could depend on the batch (hooks attached after the
   hook, a training-mode batch norm, a module from outside ``torch.nn``), each vector instead
   runs alone on the whole set through ``forward(start_at=...)``, exactly as in its full pass.
3. *No repeats.* Additions that fold to the same place with the same values run once (their
   metrics are still computed for each ``a``, ``b``); zero vectors reuse the unsteered logits.

Any other ``HookedRoot`` (e.g. ``ResidualMLP``) has no prefix/suffix split: each distinct
addition gets one full pass, which is correct and says so in ``Evaluation.engine``.
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

from analysis.folding import batch_dependence, fold, hooked_positions
from analysis.metrics import METRICS, ScoringSet
from analysis.suffix import compile_suffix
from hookedmlp import HookedMLP, HookedRoot, ShapeError, SteeringError, UsageError
from hookedmlp.checks import check_int

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

    def __init__(self, hook: str) -> None:
        self.hook = hook
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


def _chain_logits(
    model: HookedMLP, data: ScoringSet, group: _Group, acts: Optional[Tensor], per_vector: bool, chunk: int
) -> Iterator[tuple[list[int], Tensor]]:
    """``(vector indices, their logits [k, n, classes])`` for every vector of ``group``."""
    todo = [i for i, v in enumerate(group.vectors) if bool(v.any())]
    zeros = [i for i in range(len(group.vectors)) if i not in todo]
    if zeros:
        yield zeros, data.base.unsqueeze(0)
    if not todo:
        return
    vecs = torch.stack([group.vectors[i] for i in todo])
    if acts is None:  # folded onto the logits
        k = max(1, chunk // (data.n * data.n_classes))
        for j in range(0, len(todo), k):
            yield todo[j : j + k], data.base.unsqueeze(0) + vecs[j : j + k].unsqueeze(1)
        return
    shape = acts.shape[1:]
    width = math.prod(shape)
    images = data.n if per_vector else min(data.n, max(1, chunk // width))
    k = 1 if per_vector or images < data.n else max(1, chunk // (width * data.n))
    if per_vector:
        suffix = lambda x: model(x, start_at=group.hook)  # noqa: E731 (through the hooks)
    else:
        suffix = compile_suffix([layer.module for layer in model.layout.layers[model.layout.next_layer(group.hook) :]])
    for j in range(0, len(todo), k):
        v = vecs[j : j + k]
        logits = torch.empty(len(v), data.n, data.n_classes, device=data.device, dtype=data.base.dtype)
        for s in range(0, data.n, images):
            part = acts[s : s + images]
            x = (part.unsqueeze(0) + v.unsqueeze(1)).reshape(len(v) * len(part), *shape)  # a fresh tensor: ours
            logits[:, s : s + len(part)] = suffix(x).view(len(v), len(part), -1)
        yield todo[j : j + k], logits


def _full_logits(model: HookedRoot, data: ScoringSet, group: _Group) -> Iterator[tuple[list[int], Tensor]]:
    for i, v in enumerate(group.vectors):
        if not bool(v.any()):
            yield [i], data.base.unsqueeze(0)
            continue
        with model.hooks(fwd_hooks=[(group.hook, lambda act, hook, v=v: act + v)]):
            logits = model(data.images)
        yield [i], logits.unsqueeze(0)


def _checked(model: HookedRoot, data: ScoringSet, additions: Sequence[Addition]) -> list[Addition]:
    if not additions:
        raise UsageError("no additions to evaluate; pass at least one Addition")
    out, shapes = [], {}
    for add in additions:
        if add.hook not in shapes:
            shapes[add.hook] = model.activation_shape(add.hook)
        shape = shapes[add.hook]
        if not isinstance(add.vector, Tensor) or tuple(add.vector.shape) != shape:
            raise ShapeError(
                f"the vector added at {add.hook!r} has shape {_shape(add.vector)}; one example's activation "
                f"there is {list(shape)}"
            )
        out.append(dataclasses.replace(add, vector=add.vector.detach().to(device=data.device, dtype=data.dtype)))
    return out


def _grouped(
    model: HookedRoot, additions: list[Addition], hooked: Optional[list[bool]]
) -> tuple[dict[str, _Group], list[tuple[str, int]]]:
    """The additions by folded hook (folded when ``hooked`` is given), and where each one's row is."""
    at_hook: dict[str, list[int]] = {}
    for i, add in enumerate(additions):
        at_hook.setdefault(add.hook, []).append(i)
    groups: dict[str, _Group] = {}
    where: list[tuple[str, int]] = [("", 0)] * len(additions)
    for hook, idx in at_hook.items():  # the vectors added at one hook fold in one batch
        vectors = torch.stack([additions[i].vector for i in idx])
        if hooked is not None:
            folded, vectors = fold(model, hook, vectors, hooked)  # type: ignore[arg-type]
        else:
            folded = hook
        group = groups.setdefault(folded, _Group(folded))
        for i, v in zip(idx, vectors):
            where[i] = (folded, group.add(v, additions[i].a, additions[i].b))
    names = model.hook_names
    return {h: groups[h] for h in sorted(groups, key=names.index)}, where


def _chain_batches(
    model: HookedMLP,
    data: ScoringSet,
    groups: dict[str, _Group],
    hooked: list[bool],
    chunk: int,
    reasons: dict[str, str],
) -> Iterator[tuple[str, list[int], Tensor]]:
    """``(hook, vector indices, logits)`` for every group in hook order, each prefix continuing the previous one."""
    acts, at, last = None, None, model.hook_names[-1]
    for hook, group in groups.items():
        if hook == last:  # folded onto the logits: one add per vector
            batches = _chain_logits(model, data, group, None, False, chunk)
        else:
            if any(bool(v.any()) for v in group.vectors):
                acts = model(acts, start_at=at, stop_at=hook) if at is not None else model(data.images, stop_at=hook)
                at = hook
            reason = batch_dependence(model, hook, hooked)
            if reason is not None:
                reasons[hook] = reason
            batches = _chain_logits(model, data, group, acts, reason is not None, chunk)
        for idx, logits in batches:
            yield hook, idx, logits


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
        model: a ``HookedMLP`` (folded prefix/suffix) or any other ``HookedRoot`` (full passes).
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
    chain = isinstance(model, HookedMLP)
    with torch.no_grad():
        data = ScoringSet(model, images, labels)
        hooked = hooked_positions(model) if chain else None
        groups, where = _grouped(model, _checked(model, data, additions), hooked)
        results = {h: _Results(g, data) for h, g in groups.items()}
        distinct = sum(len(g.vectors) for g in groups.values())
        passes = sum(
            bool(v.any()) for h, g in groups.items() for v in g.vectors if not chain or h != model.hook_names[-1]
        )
        reasons: dict[str, str] = {}
        if chain:
            batches = _chain_batches(model, data, groups, hooked, chunk_elements, reasons)  # type: ignore[arg-type]
        else:
            batches = ((h, idx, logits) for h, g in groups.items() for idx, logits in _full_logits(model, data, g))
        with tqdm(total=distinct, desc="steering", unit="vector", disable=not progress) as bar:
            for hook, idx, logits in batches:
                results[hook].add(idx, logits)
                bar.update(len(idx))
    done = {h: r.numpy() for h, r in results.items()}
    out = {m: np.stack([done[h][0][m][r] for h, r in where]) for m in METRICS}
    dists = np.stack([done[h][1][r] for h, r in where])
    if not chain:
        how = f"full passes, one per distinct addition ({type(model).__name__} has no prefix/suffix split)"
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
                logits = model(data.images)
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
