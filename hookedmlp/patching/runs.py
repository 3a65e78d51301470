"""The runs every patching method starts from: the inputs checked, the unpatched base and source runs, and the metric.

One size estimate comes first: the source run's activations at the chosen hook points, the base
run's (the graph cut's prefix, or the gradient cache) and one patched copy, for ``n`` pairs.
"""

import dataclasses
import math
from typing import Any, Optional

import torch
from torch import Tensor

from hookedmlp.checks import check_choice
from hookedmlp.models import facts
from hookedmlp.patching.metrics import Labels, PatchMetric, resolve_metric
from hookedmlp.patching.pairs import PER, Pair, grid_of, prepare_pair
from hookedmlp.sizes import activation_bytes, check_bytes, tensor_bytes
from hookedmlp.steering.provenance import model_fingerprint, warn_training_mode

__all__ = ["Runs", "start_runs"]


@dataclasses.dataclass
class Runs:
    """The checked inputs, hook points and metric, and the unpatched runs' logits, metrics and source activations."""

    pair: Pair
    names: list[str]
    shapes: dict[str, tuple[int, ...]]
    per: str
    metric: PatchMetric
    base_logits: Optional[Tensor]  # None until scored (attribution takes them from its gradient pass)
    base: float
    source: float
    source_acts: dict[str, Tensor]
    model: str

    def score_base(self, logits: Tensor) -> None:
        """Keep the unpatched base run's logits and score them."""
        self.base_logits = logits.detach()
        self.base = float(self.metric(self.base_logits.unsqueeze(0), "on the unpatched base run")[0])

    @property
    def grids(self) -> list[tuple[int, ...]]:
        return [grid_of(self.shapes[h], self.per) for h in self.names]

    def result_fields(self) -> dict[str, Any]:
        """The fields of a ``PatchResult`` that come from the runs."""
        return dict(
            hooks=self.names,
            grids=self.grids,
            per=self.per,
            direction=self.pair.direction,
            metric=self.metric.name,
            base=self.base,
            source=self.source,
            n=self.pair.n,
            model=self.model,
        )


def _shapes(model: Any, names: list[str], probe: Tensor) -> dict[str, tuple[int, ...]]:
    """One example's activation shape at each hook point (from a pass of one example where the model cannot say)."""
    if facts.accepted_input_shapes(model) is not None or hasattr(model, "activation_shape"):
        return {h: tuple(facts.activation_shape(model, h)) for h in names}
    with torch.no_grad():
        _, cache = model.run_with_cache(probe, names_filter=names)
    return {h: tuple(cache[h].shape[1:]) for h in names}


def start_runs(
    model: Any,
    clean: Any,
    corrupt: Any,
    metric: Any,
    hooks: Any,
    per: str,
    direction: str,
    labels: Optional[tuple[Labels, Labels]],
    what: str,
    base_pass: bool = True,
) -> Runs:
    """Check everything, estimate the memory, run the source (and with ``base_pass`` the base) pass and score them."""
    check_choice(per, PER, "per")
    pair = prepare_pair(model, clean, corrupt, direction)
    names = model.resolve_names(hooks)
    shapes = _shapes(model, names, pair.source[:1])
    dtype = pair.base.dtype
    entries = sum(math.prod(grid_of(s, per)) for s in shapes.values())
    check_bytes(
        3 * sum(activation_bytes(s, pair.n, dtype) for s in shapes.values()) + tensor_bytes((entries,), torch.float64),
        f"{what} of {pair.n} pairs at {len(names)} hook point(s)",
        "patch fewer pairs or hook points at a time",
    )
    warn_training_mode(model, what)
    with torch.no_grad():
        out, cache = model.run_with_cache(pair.source, names_filter=names)
        source_logits = facts.select_output(model, out)
    scorer = resolve_metric(metric, labels, pair.n, source_logits.shape[-1], source_logits.device)
    acts = {h: cache[h] for h in names}
    runs = Runs(pair, names, shapes, per, scorer, None, math.nan, math.nan, acts, model_fingerprint(model))
    with torch.no_grad():
        if base_pass:
            runs.score_base(facts.select_output(model, model(pair.base)))
        runs.source = float(scorer(source_logits.unsqueeze(0), "on the unpatched source run")[0])
    return runs
