"""Activation patching and attribution patching over every hook point, on any hooked model.

See docs/patching.md. ``activation_patch`` is exact (graph-cut suffix passes, batched);
``attribution_patch`` estimates the same numbers from gradients (one forward and one backward
pass; integrated gradients as an option); ``compare`` says how far an estimate is from the exact
answer.
"""

from hookedmlp.patching.activation import CHUNK_ELEMENTS, activation_patch, plain_activation_patch
from hookedmlp.patching.agreement import Agreement, compare
from hookedmlp.patching.attribution import METHODS, attribution_patch
from hookedmlp.patching.metrics import METRICS, PatchMetric
from hookedmlp.patching.pairs import DIRECTIONS, PER
from hookedmlp.patching.result import Entry, PatchResult

__all__ = [
    "Agreement",
    "CHUNK_ELEMENTS",
    "DIRECTIONS",
    "METHODS",
    "METRICS",
    "PER",
    "Entry",
    "PatchMetric",
    "PatchResult",
    "activation_patch",
    "attribution_patch",
    "compare",
    "plain_activation_patch",
]
