"""hookedmlp: hook points, activation caching and steering for small fully connected networks."""

from hookedmlp.cache import ActivationCache
from hookedmlp.config import LayerSpec, MLPConfig
from hookedmlp.errors import (
    CheckpointError,
    DataError,
    HookedMLPError,
    HookNameError,
    InputDtypeError,
    ShapeError,
    SteeringError,
    UsageError,
)
from hookedmlp.hook_points import HookHandle, HookPoint
from hookedmlp.hooked import HookedRoot, HookGroup
from hookedmlp.model import HookedLayer, HookedMLP
from hookedmlp.steering import SteeringVector, SteeringWarning

__version__ = "0.1.0"

__all__ = [
    "ActivationCache",
    "CheckpointError",
    "DataError",
    "HookedLayer",
    "HookedMLP",
    "HookedMLPError",
    "HookedRoot",
    "HookGroup",
    "HookHandle",
    "HookNameError",
    "HookPoint",
    "InputDtypeError",
    "LayerSpec",
    "MLPConfig",
    "ShapeError",
    "SteeringError",
    "SteeringVector",
    "SteeringWarning",
    "UsageError",
    "__version__",
]
