"""analysis: the study's grids, sweeps and distributions, built on hookedmlp's public API.

Figures live in ``analysis.figures`` (the only module that imports plotly); import it
explicitly.
"""

from analysis.distributions import steered_distributions
from analysis.grid import GridResult, steering_grid
from analysis.sweep import all_pairs_sweep, coeff_sweep, layer_sweep

__all__ = ["GridResult", "steering_grid", "layer_sweep", "coeff_sweep", "all_pairs_sweep", "steered_distributions"]
