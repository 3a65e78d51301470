"""Evaluating many activation additions on one labelled set, fast, and the plain way to check it against.

The plain way runs one full hooked forward pass per addition. On a ``HookedMLP`` (any chain):

1. *Folding.* Adding ``v`` before an affine module ``L`` (Linear, Conv, eval-mode BatchNorm,
   Flatten, AvgPool...) equals adding ``L(v) - L(0)`` after it, so each vector is carried
   forward through the affine modules after its hook, up to the next nonlinearity or the
   logits. It is never carried past a hook point with hooks attached.
2. *Prefix once.* The activation at each folded hook is computed once; only the suffix runs
   per vector, several vectors stacked into one batch (at most ``chunk_elements`` activation
   entries per pass). Where a suffix is Linear/ReLU only and hook-free, it runs into reused
   buffers. With hooks attached after the hook (which may depend on the batch), each vector
   instead runs alone on the whole set, exactly as in its full pass.
3. *No repeats.* Additions that fold to the same place with the same values run once; zero
   vectors reuse the unsteered logits.

Any other ``HookedRoot`` (e.g. ``ResidualMLP``) has no prefix/suffix split: each addition gets
one full pass, which is correct and says so in ``Evaluation.engine``.
"""

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from analysis.metrics import METRICS, Scored, per_class_logit_sums
from hookedmlp import HookedMLP, HookedRoot, UsageError
from hookedmlp.modules import fold as fold_module

__all__ = ["Addition", "Evaluation", "CHUNK_ELEMENTS", "fold", "evaluate_additions", "evaluate_plain", "unsteered"]

# Activation entries per suffix pass: bounds the buffers (8 Mi floats = 32 MiB each).
CHUNK_ELEMENTS = 16_384 * 512


@dataclasses.dataclass(frozen=True)
class Addition:
    """Add ``vector`` (one example's activation shape) at ``hook``; ``a``/``b`` name the contrast it stands for."""

    hook: str
    vector: Tensor
    a: int
    b: int


@dataclasses.dataclass
class Evaluation:
    """Per addition: each metric's value, the per-class distributions ``[class, class]``, and how it was computed."""

    values: dict[str, np.ndarray]
    distributions: np.ndarray
    engine: str


def _hooked_after(model: HookedMLP, position: int) -> bool:
    return any(hp.fwd_hooks for hp in model.hook_points()[position + 1 :])


def fold(model: HookedMLP, hook: str, vectors: Tensor) -> tuple[str, Tensor]:
    """Carry ``vectors`` ``[k, *shape]`` added at ``hook`` forward through the affine modules after it.

    Returns the last hook point reached and the equivalent vectors there; the result always
    equals adding the vectors at ``hook`` itself.
    """
    layout, points = model.layout, model.hook_points()
    free = lambda name: not points[layout.site(name).position].fwd_hooks  # noqa: E731
    if free(hook):
        hook = layout.carrier(hook)
    nxt = layout.next_layer(hook)
    while nxt < model.n_layers:
        layer, post = layout.layers[nxt], layout.post(nxt)
        if not (layer.affine and free(layout.sites[2 * nxt].name) and free(post)):
            break
        vectors = fold_module(layer.module, vectors)
        hook, nxt = post, nxt + 1
    return hook, vectors


class _Sums:
    """Running sums of every metric's ``value * mask`` and ``mask``, and of the per-class logits."""

    def __init__(self, k: int, n_classes: int, device: Any, dtype: torch.dtype) -> None:
        z = lambda *shape: torch.zeros(*shape, device=device, dtype=dtype)  # noqa: E731
        self.num = {m: z(k) for m in METRICS}
        self.den = {m: z(k) for m in METRICS}
        self.logits, self.counts = z(k, n_classes, n_classes), z(n_classes)
        self.n_classes = n_classes

    def add(self, rows: Tensor, s: Scored, count_images: bool = False) -> None:
        """Add chunk ``s`` (its additions are rows ``rows`` of the result)."""
        for name, metric in METRICS.items():
            mask = metric.mask(s).to(s.logits.dtype)
            self.num[name].index_add_(0, rows, (metric.value(s) * mask).sum(1))
            self.den[name].index_add_(0, rows, mask.sum(1))
        sums, counts = per_class_logit_sums(s, self.n_classes)
        self.logits.index_add_(0, rows, sums)
        if count_images:
            self.counts += counts

    def result(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        values = {m: (self.num[m] / self.den[m].clamp(min=1)).cpu().numpy() for m in METRICS}
        mean = self.logits / self.counts.clamp(min=1).view(1, -1, 1)
        return values, F.softmax(mean, dim=-1).cpu().numpy()


class _Suffix:
    """The modules after a hook, run into reused buffers (hook-free Linear/ReLU/eval-Dropout suffixes only)."""

    def __init__(self, model: HookedMLP, hook: str) -> None:
        layout = model.layout
        self.model, self.hook = model, hook
        self.modules = [layer.module for layer in layout.layers[layout.next_layer(hook):]]
        simple = all(isinstance(m, (nn.Linear, nn.ReLU)) or (isinstance(m, nn.Dropout) and not m.training) for m in self.modules)
        self.fast = simple and not _hooked_after(model, layout.site(hook).position) and len(layout.site(hook).shape) == 1
        self.buffers: dict[tuple[int, int], Tensor] = {}

    def _buffer(self, k: int, rows: int, width: int, like: Tensor) -> Tensor:
        buf = self.buffers.get((k, width))
        if buf is None or buf.shape[0] < rows:
            buf = self.buffers[(k, width)] = torch.empty(rows, width, dtype=like.dtype, device=like.device)
        return buf[:rows]

    def __call__(self, x: Tensor) -> Tensor:
        if not self.fast:
            return self.model(x, start_at=self.hook)
        k = 0
        for m in self.modules:
            if isinstance(m, nn.Linear):
                k += 1
                out = self._buffer(k, x.shape[0], m.out_features, x)
                if m.bias is None:
                    torch.mm(x, m.weight.T, out=out)
                else:
                    torch.addmm(m.bias, x, m.weight.T, out=out)
                x = out
            elif isinstance(m, nn.ReLU):
                x = x.relu_()
        return x


def _dedupe(model: Any, additions: Sequence[Addition]) -> tuple[dict[str, list[tuple[Tensor, int, int]]], list[tuple[str, int]]]:
    """Group additions by folded hook, each distinct (vector, a, b) once; ``where[i]`` locates addition ``i``."""
    groups: dict[str, list[tuple[Tensor, int, int]]] = {}
    buckets: dict[tuple[str, int, int], list[int]] = {}
    where: list[tuple[str, int]] = []
    chain = isinstance(model, HookedMLP)
    for add in additions:
        hook, v = fold(model, add.hook, add.vector.unsqueeze(0)) if chain else (add.hook, add.vector.unsqueeze(0))
        v = v[0]
        group = groups.setdefault(hook, [])
        tol = 1e-5 * max(1.0, float(v.abs().max()))  # float rounding of an exact identity
        bucket = buckets.setdefault((hook, add.a, add.b), [])
        same = next((i for i in bucket if torch.allclose(group[i][0], v, rtol=0, atol=tol)), None)
        if same is None:
            same = len(group)
            group.append((v, add.a, add.b))
            bucket.append(same)
        where.append((hook, same))
    return groups, where


def evaluate_additions(model: HookedRoot, images: Tensor, labels: Tensor, additions: Sequence[Addition],
                       chunk_elements: int = CHUNK_ELEMENTS, progress: bool = False) -> Evaluation:
    """Every metric of ``METRICS`` for every addition, with the model as it is (hooks and mode included)."""
    if chunk_elements < 1:
        raise UsageError(f"chunk_elements must be a positive int, got {chunk_elements}")
    if not additions:
        raise UsageError("no additions to evaluate; pass at least one Addition")
    if not isinstance(model, HookedMLP):
        return _full_passes(model, images, labels, additions, progress,
                            f"full passes, one per addition ({type(model).__name__} has no prefix/suffix split)")
    labels = labels.to(images.device).long()
    with torch.no_grad():
        base = model(images)
        base_logp = F.log_softmax(base, -1)
        n, n_classes = base.shape
        groups, where = _dedupe(model, additions)
        out: dict[str, tuple[dict[str, np.ndarray], np.ndarray]] = {}
        bar = tqdm(total=sum(len(g) for g in groups.values()), desc="steering", unit="vector", disable=not progress)
        for hook, group in groups.items():
            out[hook] = _evaluate_group(model, images, labels, base, base_logp, hook, group, chunk_elements, bar)
        bar.close()
    values = {m: np.stack([out[h][0][m][i] for h, i in where]) for m in METRICS}
    dists = np.stack([out[h][1][i] for h, i in where])
    per_vector = any(_hooked_after(model, model.layout.site(h).position) for h in groups)
    how = "per vector on the whole set (hooks are attached after the hook)" if per_vector else "stacked"
    return Evaluation(values, dists, f"folded prefix/suffix, {how}; {len(where)} additions, "
                                     f"{sum(len(g) for g in groups.values())} distinct")


def _evaluate_group(model: HookedMLP, images: Tensor, labels: Tensor, base: Tensor, base_logp: Tensor, hook: str,
                    group: list[tuple[Tensor, int, int]], chunk_elements: int, bar: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
    n, n_classes = base.shape
    vecs = torch.stack([g[0] for g in group])
    a = torch.tensor([g[1] for g in group], device=base.device)
    b = torch.tensor([g[2] for g in group], device=base.device)
    sums = _Sums(len(group), n_classes, base.device, base.dtype)
    zero = (vecs.reshape(len(group), -1) == 0).all(1)
    todo = (~zero).nonzero().squeeze(1).tolist()
    zeros = zero.nonzero().squeeze(1)
    if len(zeros):
        sums.add(zeros, Scored(base.unsqueeze(0).expand(len(zeros), -1, -1), base_logp, labels, a[zeros], b[zeros]))
    sums.counts += F.one_hot(labels, n_classes).to(base.dtype).sum(0)
    bar.update(len(group) - len(todo))
    site = model.layout.site(hook)
    if site.name == model.hook_names[-1]:  # folded onto the logits: one add per vector
        for i in todo:
            rows = torch.tensor([i], device=base.device)
            sums.add(rows, Scored(base.unsqueeze(0) + vecs[i], base_logp, labels, a[rows], b[rows]))
            bar.update(1)
        return sums.result()
    acts = model(images, stop_at=hook)
    suffix = _Suffix(model, hook)
    per_vector = _hooked_after(model, site.position)
    width = math.prod(site.shape)
    images_per_chunk = n if per_vector else max(1, min(n, chunk_elements // width))
    vectors_per_chunk = 1 if per_vector else max(1, chunk_elements // (width * images_per_chunk))
    for start in range(0, n, images_per_chunk):
        rows = slice(start, min(n, start + images_per_chunk))
        part = acts[rows]
        for j in range(0, len(todo), vectors_per_chunk):
            idx = torch.tensor(todo[j : j + vectors_per_chunk], device=base.device)
            x = (part.unsqueeze(0) + vecs[idx].unsqueeze(1)).reshape(len(idx) * part.shape[0], *site.shape)
            logits = suffix(x).view(len(idx), part.shape[0], n_classes)
            sums.add(idx, Scored(logits, base_logp[rows], labels[rows], a[idx], b[idx]))
            if start == 0:
                bar.update(len(idx))
    return sums.result()


def _full_passes(model: HookedRoot, images: Tensor, labels: Tensor, additions: Sequence[Addition], progress: bool,
                 engine: str) -> Evaluation:
    labels = labels.to(images.device).long()
    results: list[tuple[dict[str, np.ndarray], np.ndarray]] = []
    with torch.no_grad():
        base_logp = F.log_softmax(model(images), -1)
        n_classes = base_logp.shape[-1]
        for add in tqdm(additions, desc="steering", unit="vector", disable=not progress):
            v = add.vector.to(images.device)
            with model.hooks(fwd_hooks=[(add.hook, lambda act, hook, v=v: act + v)]):
                logits = model(images)
            sums = _Sums(1, n_classes, logits.device, logits.dtype)
            a, b = (torch.tensor([c], device=logits.device) for c in (add.a, add.b))
            sums.add(torch.zeros(1, dtype=torch.long, device=logits.device), Scored(logits.unsqueeze(0), base_logp, labels, a, b), True)
            results.append(sums.result())
    values = {m: np.concatenate([r[0][m] for r in results]) for m in METRICS}
    return Evaluation(values, np.concatenate([r[1] for r in results]), engine)


def evaluate_plain(model: HookedRoot, images: Tensor, labels: Tensor, additions: Sequence[Addition]) -> Evaluation:
    """The plain way, for reference and benchmarks: one full hooked forward pass per addition."""
    if not additions:
        raise UsageError("no additions to evaluate; pass at least one Addition")
    return _full_passes(model, images, labels, additions, False, "full passes, one per addition (the plain way)")


def unsteered(model: HookedRoot, images: Tensor, labels: Tensor, bs: Sequence[int]) -> dict[str, np.ndarray]:
    """Each metric of the unsteered model with ``b`` left out, for each ``b`` in ``bs`` (the study's "Normal" row)."""
    labels = labels.to(images.device).long()
    with torch.no_grad():
        logits = model(images)
    b = torch.tensor(list(bs), device=logits.device)
    sums = _Sums(len(b), logits.shape[-1], logits.device, logits.dtype)
    sums.add(torch.arange(len(b), device=logits.device), Scored(logits.unsqueeze(0).expand(len(b), -1, -1),
                                                               F.log_softmax(logits, -1), labels, b, b), True)
    return sums.result()[0]
