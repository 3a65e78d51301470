"""hookedmlp_analysis: the study's grids, sweeps and distributions, built on hookedmlp's public API.

The folder is ``analysis/``; it installs as ``hookedmlp_analysis`` (``import hookedmlp_analysis``), a
name no other project's top-level package will have. In a checkout, ``import analysis`` from the
repository's root still finds the folder itself (another copy of the same modules). Figures live in
``hookedmlp_analysis.figures`` (the only module that imports plotly); import it explicitly.
"""

from hookedmlp_analysis.distributions import steered_distributions
from hookedmlp_analysis.engine import Addition, evaluate_additions
from hookedmlp_analysis.grid import GridResult, steering_grid
from hookedmlp_analysis.hook_classes import hook_classes
from hookedmlp_analysis.metrics import METRICS
from hookedmlp_analysis.steerability import Steerability, SteerSettings, steerability
from hookedmlp_analysis.sweep import all_pairs_sweep, coeff_sweep, layer_sweep

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
