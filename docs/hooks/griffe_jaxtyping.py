"""Griffe extension: show jaxtyping shapes as written, ``Float[Tensor, "batch *example"]``.

Griffe parses every string inside an annotation as a forward reference (in modules without
``from __future__ import annotations``, which hookedmlp may not use), so the shape
``"batch *example"`` renders as the expression ``batch * example``. This puts the string back,
quoted, for every subscript of a jaxtyping dtype (``Float``, ``Int``, ``Shaped``...).
"""

import ast
from collections.abc import Iterator
from typing import Any, Optional, Union

import griffe


def _shape_strings(node: Optional[ast.AST]) -> list[tuple[str, str]]:
    """(dtype, shape) of the ``Dtype[Array, "shape"]`` subscripts under ``node``, in source order."""
    subs = [n for n in ast.walk(node) if isinstance(n, ast.Subscript)] if node is not None else []
    shapes = []
    for sub in sorted(subs, key=lambda n: (n.lineno, n.col_offset)):
        elts = sub.slice.elts if isinstance(sub.slice, ast.Tuple) else []
        if len(elts) == 2 and isinstance(elts[1], ast.Constant) and isinstance(elts[1].value, str):
            shapes.append((ast.unparse(sub.value), elts[1].value))
    return shapes


def _walk(expr: griffe.Expr) -> Iterator[griffe.Expr]:
    yield expr
    for child in expr.iterate(flat=False):
        if isinstance(child, griffe.Expr) and child is not expr:
            yield from _walk(child)


def _is_jaxtyping(sub: griffe.ExprSubscript) -> bool:
    path = sub.left.canonical_path if isinstance(sub.left, griffe.Expr) else str(sub.left)
    return path.startswith("jaxtyping.") and isinstance(sub.slice, griffe.ExprTuple) and len(sub.slice.elements) == 2


def restore_shapes(expr: Union[str, griffe.Expr, None], node: Optional[ast.AST]) -> None:
    """Replace the parsed shapes of ``expr`` (built from ``node``) with the quoted strings."""
    subs = []
    if isinstance(expr, griffe.Expr):
        subs = [e for e in _walk(expr) if isinstance(e, griffe.ExprSubscript) and _is_jaxtyping(e)]
    shapes = [(name, shape) for name, shape in _shape_strings(node) if any(name == str(s.left) for s in subs)]
    if len(shapes) != len(subs):
        return  # something this extension does not understand: leave griffe's rendering
    for sub, (name, shape) in zip(subs, shapes):
        if name == str(sub.left):
            sub.slice.elements[1] = f'"{shape}"'


class JaxtypingShapes(griffe.Extension):
    """Show jaxtyping shape strings as written, in signatures and parameter tables."""

    def on_function_instance(self, *, node: Any, func: griffe.Function, **kwargs: Any) -> None:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return  # inspected, not parsed: no source to read the strings from
        args = node.args
        annotations = {a.arg: a.annotation for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]}
        for a in (args.vararg, args.kwarg):
            if a is not None:
                annotations[a.arg] = a.annotation
        for param in func.parameters:
            restore_shapes(param.annotation, annotations.get(param.name))
        restore_shapes(func.returns, node.returns)

    def on_attribute_instance(self, *, node: Any, attr: griffe.Attribute, **kwargs: Any) -> None:
        if isinstance(node, ast.AnnAssign):
            restore_shapes(attr.annotation, node.annotation)
