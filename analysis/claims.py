"""The study's claims, each a number computed from one run and a verdict with an explicit threshold.

A *run* is one model with one way of making vectors (an exemplar or the class mean): the grid of
every ``a - b`` pair at every hook point, with the per-digit distributions. Each claim reads its
number off a run and says whether it holds there; over many runs the verdicts are counted and
the numbers given as median and range (``summarise``).
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Optional

import numpy as np

from hookedmlp_analysis.grid import GridResult
from hookedmlp_analysis.published import StudyTables, ranks, spearman

__all__ = [
    "Claim",
    "CLAIMS",
    "ClaimSummary",
    "evaluate_claims",
    "summarise",
    "flips_as_the_study_says",
    "permutation_p",
    "DAMAGE_FACTOR",
    "BEST_LAYER_SHARE",
    "RANK_P",
    "rank_threshold",
]

DAMAGE_FACTOR = 10.0  # "generalization destroyed": loss on the other digits at least this many times the unsteered
BEST_LAYER_SHARE = 0.9  # "layer 0 is best for all pairs": for at least this share of the 90 pairs
RANK_P = 0.01  # "ranks like the study's grid": one-sided permutation p-value below this
_POSTS = [f"layer{i}.post" for i in range(5)]  # the study's "just after layer i"


def flips_as_the_study_says(grid: GridResult) -> np.ndarray:
    """Per off-diagonal pair: the steered model is more likely to answer ``a`` and less likely ``b`` on b's images.

    Measured as the study measured it, on the softmax of the mean logits over b's test images;
    the unsteered reference is the grid's diagonal cell ``[b, b]`` (a zero vector).
    """
    d = grid.kept_distributions()
    k = len(grid.digits)
    out = []
    for i in range(k):
        for j in range(k):
            if i != j:
                a, b = grid.digits[i], grid.digits[j]
                steered, unsteered = d[i, j, b], d[j, j, b]
                out.append(steered[a] > unsteered[a] and steered[b] < unsteered[b])
    return np.array(out)


def _permuted(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> tuple[float, np.ndarray]:
    """Spearman's rho of ``x`` and ``y``, and its ``n`` values under random pairings of the cells (seeded)."""
    rx, ry = ranks(np.asarray(x, float).ravel()), ranks(np.asarray(y, float).ravel())
    rx, ry = rx - rx.mean(), ry - ry.mean()
    perms = np.argsort(np.random.default_rng(seed).random((n, len(ry))), axis=1)
    shuffled = ry[perms]
    rho = (shuffled @ rx) / (np.linalg.norm(rx) * np.linalg.norm(shuffled, axis=1))
    return float(rx @ ry / (np.linalg.norm(rx) * np.linalg.norm(ry))), rho


def permutation_p(x: np.ndarray, y: np.ndarray, n: int = 10_000, seed: int = 0) -> float:
    """One-sided p-value of Spearman's rho between ``x`` and ``y`` against ``n`` random pairings (seeded)."""
    observed, rho = _permuted(x, y, n, seed)
    return float((np.sum(rho >= observed - 1e-12) + 1) / (n + 1))


def rank_threshold(study: StudyTables, n: int = 10_000, seed: int = 0) -> float:
    """The rho of claim "ranks" at which p reaches ``RANK_P``, for a grid without ties; it holds above it."""
    off = ~np.eye(study.grid.shape[0], dtype=bool)
    _, rho = _permuted(np.arange(int(off.sum())), study.grid[off], n, seed)
    return float(np.sort(rho)[-int(np.ceil(RANK_P * (n + 1)))])


def _best_layer_share(grids: dict[str, GridResult]) -> float:
    losses = np.stack([grids[h].loss for h in _POSTS])  # [layer, a, b]
    off = ~np.eye(losses.shape[1], dtype=bool)
    return float((losses.argmin(0) == 0)[off].mean())


def _claim_flip(grids: dict[str, GridResult], study: StudyTables) -> tuple[bool, float]:
    g = grids["layer0.post"]
    return bool(flips_as_the_study_says(g).all()), float(g.off_diagonal("flip_rate").mean())


def _claim_any_layer(grids: dict[str, GridResult], study: StudyTables) -> tuple[bool, float]:
    shares = [flips_as_the_study_says(grids[h]).mean() for h in _POSTS[:4]]  # the hidden layers
    return bool(min(shares) == 1.0), float(min(shares))


def _claim_damage(grids: dict[str, GridResult], study: StudyTables) -> tuple[bool, float]:
    g = grids["layer0.post"]
    return bool(g.off_diagonal("loss").mean() >= DAMAGE_FACTOR * g.normal["loss"].mean()), float(g.loss.mean())


def _claim_3_1(grids: dict[str, GridResult], study: StudyTables) -> tuple[bool, float]:
    i, j = grids["layer0.post"].digits.index(3), grids["layer0.post"].digits.index(1)
    losses = [grids[h].loss[i, j] for h in _POSTS]
    return bool(int(np.argmin(losses)) == 0), float(losses[0])


def _claim_best_layer(grids: dict[str, GridResult], study: StudyTables) -> tuple[bool, float]:
    share = _best_layer_share(grids)
    return share >= BEST_LAYER_SHARE, share


def _claim_ranks(grids: dict[str, GridResult], study: StudyTables) -> tuple[bool, float]:
    g = grids["layer0.post"]
    off = ~np.eye(10, dtype=bool)
    ours, theirs = g.loss[off], study.grid[off]
    return permutation_p(ours, theirs) < RANK_P, spearman(ours, theirs)


@dataclasses.dataclass(frozen=True)
class Claim:
    """A claim of the study: what it says, what number stands for it, and how a run decides it.

    ``rule`` says in words when a run's verdict is "holds"; ``line`` gives the number's value
    where the verdict switches, when the verdict is a threshold on the number itself (else None).
    """

    key: str
    statement: str
    number: str
    study_value: str
    decide: Callable[[dict[str, GridResult], StudyTables], tuple[bool, float]]
    rule: str = ""
    line: Callable[[StudyTables], Optional[float]] = lambda study: None

    def holds_when(self, study: StudyTables) -> str:
        """``rule``, with the threshold for ``study``'s tables written in."""
        line = self.line(study)
        return self.rule.format(line=line) if line is not None else self.rule


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "flip",
        "adding a - b at layer 0 makes the model more likely to answer a and less likely b on b's images, "
        "for every pair",
        "mean flip rate (share of b's images read as a)",
        "not reported",
        _claim_flip,
        "every one of the 90 pairs flips (a more likely, b less likely); not a threshold on the number",
    ),
    Claim(
        "any_layer",
        "... at any hidden layer, before or after a nonlinearity",
        "smallest share of pairs that flip, over the four hidden layers",
        "all pairs (claimed)",
        _claim_any_layer,
        "the number is 1: every pair flips at every hidden layer",
        lambda study: 1.0,
    ),
    Claim(
        "damage",
        f"generalization is destroyed: the loss on the other digits rises at least {DAMAGE_FACTOR:g}-fold",
        "mean loss over the 100 cells",
        "~7.4 (from ~0.089)",
        _claim_damage,
        f"the mean loss off the diagonal is at least {DAMAGE_FACTOR:g} times the unsteered loss",
    ),
    Claim(
        "3_1",
        "for 3 - 1, intervening at layer 0 gives the lowest loss without 1",
        "loss of 3 - 1 at layer 0",
        "7.80",
        _claim_3_1,
        "layer 0 gives the lowest of the five layers' losses",
    ),
    Claim(
        "best_layer",
        f"layer 0 is the best layer for every pair (the study generalised this from 3 - 1); holds "
        f"for at least {BEST_LAYER_SHARE:.0%} of the 90 pairs",
        "share of pairs best at layer 0",
        "assumed 100%",
        _claim_best_layer,
        f"the number is at least {BEST_LAYER_SHARE:g}",
        lambda study: BEST_LAYER_SHARE,
    ),
    Claim(
        "ranks",
        f"our grid ranks the pairs like the study's (one-sided permutation p < {RANK_P:g})",
        "Spearman rho over the 90 off-diagonal cells",
        "1 (itself)",
        _claim_ranks,
        f"the permutation p-value is below {RANK_P:g}: the number above about {{line:.2f}}",
        rank_threshold,
    ),
)


def evaluate_claims(grids: dict[str, GridResult], study: StudyTables) -> dict[str, tuple[bool, float]]:
    """``{claim key: (holds, number)}`` for one run (grids at least at layer0.post ... layer4.post)."""
    return {c.key: c.decide(grids, study) for c in CLAIMS}


@dataclasses.dataclass(frozen=True)
class ClaimSummary:
    """One claim over many runs: how often it holds, and its number's median and range."""

    claim: Claim
    holds: int
    runs: int
    median: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        if self.runs == 1:
            return "holds in its one run" if self.holds else "fails in its one run"
        if self.holds == self.runs:
            return f"holds in all {self.runs} runs"
        return f"holds in {self.holds} of {self.runs} runs" if self.holds else f"fails in all {self.runs} runs"


def summarise(results: Sequence[dict[str, tuple[bool, float]]]) -> list[ClaimSummary]:
    """Each claim's verdict count and the median and range of its number over ``results`` (one per run)."""
    out = []
    for c in CLAIMS:
        verdicts = [r[c.key][0] for r in results]
        values = np.array([r[c.key][1] for r in results])
        out.append(
            ClaimSummary(
                c, int(sum(verdicts)), len(results), float(np.median(values)), float(values.min()), float(values.max())
            )
        )
    return out
