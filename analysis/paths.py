"""Prediction paths: how each row's predicted class changes as its vector's coefficient grows.

A row is one scoring image and one vector (``analysis.rows``). Its prediction is evaluated
exactly at every coefficient of a geometric grid, then, wherever it differs at the two ends of a
grid interval, the points where it switches are found by bisection: each step is one batched
pass over every open bracket, each at its own coefficient. A midpoint whose class is neither
end's splits its bracket in two, so a path through several classes inside one interval (b, then
k, then a) is followed switch by switch. With a factor-2 grid and 6 steps a switch is located to
within a factor 2^(1/64) (1.1%), at one of ``bisection_points``. What bisection cannot see is a
path leaving a class and coming back to it between two of the points it evaluates.

Intervals the caller does not ``select`` are not bisected: a switch there is placed at the
interval's upper end, so the path stays exact at every grid point and coarse only between them.
The range starts at the first grid point: a switch before it is placed at it.
"""

import dataclasses
from collections.abc import Callable
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from hookedmlp_analysis.metrics import METRICS, Scored, ScoringSet
from hookedmlp_analysis.rows import Site

__all__ = ["Paths", "prediction_paths", "bisection_points"]


@dataclasses.dataclass
class Paths:
    """Rows' predictions as the coefficient grows: ``base`` at 0, then switch events sorted by row and coefficient.

    Event ``e`` says row ``row[e]`` is predicted ``to[e]`` from coefficient ``at[e]`` on (until its
    next event). ``pred`` and ``kl`` are the exact values at each grid point.
    """

    grid: np.ndarray  # [g]
    base: np.ndarray  # [rows]: the unsteered prediction
    pred: np.ndarray  # [rows, g]
    kl: np.ndarray  # [rows, g]: KL(unsteered || steered) of the row's image at each grid point
    row: np.ndarray  # [events]
    at: np.ndarray  # [events]
    to: np.ndarray  # [events]
    passes: int  # batched passes run (grid points and bisection steps)
    rows_run: int  # rows evaluated over all passes


def _points(grid: np.ndarray, steps: int, device: torch.device) -> Tensor:
    """``[g, 2**steps + 1]``: point ``m`` of ``2**steps`` geometric steps across interval ``k`` (``(g[k-1], g[k]]``).

    One table for every row, so rows switching between the same two points share one coefficient
    (the same formula evaluated on tensors of other lengths may round differently).
    """
    g = torch.as_tensor(grid, dtype=torch.float64)
    lo, hi = torch.cat([g[:1], g[:-1]]), g
    m = torch.arange(2**steps + 1, dtype=torch.float64) / 2**steps
    table = lo.unsqueeze(1) * (hi / lo).unsqueeze(1) ** m.unsqueeze(0)
    table[:, -1] = hi  # exactly the grid point
    return table.to(device)


def bisection_points(grid: np.ndarray, steps: int) -> np.ndarray:
    """Every coefficient a bisection with ``steps`` steps may record a switch at (grid points included)."""
    return np.concatenate([[grid[0]], _points(grid, steps, torch.device("cpu"))[1:, 1:].flatten().numpy()])


def _scored(data: ScoringSet, image: Tensor, logits: Tensor) -> Scored:
    """Rows as one addition's outputs on the rows' images (so the registry's definitions apply)."""
    zero = torch.zeros(1, dtype=torch.long, device=data.device)
    return Scored(logits.unsqueeze(0), data.base_logp[image], data.labels[image], zero, zero)


def _classify(data: ScoringSet, image: Tensor, logits: Tensor) -> tuple[Tensor, Tensor]:
    """Each row's predicted class and KL from the unsteered prediction."""
    s = _scored(data, image, logits)
    return s.predicted[0], METRICS["kl"].value(s)[0]


def _bisect(
    site: Site, data: ScoringSet, grid: np.ndarray, steps: int, brackets: list[Tensor]
) -> tuple[Tensor, Tensor, Tensor, int]:
    """Switch events ``(row, coefficient, class)`` inside ``brackets`` ``(row, interval, class at lo, class at hi)``,
    and the number of rows evaluated."""
    r, k, below, above = brackets
    evaluated = 0
    points = _points(grid, steps, data.device)
    lo, hi = torch.zeros_like(k), torch.full_like(k, 2**steps)  # bracket ends, in steps of the interval's 2**-steps
    for _ in range(steps):
        mid = (lo + hi) // 2
        evaluated += len(r)
        now, _ = _classify(data, r % site.n, site.logits(r, points[k, mid].to(data.base.dtype)))
        lower = now != below  # a switch between lo and mid: keep that half (to ``now``)
        third = lower & (now != above)  # and another between mid and hi: a new bracket for it
        r, k = torch.cat([r, r[third]]), torch.cat([k, k[third]])
        lo, hi = (
            torch.cat([torch.where(lower, lo, mid), mid[third]]),
            torch.cat([torch.where(lower, mid, hi), hi[third]]),
        )
        below, above = torch.cat([below, now[third]]), torch.cat([torch.where(lower, now, above), above[third]])
    return r, points[k, hi], above, evaluated


def prediction_paths(
    site: Site,
    data: ScoringSet,
    grid: np.ndarray,
    steps: int,
    on_grid: Optional[Callable[[int, Tensor], None]] = None,
    select: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
) -> Paths:
    """The paths of every row of ``site`` (vector ``r // n`` on image ``r % n``) along ``grid`` (increasing, positive).

    ``on_grid(k, logits)`` sees each grid point's logits ``[rows, classes]`` as they come;
    ``select(pred, base)`` returns which ``[rows, g]`` intervals to bisect (default: all).
    """
    with torch.no_grad():
        return _paths(site, data, grid, steps, on_grid, select)


def _paths(
    site: Site,
    data: ScoringSet,
    grid: np.ndarray,
    steps: int,
    on_grid: Optional[Callable[[int, Tensor], None]],
    select: Optional[Callable[[Tensor, Tensor], Tensor]],
) -> Paths:
    rows = site.k * site.n
    image = torch.arange(site.n, device=data.device).repeat(site.k)
    dtype = data.base.dtype
    base = _scored(data, image, data.base[image]).base_predicted
    pred = torch.empty(rows, len(grid), dtype=torch.long, device=data.device)
    kl = torch.empty(rows, len(grid), dtype=dtype, device=data.device)
    for k, c in enumerate(grid):
        logits = site.dense(float(c))
        pred[:, k], kl[:, k] = _classify(data, image, logits)
        if on_grid is not None:
            on_grid(k, logits)
    before = torch.cat([base.unsqueeze(1), pred[:, :-1]], 1)
    moved = before != pred  # (row, interval) where the prediction switches
    chosen = select(pred, base) if select is not None else torch.ones_like(moved)
    chosen[:, 0] = False  # (0, grid[0]] lies below the range
    rc, kc = (moved & ~chosen).nonzero().unbind(1)
    r, k = (moved & chosen).nonzero().unbind(1)
    g = torch.as_tensor(grid, dtype=torch.float64, device=data.device)
    events = [(rc, g[kc], pred[rc, kc])]
    evaluated = 0
    if len(r):
        *found, evaluated = _bisect(site, data, grid, steps, [r, k, before[r, k], pred[r, k]])
        events.append(tuple(found))
    row, at, to = (torch.cat(e).cpu().numpy() for e in zip(*events))
    order = np.lexsort((at, row))
    return Paths(
        np.asarray(grid, dtype=np.float64),
        base.cpu().numpy(),
        pred.cpu().numpy(),
        kl.cpu().numpy().astype(np.float64),
        row[order],
        at[order],
        to[order],
        len(grid) + (steps if evaluated else 0),
        rows * len(grid) + evaluated,
    )
