"""Deprecated aliases: each module's path before the package was split into folders, and where it lives now.

``import hookedmlp.hook_points`` still works and warns (``DeprecationWarning``) with the new
path; the alias holds the new module's names, so its classes and functions are the same objects.
"""

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from typing import Any, Optional

__all__ = ["MOVED", "install"]

MOVED = {
    "hookedmlp.hook_points": "hookedmlp.hooks.point",
    "hookedmlp.context": "hookedmlp.hooks.context",
    "hookedmlp.caching": "hookedmlp.hooks.recording",
    "hookedmlp.cache": "hookedmlp.hooks.cache",
    "hookedmlp.hooked": "hookedmlp.hooks.root",
    "hookedmlp.interface": "hookedmlp.models.facts",
    "hookedmlp.model": "hookedmlp.models.chain",
    "hookedmlp.layout": "hookedmlp.models.layout",
    "hookedmlp.wrap": "hookedmlp.models.capture",
    "hookedmlp.modules": "hookedmlp.models.modules",
    "hookedmlp.residual": "hookedmlp.models.residual",
    "hookedmlp.config": "hookedmlp.models.configs",
    "hookedmlp.state_dict": "hookedmlp.models.state_dict",
    "hookedmlp.interventions": "hookedmlp.steering.interventions",
    "hookedmlp.labelled": "hookedmlp.data.labelled",
    "hookedmlp.io": "hookedmlp.files.atomic",
    "hookedmlp.load_errors": "hookedmlp.files.load_errors",
    "hookedmlp.checkpoint": "hookedmlp.files.checkpoint",
    "hookedmlp.cli": "hookedmlp_cli.commands",
}
# modules whose parts moved to more than one place: io's readers, labelled's class_activations
_EXTRA = {
    "hookedmlp.io": ("hookedmlp.files.safe_load",),
    "hookedmlp.labelled": ("hookedmlp.steering.classes",),
    "hookedmlp.interface": ("hookedmlp.models.api",),
}


class _Alias(importlib.abc.Loader):
    def __init__(self, old: str) -> None:
        self.old = old

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return types.ModuleType(self.old)

    def exec_module(self, module: types.ModuleType) -> None:
        new = MOVED[self.old]
        warnings.warn(f"{self.old} moved to {new}; import it from there", DeprecationWarning, stacklevel=2)
        names: list[str] = []
        for source in (new, *_EXTRA.get(self.old, ())):
            target = importlib.import_module(source)
            public = getattr(target, "__all__", [n for n in vars(target) if not n.startswith("__")])
            names += public
            module.__dict__.update({k: v for k, v in vars(target).items() if not k.startswith("__")})
        module.__all__ = names
        module.__doc__ = f"Deprecated alias of ``{new}``."


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(fullname))


# HookedRoot's methods before it became TransformerLens' hook surface alone: HookedModel has them now
_METHODS = ("steering_vector", "steer", "ablate", "patch", "clamp", "save", "hook_table")
_CLASS_METHODS = ("load", "from_pretrained")


def _deprecated_method(name: str, impl: Any) -> Any:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        warnings.warn(
            f"HookedRoot.{name} moved to hookedmlp.HookedModel (subclass it instead of HookedRoot), or call "
            f"hookedmlp.{name}(model, ...)"
            if name not in ("save", "hook_table")
            else f"HookedRoot.{name} moved to hookedmlp.HookedModel; subclass it instead of HookedRoot",
            DeprecationWarning,
            stacklevel=2,
        )
        return impl(self, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"Deprecated: ``HookedModel.{name}``."
    return method


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` (once); imports nothing else (``--help`` must stay fast)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())


def install_methods(root: type, model: type) -> None:
    """Put the methods ``HookedRoot`` had before it became TransformerLens' hook surface on it, deprecated.

    Called by ``hookedmlp.models.api`` once ``HookedModel`` (``model``), which has them now, exists.
    """
    for name in _METHODS:
        setattr(root, name, _deprecated_method(name, getattr(model, name)))
    for name in _CLASS_METHODS:
        setattr(root, name, classmethod(_deprecated_method(name, getattr(model, name).__func__)))
