"""Patching one hook point's entries, fast: graph-cut suffix passes, batched, folded; or full hooked passes.

- *The graph cut* (``hookedmlp.models.cut.Cut``). The base run's prefix (the value at the hook
  point and every other value the rest of the pass reads) runs once; each patch is a suffix pass
  from the patched value. ``k`` patched copies of the batch share one suffix pass where the part
  after the hook point treats each example on its own (``Cut.stackable``), in chunks of at most
  ``chunk`` activation entries; elsewhere each patch runs alone.
- *Folding* (``hookedmlp.models.cut.fold``). Patching unit ``u`` of a ``[d]`` activation adds
  ``(source - base)[:, u]`` along ``e_u``; carried through the affine modules after it (a Linear:
  ``W[:, u]``), the patch is a rank-one update of the next nonlinearity's input, so a per-unit
  sweep runs only what follows that nonlinearity.
- *Full passes*, for a model without a graph (or a hook point outside it): one hooked forward
  pass per entry.

Each function returns ``([entries] float64 values, how it ran)``.
"""

import math
from typing import Any, Optional

import torch
from torch import Tensor

from hookedmlp.models import facts
from hookedmlp.models.cut import Cut, GraphView, fold
from hookedmlp.patching.metrics import PatchMetric
from hookedmlp.patching.pairs import grid_of, unit_masks

__all__ = ["cut_values", "full_values"]

Values = tuple[Tensor, str]


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _score(metric: PatchMetric, logits: Tensor, hook: str) -> Tensor:
    return metric(logits, f"with {hook} patched").detach().double().cpu()


def cut_values(
    view: GraphView,
    hook: str,
    hooked: bool,
    metric: PatchMetric,
    base_x: Tensor,
    base_logits: Tensor,
    source: Tensor,
    per: str,
    chunk: int,
) -> Values:
    """The metric with each entry of ``hook`` patched from ``source`` (its values ``[n, *shape]``), by the cut."""
    node = view.node_of[hook]
    cut = Cut(view, node, hooked)
    base, *ext = cut.prefix(base_x)
    shape = tuple(base.shape[1:])
    if not grid_of(shape, per):
        return _score(metric, cut.suffix(source, *ext).unsqueeze(0), hook), "one suffix pass"
    if per == "unit" and len(shape) == 1:
        folded = _folded(view, node, hooked, metric, base_x, base_logits, base, source, chunk, hook)
        if folded is not None:
            return folded
    return _stacked(cut, metric, base, ext, source, per, chunk, hook)


def _stacked(
    cut: Cut, metric: PatchMetric, base: Tensor, ext: list[Any], source: Tensor, per: str, chunk: int, hook: str
) -> Values:
    shape = tuple(base.shape[1:])
    n, width, entries = len(base), math.prod(shape), math.prod(grid_of(shape, per))
    out = torch.empty(entries, dtype=torch.float64)
    if not cut.stackable:
        for j in range(entries):
            mask = unit_masks(shape, per, range(j, j + 1), base.device)[0]
            out[j] = _score(metric, cut.suffix(torch.where(mask, source, base), *ext).unsqueeze(0), hook)[0]
        return out, f"a suffix pass per entry ({cut.why_not_stackable})"
    images = min(n, max(1, chunk // width))
    k = 1 if images < n else max(1, chunk // (width * n))
    for j in range(0, entries, k):
        masks = unit_masks(shape, per, range(j, min(j + k, entries)), base.device).unsqueeze(1)
        parts = []
        for s in range(0, n, images):
            x = torch.where(masks, source[None, s : s + images], base[None, s : s + images])
            rest = cut.repeat([e[s : s + images] if isinstance(e, Tensor) else e for e in ext], len(masks))
            y = cut.suffix(x.reshape(-1, *shape), *rest)
            parts.append(y.view(len(masks), -1, *y.shape[1:]))
        out[j : j + len(masks)] = _score(metric, torch.cat(parts, 1), hook)
    return out, f"suffix passes of {_count(k, 'entry', 'entries')} x {_count(images, 'pair', 'pairs')}"


def _folded(
    view: GraphView,
    node: str,
    hooked: bool,
    metric: PatchMetric,
    base_x: Tensor,
    base_logits: Tensor,
    base: Tensor,
    source: Tensor,
    chunk: int,
    hook: str,
) -> Optional[Values]:
    """Per-unit patches of a ``[d]`` activation as rank-one updates after the affine modules that follow it."""
    n, d = base.shape
    probe = torch.zeros(1, d, dtype=base.dtype, device=base.device)
    reached, moved = fold(view, node, probe)
    if moved is probe:  # no affine module to fold through (at most another name of the same tensor)
        return None
    if reached == view.output:
        after, ext, cut = base_logits, [], None
    else:
        cut = Cut(view, reached, hooked)
        if not cut.stackable:
            return None
        after, *ext = cut.prefix(base_x)
    delta = source - base
    width = math.prod(after.shape[1:])
    k = max(1, chunk // (n * width))
    out = torch.empty(d, dtype=torch.float64)
    for j in range(0, d, k):
        units = torch.arange(j, min(j + k, d), device=base.device)
        basis = torch.zeros(len(units), d, dtype=base.dtype, device=base.device)
        basis[torch.arange(len(units), device=base.device), units] = 1
        _, columns = fold(view, node, basis)  # [k, *shape after]: the response to each unit
        scale = delta[:, units].T.reshape(len(units), n, *[1] * (after.ndim - 1))
        logits = torch.addcmul(after.unsqueeze(0), scale, columns.unsqueeze(1))
        if cut is not None:
            y = cut.suffix(logits.reshape(-1, *after.shape[1:]), *cut.repeat(ext, len(units)))
            logits = y.view(len(units), n, *y.shape[1:])
        out[j : j + len(units)] = _score(metric, logits, hook)
    return out, f"units folded to {view.hook_of(reached)}, suffix passes of {_count(k, 'unit', 'units')} x {n} pairs"


def full_values(model: Any, hook: str, metric: PatchMetric, base_x: Tensor, source: Tensor, per: str) -> Values:
    """The metric with each entry of ``hook`` patched, one full hooked forward pass per entry (the plain way)."""
    shape = tuple(source.shape[1:])
    entries = math.prod(grid_of(shape, per))
    out = torch.empty(entries, dtype=torch.float64)
    for j in range(entries):
        mask = unit_masks(shape, per, range(j, j + 1), source.device)[0] if grid_of(shape, per) else None

        def patch(act: Tensor, hook: Any, mask: Optional[Tensor] = mask) -> Tensor:
            return source if mask is None else torch.where(mask, source, act)

        with model.hooks(fwd_hooks=[(hook, patch)]):
            logits = facts.select_output(model, model(base_x))
        out[j] = _score(metric, logits.unsqueeze(0), hook)[0]
    return out, "full hooked passes, one per entry"
