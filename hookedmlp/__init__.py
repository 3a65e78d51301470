"""hookedmlp: hook points, activation caching and steering for small networks, the TransformerLens way."""

from hookedmlp.cache import ActivationCache
from hookedmlp.checkpoint import load_checkpoint as load
from hookedmlp.config import LeNetConfig, MLPConfig, ResidualConfig
from hookedmlp.context import HookContext
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
    SteeringError,
    UnitIndexError,
    UnsupportedNetworkError,
    UsageError,
)
from hookedmlp.hook_points import HookHandle, HookPoint
from hookedmlp.hooked import HookedRoot, HookGroup
from hookedmlp.interface import HookedModel
from hookedmlp.labelled import DataWarning
from hookedmlp.layout import Layout
from hookedmlp.model import HookedLayer, HookedMLP
from hookedmlp.modules import Reshape
from hookedmlp.residual import ResidualMLP
from hookedmlp.steering import SteeringVector, SteeringWarning

__version__ = "0.2.0"

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
    "SteeringError",
    "SteeringVector",
    "SteeringWarning",
    "UnitIndexError",
    "UnsupportedNetworkError",
    "UsageError",
    "load",
    "__version__",
]
