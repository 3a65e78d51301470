"""analysis: the study's grids, sweeps and distributions, built on hookedmlp's public API.

Figures live in ``analysis.figures`` (the only module that imports plotly); import it explicitly.
"""

from analysis.distributions import steered_distributions
from analysis.engine import Addition, evaluate_additions
from analysis.grid import GridResult, steering_grid
from analysis.hook_classes import hook_classes
from analysis.metrics import METRICS
from analysis.steerability import Steerability, SteerSettings, steerability
from analysis.sweep import all_pairs_sweep, coeff_sweep, layer_sweep

__all__ = [
    "Addition",
    "GridResult",
    "METRICS",
    "evaluate_additions",
    "steering_grid",
    "layer_sweep",
    "coeff_sweep",
    "all_pairs_sweep",
    "steered_distributions",
    "steerability",
    "Steerability",
    "SteerSettings",
    "hook_classes",
]
