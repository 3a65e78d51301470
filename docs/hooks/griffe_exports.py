"""Griffe extension: hookedmlp's public names, from its table of lazy exports, as members of the package.

``hookedmlp/__init__.py`` imports its names on first use (so that ``python -m hookedmlp --help``
needs no torch): they are entries of the dict ``_EXPORTS``, not import statements, and a static
reader such as griffe would not find ``hookedmlp.HookedRoot``. This reads the same table and adds
each name as an alias of the object it points to, as an import would.
"""

import ast
from typing import Any

import griffe

PACKAGE = "hookedmlp"
TABLE = "_EXPORTS"


def exports(node: ast.Module) -> dict[str, str]:
    """``{name: "module.attribute"}`` from the module's ``_EXPORTS = {name: "module[:attribute]"}``."""
    for statement in node.body:
        if isinstance(statement, ast.Assign) and [getattr(t, "id", None) for t in statement.targets] == [TABLE]:
            table = ast.literal_eval(statement.value)
            return {name: f"{spec.partition(':')[0]}.{spec.partition(':')[2] or name}" for name, spec in table.items()}
    return {}


class LazyExports(griffe.Extension):
    """Add the names of ``hookedmlp._EXPORTS`` to the ``hookedmlp`` module, as aliases of their targets."""

    def on_module_members(self, *, node: Any, mod: griffe.Module, **kwargs: Any) -> None:
        if mod.path != PACKAGE or not isinstance(node, ast.Module):
            return
        for name, target in exports(node).items():
            mod.set_member(name, griffe.Alias(name, target, parent=mod))
