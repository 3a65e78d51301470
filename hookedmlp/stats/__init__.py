"""Statistics of activations: per-class moments streamed over a data set, and linear probes."""

from hookedmlp.stats.class_stats import ClassStatistics, class_statistics
from hookedmlp.stats.probe import ProbeResult, linear_probe

__all__ = ["ClassStatistics", "class_statistics", "ProbeResult", "linear_probe"]
