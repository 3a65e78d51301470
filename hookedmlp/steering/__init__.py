"""Steering vectors (activation additions) and the other interventions: ablation, patching, clamping."""

from hookedmlp.steering.vector import (
    METHODS,
    SteeringVector,
    SteeringWarning,
    build_steering_vector,
    class_activations,
    model_fingerprint,
    warn_training_mode,
)

__all__ = [
    "SteeringVector",
    "SteeringWarning",
    "METHODS",
    "build_steering_vector",
    "class_activations",
    "model_fingerprint",
    "warn_training_mode",
]
