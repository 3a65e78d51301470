"""Attribution patching: activation patching's numbers estimated from gradients, at every hook point at once.

The first-order estimate of patching an entry is ``(source - base) . d metric / d activation``,
summed over the entry's elements and the pairs, with the gradient taken on the base run: one
forward and one backward pass of the base inputs (``run_with_cache(..., incl_bwd=True)``, whose
gradient cache holds every hook point's gradient) and one forward pass of the source inputs
give the estimate for every hook point and unit. It is exact where the metric is linear in the
activation (a linear network and a logit difference).

``method="integrated_gradients"`` averages the gradient along the straight path from the base
to the source activation, at ``steps`` midpoints, one hook point at a time: the per-hook estimates
then add up to the exact effect of patching the whole hook point (up to the Riemann sum's error).
Each step is a graph-cut suffix pass with its backward pass; ``steps`` interpolated copies of
the batch share one pass where the part after the hook point treats examples on their own.
"""

from typing import Any, Optional

import torch
from torch import Tensor

from hookedmlp.checks import check_choice, check_int
from hookedmlp.errors import UsageError
from hookedmlp.models import facts
from hookedmlp.models.cut import Cut, graph_view
from hookedmlp.patching.activation import CHUNK_ELEMENTS
from hookedmlp.patching.metrics import Labels, PatchMetric
from hookedmlp.patching.pairs import any_hook_attached, unit_sums
from hookedmlp.patching.result import PatchResult
from hookedmlp.patching.runs import Runs, start_runs

__all__ = ["attribution_patch", "METHODS"]

METHODS = ("gradient", "integrated_gradients")


def attribution_patch(
    model: Any,
    clean: Any,
    corrupt: Any,
    metric: Any,
    *,
    hooks: Any = None,
    per: str = "hook",
    direction: str = "denoise",
    labels: Optional[tuple[Labels, Labels]] = None,
    method: str = "gradient",
    steps: int = 16,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> PatchResult:
    """Estimate ``activation_patch``'s result from gradients (see the module's docs).

    Takes ``activation_patch``'s arguments, and:

    Args:
        method: ``"gradient"`` (the first-order estimate, from one forward and one backward
            pass) or ``"integrated_gradients"`` (the gradient averaged over ``steps`` points
            between the base and the source activation, per hook point).
        steps: the number of points for integrated gradients.
        chunk_elements: at most this many activation entries per integrated-gradients pass.

    Returns:
        A ``PatchResult`` of ``kind="attribution"`` (or ``"integrated_gradients"``): the
        estimated metric after each patch, ``base + estimated effect``; check it against the
        exact one with ``hookedmlp.patching.compare``.

    Raises:
        UsageError: the metric is not differentiable (``"flip_rate"``), or its value does not
            depend on the logits through autograd.

    Examples:
        >>> from hookedmlp.patching import activation_patch, attribution_patch, compare
        >>> threes, ones = images[labels == 3][:50], images[labels == 1][:50]
        >>> estimate = attribution_patch(model, threes, ones, "logit_diff", labels=(3, 1), hooks="layer1.post",
        ...                              per="unit")
        >>> estimate.kind, estimate.values.shape
        ('attribution', torch.Size([512]))
    """
    check_choice(method, METHODS, "method")
    check_int(steps, "steps", low=1)
    check_int(chunk_elements, "chunk_elements", low=1)
    gradient = method == "gradient"  # its gradient pass gives the base run's logits
    runs = start_runs(
        model, clean, corrupt, metric, hooks, per, direction, labels, "attribution patching", not gradient
    )
    if not runs.metric.differentiable:
        raise UsageError(
            f"metric {runs.metric.name!r} is a step function: its gradient is zero wherever it is defined, so "
            "attribution patching cannot estimate it; use 'logit_diff' or 'loss', or activation_patch"
        )
    if gradient:
        effects, engine = _first_order(model, runs), "one forward and backward pass of the base run (gradient cache)"
    else:
        effects, engine = _integrated(model, runs, steps, chunk_elements)
    kind = "attribution" if gradient else "integrated_gradients"
    return PatchResult(runs.base + effects, kind=kind, engine=engine, **runs.result_fields())


def _scalar(model: Any, metric: PatchMetric, out: Any) -> Tensor:
    value = metric(facts.select_output(model, out).unsqueeze(0), "on the base run")[0]
    if not value.requires_grad:
        raise UsageError(
            f"the metric {metric.name!r} does not depend on the logits through autograd (it returned a constant, "
            "or used .item(), argmax or a comparison), so it has no gradient; return a differentiable tensor"
        )
    return value


def _first_order(model: Any, runs: Runs) -> Tensor:
    """``(source - base) . grad`` summed per entry, the gradient from the gradient cache of the base run."""
    out, cache = model.run_with_cache(
        runs.pair.base, names_filter=runs.names, incl_bwd=True, loss_fn=lambda out: _scalar(model, runs.metric, out)
    )
    with torch.no_grad():
        runs.score_base(facts.select_output(model, out))
    parts = []
    for h in runs.names:
        base = cache[h]
        grad = cache.cache_dict.get(f"{h}_grad")  # absent where the metric does not depend on the hook point
        product = (runs.source_acts[h] - base) * grad if grad is not None else torch.zeros_like(base)
        parts.append(unit_sums(product, runs.per).reshape(-1))
    return torch.cat(parts).detach().double().cpu()


def _path_grads(model: Any, runs: Runs, hook: str, steps: int, chunk: int, hooked: bool) -> tuple[Tensor, Tensor]:
    """``(source - base, the mean gradient along the path)`` at ``hook``: by the graph cut, else full passes."""
    view = graph_view(model)
    source = runs.source_acts[hook]
    alphas = (torch.arange(steps, dtype=source.dtype, device=source.device) + 0.5) / steps
    node = view.node_of.get(hook) if view is not None else None
    if node is not None:
        cut = Cut(view, node, hooked)
        with torch.no_grad():
            base, *ext = cut.prefix(runs.pair.base)
        k = max(1, chunk // max(1, source.numel())) if cut.stackable else 1
    else:
        with torch.no_grad():
            _, cache = model.run_with_cache(runs.pair.base, names_filter=hook)
        base, cut, ext, k = cache[hook], None, [], 1
    delta = source - base
    total = torch.zeros_like(base)
    for j in range(0, steps, k):
        a = alphas[j : j + k].view(-1, 1, *[1] * (base.ndim - 1))
        x = (base.unsqueeze(0) + a * delta.unsqueeze(0)).reshape(-1, *base.shape[1:]).requires_grad_(True)
        with torch.enable_grad():
            if cut is not None:
                logits = cut.suffix(x, *cut.repeat(ext, len(a)))
            else:
                with model.hooks(fwd_hooks=[(hook, lambda act, hook, x=x: x)]):
                    logits = facts.select_output(model, model(runs.pair.base))
            values = runs.metric(logits.view(len(a), -1, *logits.shape[1:]), f"along the path at {hook}")
            (grad,) = torch.autograd.grad(values.sum(), x, allow_unused=True)
        if grad is not None:
            total += grad.view(len(a), *base.shape).sum(0)
    return delta, total / steps


def _integrated(model: Any, runs: Runs, steps: int, chunk: int) -> tuple[Tensor, str]:
    hooked = any_hook_attached(model)
    parts = []
    for h in runs.names:
        delta, grad = _path_grads(model, runs, h, steps, chunk, hooked)
        parts.append(unit_sums(delta * grad, runs.per).reshape(-1))
    how = "graph-cut suffix passes" if graph_view(model) is not None else "full hooked passes"
    return torch.cat(parts).detach().double().cpu(), f"integrated gradients, {steps} steps per hook point, {how}"
