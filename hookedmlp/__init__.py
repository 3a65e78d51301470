"""hookedmlp: hook points, activation caching and steering for small networks, the TransformerLens way.

``from hookedmlp import HookedMLP`` works as usual. The names are imported on first use (PEP 562
``__getattr__``), not when the package is: ``python -m hookedmlp`` imports this package before
its ``__main__``, and ``--help`` must answer without importing torch (seconds).
"""

import importlib
from typing import Any

from hookedmlp import _moved

__version__ = "0.2.0"

# Every public name and the module that defines it: one line per name. ``"module:attr"`` exports
# the module's ``attr`` under another name.
_EXPORTS = {
    "ActivationCache": "hookedmlp.hooks.cache",
    "ClassStatistics": "hookedmlp.stats.class_stats",
    "ArgumentTypeError": "hookedmlp.errors",
    "BatchDimError": "hookedmlp.errors",
    "CheckpointError": "hookedmlp.errors",
    "ClusterError": "hookedmlp.errors",
    "ConfigError": "hookedmlp.errors",
    "DataError": "hookedmlp.errors",
    "DataWarning": "hookedmlp.data.labelled",
    "DeviceError": "hookedmlp.errors",
    "FileWriteError": "hookedmlp.errors",
    "HookContext": "hookedmlp.hooks.context",
    "HookedLayer": "hookedmlp.models.chain",
    "HookedMLP": "hookedmlp.models.chain",
    "HookedMLPError": "hookedmlp.errors",
    "HookedGraph": "hookedmlp.models.graph",
    "HookedModel": "hookedmlp.models.api",
    "HookedRoot": "hookedmlp.hooks.root",
    "HookGroup": "hookedmlp.hooks.root",
    "HookHandle": "hookedmlp.hooks.point",
    "HookNameError": "hookedmlp.errors",
    "HookPoint": "hookedmlp.hooks.point",
    "HookWarning": "hookedmlp.hooks.point",
    "InputDtypeError": "hookedmlp.errors",
    "ProbeResult": "hookedmlp.stats.probe",
    "Layout": "hookedmlp.models.layout",
    "LeNetConfig": "hookedmlp.models.configs",
    "MissingExtraError": "hookedmlp.errors",
    "MLPConfig": "hookedmlp.models.configs",
    "Reshape": "hookedmlp.models.modules",
    "ResidualConfig": "hookedmlp.models.configs",
    "ResidualMLP": "hookedmlp.models.residual",
    "ShapeError": "hookedmlp.errors",
    "SizeError": "hookedmlp.errors",
    "SteeringError": "hookedmlp.errors",
    "SteeringVector": "hookedmlp.steering.vector",
    "SteeringWarning": "hookedmlp.steering.provenance",
    "UnitIndexError": "hookedmlp.errors",
    "UnsupportedNetworkError": "hookedmlp.errors",
    "UsageError": "hookedmlp.errors",
    "ablate": "hookedmlp.steering.interventions",
    "capture": "hookedmlp.models.graph",
    "class_statistics": "hookedmlp.stats.class_stats",
    "clamp": "hookedmlp.steering.interventions",
    "linear_probe": "hookedmlp.stats.probe",
    "load": "hookedmlp.files.checkpoint:load_checkpoint",
    "patch": "hookedmlp.steering.interventions",
    "steer": "hookedmlp.steering.contrast",
    "steering_vector": "hookedmlp.steering.contrast:build_steering_vector",
}
# subpackages reachable as attributes (``hookedmlp.data.load_mnist`` after ``import hookedmlp``)
_SUBMODULES = ("checks", "data", "errors", "files", "hooks", "models", "patching", "stats", "steering", "train")

__all__ = [*_EXPORTS, "__version__"]

_moved.install()  # the module paths before the split into folders, as deprecated aliases (no torch imported)


# modules to load with a name: HookedRoot's old methods are installed (as deprecated aliases) by models.api
_WITH = {"HookedRoot": "hookedmlp.models.api"}


def __getattr__(name: str) -> Any:
    if name in _WITH:
        importlib.import_module(_WITH[name])
    if name in _EXPORTS:
        module, _, attr = _EXPORTS[name].partition(":")
        value = getattr(importlib.import_module(module), attr or name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"hookedmlp.{name}")
    else:
        raise AttributeError(f"module 'hookedmlp' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})
