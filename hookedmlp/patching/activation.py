"""Activation patching over every hook point: the exact metric with each hook point, unit or position patched.

``activation_patch`` runs the graph cut, batched and folded where it can
(``hookedmlp.patching.sweep``); the result says how in ``engine``, and equals one full hooked
forward pass per entry (``plain_activation_patch``, the reference) to float rounding.
"""

from typing import Any, Optional

import torch

from hookedmlp.checks import check_int
from hookedmlp.models.cut import first_name, graph_view
from hookedmlp.patching.metrics import Labels
from hookedmlp.patching.pairs import any_hook_attached
from hookedmlp.patching.result import PatchResult
from hookedmlp.patching.runs import start_runs
from hookedmlp.patching.sweep import cut_values, full_values

__all__ = ["activation_patch", "plain_activation_patch", "CHUNK_ELEMENTS"]

# Activation entries per suffix pass: 256 Ki floats (1 MiB), small enough to stay in cache (bench_patching.py).
CHUNK_ELEMENTS = 1 << 18


def activation_patch(
    model: Any,
    clean: Any,
    corrupt: Any,
    metric: Any,
    *,
    hooks: Any = None,
    per: str = "hook",
    direction: str = "denoise",
    labels: Optional[tuple[Labels, Labels]] = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> PatchResult:
    """Patch each hook point (or each unit or position of it) from one run into another, and score the metric.

    With ``direction="denoise"`` the corrupt inputs run with one entry's activation replaced by
    the clean run's (pair by pair: ``clean[i]`` with ``corrupt[i]``); with ``"noise"`` the clean
    inputs run with the corrupt run's values. The model runs as it is: hooks attached elsewhere
    stay in every pass.

    Args:
        model: any hooked model (the graph cut where its graph is known, else full passes).
        clean: a batch of inputs ``[n, ...]`` (or one example).
        corrupt: a batch of the same shape.
        metric: a callable ``metric(logits [n, classes]) -> scalar``, or a name of
            ``hookedmlp.patching.METRICS`` (``"logit_diff"``, ``"loss"``, ``"flip_rate"``), which
            needs ``labels``.
        hooks: which hook points (a name, a glob such as ``"*.post"``, a list; default all).
        per: ``"hook"`` (the whole activation), ``"unit"`` (each index of its first dimension:
            a neuron, a channel) or ``"position"`` (each index of the other dimensions).
        direction: ``"denoise"`` (run corrupt, patch in clean) or ``"noise"`` (run clean, patch
            in corrupt).
        labels: ``(clean_labels, corrupt_labels)``, each an int or ``[n]`` class labels, for a
            named metric.
        chunk_elements: at most this many activation entries per batched suffix pass.

    Returns:
        A ``PatchResult``: the metric after each patch, labelled by hook and unit.

    Raises:
        ShapeError: clean and corrupt differ in shape, or the metric returns more than one number.
        HookNameError: an unknown hook name (with the closest ones).
        SteeringError: the metric is not finite.
        SizeError: the activations of the pairs would exceed the memory budget.

    Examples:
        >>> from hookedmlp.patching import activation_patch, attribution_patch, compare
        >>> threes, ones = images[labels == 3][:50], images[labels == 1][:50]
        >>> result = activation_patch(model, threes, ones, "logit_diff", labels=(3, 1), hooks="layer1.post", per="unit")
        >>> result.base < 0 < result.source, result.values.shape
        (True, torch.Size([512]))
        >>> result.top(1)[0].hook, result.top(1)[0].effect > 0
        ('layer1.post', True)
    """
    check_int(chunk_elements, "chunk_elements", low=1)
    runs = start_runs(model, clean, corrupt, metric, hooks, per, direction, labels, "activation patching")
    view = graph_view(model)
    hooked = any_hook_attached(model)
    values: list[torch.Tensor] = []
    hows: dict[str, list[str]] = {}
    done: dict[str, tuple[torch.Tensor, str]] = {}
    with torch.no_grad():
        for hook in runs.names:
            node = first_name(view, view.node_of[hook]) if view is not None and hook in view.node_of else None
            if node is None:
                got = full_values(model, hook, runs.metric, runs.pair.base, runs.source_acts[hook], per)
            elif node in done:  # another name of the same tensor
                got = done[node]
            else:
                got = done[node] = cut_values(
                    view, hook, hooked, runs.metric, runs.pair.base, runs.base_logits, runs.source_acts[hook], per,
                    chunk_elements,
                )  # fmt: skip
            values.append(got[0])
            hows.setdefault(got[1], []).append(hook)
    where = "graph cut" if view is not None else f"no graph of {type(model).__name__}"
    engine = f"{where}; " + "; ".join(f"{how} ({_listed(hooks)})" for how, hooks in hows.items())
    return PatchResult(torch.cat(values), kind="activation", engine=engine, **runs.result_fields())


def _listed(hooks: list[str]) -> str:
    return ", ".join(hooks) if len(hooks) <= 3 else f"{len(hooks)} hook points"


def plain_activation_patch(
    model: Any,
    clean: Any,
    corrupt: Any,
    metric: Any,
    *,
    hooks: Any = None,
    per: str = "hook",
    direction: str = "denoise",
    labels: Optional[tuple[Labels, Labels]] = None,
) -> PatchResult:
    """``activation_patch`` the plain way, for reference and benchmarks: one full hooked forward pass per entry.

    Examples:
        >>> from hookedmlp.patching import plain_activation_patch
        >>> plain = plain_activation_patch(tiny, tiny_x, tiny_x.flip(0), "logit_diff", labels=(0, 1), per="unit",
        ...                                hooks="layer1.post")
        >>> plain.values.shape, plain.engine
        (torch.Size([8]), 'full hooked passes, one per entry')
    """
    runs = start_runs(model, clean, corrupt, metric, hooks, per, direction, labels, "activation patching")
    with torch.no_grad():
        got = [full_values(model, h, runs.metric, runs.pair.base, runs.source_acts[h], per) for h in runs.names]
    return PatchResult(torch.cat([g[0] for g in got]), kind="activation", engine=got[0][1], **runs.result_fields())
