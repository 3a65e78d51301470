"""The suite checks every call into hookedmlp and analysis against its annotations (jaxtyping's import hook with
typeguard 2.13, ``addopts`` in pyproject.toml). Two of that machinery's costs are per call and avoidable, with the
same checks made: together they halve the time of the end-to-end tests."""

import inspect
import types
import weakref

import typeguard

# jaxtyping's own mend, kept so that tests/test_typecheck.py can hold the replacement to it
JAXTYPING_SHIM = None


def faster_checks() -> None:
    """Apply both (``tests/conftest.py`` does, in every worker)."""
    _direct_union_check()
    _remembered_signatures()


def _direct_union_check() -> None:
    """jaxtyping mends typeguard 2.13's ``X | Y`` checks by wrapping ``typeguard.check_type`` in a function that
    binds an ``inspect.Signature`` on every one of its million calls in a reproduce run. The same dispatch, with
    typeguard's own parameters (``tests/test_reproduce.py::test_cli_reproduce_quick_no_figures``, one process:
    22.3 s, 15.1 s with this, 11.5 s with ``_remembered_signatures`` too)."""
    shim = typeguard.check_type
    original, union = getattr(shim, "__wrapped__", None), typeguard.check_union
    if original is None or getattr(original, "__module__", None) != "typeguard":
        return  # not jaxtyping's shim (another jaxtyping or typeguard): leave it

    def check_type(argname, value, expected_type, memo=None, *, globals=None, locals=None):
        if type(expected_type) is types.UnionType:
            union(argname, value, expected_type, memo)
        else:
            original(argname, value, expected_type, memo, globals=globals, locals=locals)

    global JAXTYPING_SHIM
    JAXTYPING_SHIM = shim
    check_type.__wrapped__ = original
    typeguard.check_type = check_type


def _remembered_signatures() -> None:
    """typeguard 2.13 computes ``inspect.signature`` of a checked function on every call it checks: remember a
    plain function's (the checked functions are defined once, at import; anything else is computed as before)."""
    known: weakref.WeakKeyDictionary[types.FunctionType, inspect.Signature] = weakref.WeakKeyDictionary()

    def signature(obj, *args, **kwargs):
        if args or kwargs or type(obj) is not types.FunctionType:
            return inspect.signature(obj, *args, **kwargs)
        if obj not in known:
            known[obj] = inspect.signature(obj)
        return known[obj]

    remembering = types.ModuleType("inspect")
    remembering.__dict__.update(vars(inspect))
    remembering.signature = signature
    typeguard.inspect = remembering
