"""Steering vectors (activation additions) and the other interventions: ablation, patching, clamping."""

from hookedmlp.data.labelled import METHODS
from hookedmlp.steering.classes import class_activations
from hookedmlp.steering.contrast import build_steering_vector
from hookedmlp.steering.provenance import SteeringWarning, model_fingerprint, warn_training_mode
from hookedmlp.steering.vector import SteeringVector

__all__ = [
    "SteeringVector",
    "SteeringWarning",
    "METHODS",
    "build_steering_vector",
    "class_activations",
    "model_fingerprint",
    "warn_training_mode",
]
