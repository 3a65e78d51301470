"""The study's published tables (shipped in ``analysis/seed_data`` with attribution) and rank correlation."""

import csv
import dataclasses
from importlib import resources

import numpy as np

from hookedmlp import ShapeError

__all__ = ["StudyTables", "study_tables", "spearman", "ranks"]


@dataclasses.dataclass(frozen=True)
class StudyTables:
    """The post's 10 x 10 layer-0 loss grid (rows a, columns b), its "normal" row, and its 3 - 1 layer sweep."""

    grid: np.ndarray
    normal: np.ndarray
    sweep_layers: list[int]
    sweep_loss: np.ndarray


def study_tables() -> StudyTables:
    """The study's tables, read from the CSVs in ``analysis/seed_data``.

    Examples:
        >>> study_tables().grid[3, 1]
        np.float64(12.7)
    """
    root = resources.files(__package__) / "seed_data"
    with (root / "grid_layer0.csv").open() as f:
        rows = list(csv.reader(f))
    body = {r[0]: [float(v) for v in r[1:]] for r in rows[1:]}
    grid = np.array([body[str(a)] for a in range(10)])
    with (root / "layer_sweep_3_minus_1.csv").open() as f:
        sweep = list(csv.reader(f))[1:]
    return StudyTables(
        grid=grid,
        normal=np.array(body["normal"]),
        sweep_layers=[int(r[0]) for r in sweep],
        sweep_loss=np.array([float(r[1]) for r in sweep]),
    )


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 0, ties sharing their average rank."""
    order = np.argsort(x, kind="mergesort")
    out = np.empty(len(x))
    out[order] = np.arange(len(x), dtype=float)
    for value in np.unique(x):  # ties share their average rank
        tied = x == value
        out[tied] = out[tied].mean()
    return out


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of two arrays of one size (flattened; ties get average ranks)."""
    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    if x.shape != y.shape or len(x) < 2:
        raise ShapeError(f"spearman needs two arrays of one length >= 2, got {x.shape} and {y.shape}")
    rx, ry = ranks(x), ranks(y)
    return float(np.corrcoef(rx, ry)[0, 1])
