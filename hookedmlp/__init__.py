"""hookedmlp: hook points, activation caching and steering for small networks, the TransformerLens way."""

from hookedmlp import _moved, patching
from hookedmlp.data.labelled import DataWarning
from hookedmlp.errors import (
    ArgumentTypeError,
    BatchDimError,
    CheckpointError,
    ConfigError,
    DataError,
    FileWriteError,
    HookedMLPError,
    HookNameError,
    InputDtypeError,
    ShapeError,
    SizeError,
    SteeringError,
    UnitIndexError,
    UnsupportedNetworkError,
    UsageError,
)
from hookedmlp.files.checkpoint import load_checkpoint as load
from hookedmlp.hooks.cache import ActivationCache
from hookedmlp.hooks.context import HookContext
from hookedmlp.hooks.point import HookHandle, HookPoint
from hookedmlp.hooks.root import HookedRoot, HookGroup
from hookedmlp.models.api import HookedModel
from hookedmlp.models.chain import HookedLayer, HookedMLP
from hookedmlp.models.configs import LeNetConfig, MLPConfig, ResidualConfig
from hookedmlp.models.graph import HookedGraph, capture
from hookedmlp.models.layout import Layout
from hookedmlp.models.modules import Reshape
from hookedmlp.models.residual import ResidualMLP
from hookedmlp.steering.contrast import build_steering_vector as steering_vector
from hookedmlp.steering.contrast import steer
from hookedmlp.steering.interventions import ablate, clamp, patch
from hookedmlp.steering.provenance import SteeringWarning
from hookedmlp.steering.vector import SteeringVector

__version__ = "0.2.0"

_moved.install()  # the module paths before the split into folders, as deprecated aliases

__all__ = [
    "ActivationCache",
    "ArgumentTypeError",
    "BatchDimError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DataWarning",
    "FileWriteError",
    "HookContext",
    "HookedGraph",
    "HookedLayer",
    "HookedMLP",
    "HookedMLPError",
    "HookedModel",
    "HookedRoot",
    "HookGroup",
    "HookHandle",
    "HookNameError",
    "HookPoint",
    "InputDtypeError",
    "Layout",
    "LeNetConfig",
    "MLPConfig",
    "Reshape",
    "ResidualConfig",
    "ResidualMLP",
    "ShapeError",
    "SizeError",
    "SteeringError",
    "SteeringVector",
    "SteeringWarning",
    "UnitIndexError",
    "UnsupportedNetworkError",
    "UsageError",
    "load",
    "ablate",
    "patching",
    "capture",
    "clamp",
    "patch",
    "steer",
    "steering_vector",
    "__version__",
]
