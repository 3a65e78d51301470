"""Hook names: which hook points a name, a glob or a filter selects, with the closest valid names when none does."""

import fnmatch
from collections.abc import Callable, Sequence
from typing import Union

from hookedmlp.errors import ArgumentTypeError, HookNameError, did_you_mean

__all__ = ["NamesFilter", "select", "select_one"]

NamesFilter = Union[None, str, Sequence[str], Callable[[str], bool]]


def select(names: Sequence[str], names_filter: NamesFilter) -> list[str]:
    """The hook names (of ``names``, in order) ``names_filter`` selects (see ``HookedRoot.resolve_names``)."""
    if names_filter is None:
        return list(names)
    if callable(names_filter) and not isinstance(names_filter, str):
        selected = [n for n in names if names_filter(n)]
        if not selected:
            label = getattr(names_filter, "__name__", repr(names_filter))
            raise HookNameError(f"names filter {label!r} matched no hook point; hook names are: {', '.join(names)}")
        return selected
    patterns = [names_filter] if isinstance(names_filter, str) else list(names_filter)
    if not patterns:
        raise HookNameError(
            f"names filter is an empty list; pass None for all hook points or some of: {', '.join(names)}"
        )
    known = set(names)
    chosen: set[str] = set()
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ArgumentTypeError(f"names filter entries must be str, got {type(pattern).__name__} ({pattern!r})")
        if pattern in known:
            chosen.add(pattern)
        elif any(c in pattern for c in "*?["):
            matched = fnmatch.filter(names, pattern)
            if not matched:
                raise HookNameError(f"pattern {pattern!r} matched no hook point{did_you_mean(pattern, list(names))}")
            chosen.update(matched)
        else:
            raise HookNameError(f"unknown hook {pattern!r}{did_you_mean(pattern, list(names))}")
    return [n for n in names if n in chosen]


def select_one(names: Sequence[str], name: object) -> str:
    """``name`` if it names exactly one hook point of ``names`` (no pattern), else ``HookNameError``."""
    if not isinstance(name, str):
        raise ArgumentTypeError(f"expected one hook name (str), got {type(name).__name__}")
    selected = select(names, name)
    if selected != [name]:
        raise HookNameError(
            f"expected one hook name, got the pattern {name!r} matching {len(selected)} hook points; "
            f"pick one, e.g. {selected[0]!r}"
        )
    return name
