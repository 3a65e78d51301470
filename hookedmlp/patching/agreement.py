"""How far an attribution estimate is from the exact patching result: correlation, top-k agreement and errors."""

import dataclasses
import math

import torch
from torch import Tensor

from hookedmlp.checks import check_int
from hookedmlp.errors import UsageError
from hookedmlp.patching.result import PatchResult

__all__ = ["Agreement", "compare"]


@dataclasses.dataclass(frozen=True)
class Agreement:
    """An estimate's agreement with the exact effects, over the entries both results hold.

    Attributes:
        entries: how many entries were compared.
        pearson: the correlation of the effects (NaN where either is constant).
        spearman: the correlation of their ranks.
        k: how many top entries ``top_k`` compares.
        top_k: the share of the exact result's ``k`` largest ``|effect|`` entries that are also
            among the estimate's ``k`` largest.
        sign: the share of the exact top ``k`` whose effect the estimate gives the same sign.
        max_error: the largest ``|estimate - exact|`` effect.
        scale: the largest exact ``|effect|``, to read ``max_error`` against.
    """

    entries: int
    pearson: float
    spearman: float
    k: int
    top_k: float
    sign: float
    max_error: float
    scale: float

    def __str__(self) -> str:
        return (
            f"{self.entries} entries: Pearson r = {self.pearson:.3f}, Spearman rho = {self.spearman:.3f}; "
            f"top-{self.k} agreement {self.top_k:.0%} (same sign on {self.sign:.0%} of the exact top {self.k}); "
            f"largest error {self.max_error:.3g} (largest exact effect {self.scale:.3g})"
        )


def _pearson(a: Tensor, b: Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = float(a.norm() * b.norm())
    return float(a @ b) / denominator if denominator > 0 else math.nan


def _ranks(x: Tensor) -> Tensor:
    return torch.argsort(torch.argsort(x, stable=True), stable=True).double()


def compare(exact: PatchResult, estimate: PatchResult, k: int = 10) -> Agreement:
    """The ``Agreement`` of ``estimate`` (e.g. ``attribution_patch``'s) with ``exact`` (``activation_patch``'s).

    Both must patch the same hooks, with the same ``per``, direction and metric.

    Examples:
        >>> from hookedmlp.patching import activation_patch, attribution_patch, compare
        >>> threes, ones = images[labels == 3][:50], images[labels == 1][:50]
        >>> args = dict(labels=(3, 1), hooks="layer1.post", per="unit")
        >>> exact = activation_patch(model, threes, ones, "logit_diff", **args)
        >>> estimate = attribution_patch(model, threes, ones, "logit_diff", **args)
        >>> compare(exact, estimate).pearson > 0.9
        True
    """
    for field in ("hooks", "grids", "per", "direction", "metric"):
        if getattr(exact, field) != getattr(estimate, field):
            raise UsageError(
                f"the results differ in {field} ({getattr(exact, field)!r:.80} vs {getattr(estimate, field)!r:.80}); "
                "compare results of the same hooks, per, direction and metric"
            )
    n = len(exact.values)
    k = min(check_int(k, "k", low=1), n)
    a, b = exact.effect.double(), estimate.effect.double()
    top_a = torch.argsort(a.abs(), descending=True, stable=True)[:k]
    top_b = set(torch.argsort(b.abs(), descending=True, stable=True)[:k].tolist())
    return Agreement(
        entries=n,
        pearson=_pearson(a, b),
        spearman=_pearson(_ranks(a), _ranks(b)),
        k=k,
        top_k=sum(i in top_b for i in top_a.tolist()) / k,
        sign=float((torch.sign(a[top_a]) == torch.sign(b[top_a])).double().mean()),
        max_error=float((a - b).abs().max()),
        scale=float(a.abs().max()),
    )
