"""HookHandle: one hook attached to one hook point, and what describes a hook (its function, direction, kind).

``HookPoint.add_hook`` makes them (hooks/point.py); ``HookGroup`` holds the handles of one
``add_hook`` on several hook points.
"""

import itertools
from collections.abc import Callable
from typing import Any, Literal, Optional

from torch import Tensor

from hookedmlp.checks import check_choice
from hookedmlp.errors import ArgumentTypeError

__all__ = [
    "HookHandle",
    "HookGroup",
    "HookFn",
    "Direction",
    "DIRECTIONS",
    "SELECTIONS",
    "Observer",
    "check_hook_args",
    "matches",
    "selected_lists",
]

HookFn = Callable[..., Optional[Tensor]]
Direction = Literal["fwd", "bwd"]
DIRECTIONS = ("fwd", "bwd")
SELECTIONS = ("fwd", "bwd", "both")  # what a method that lists or removes hooks may be asked for
_HANDLE_IDS = itertools.count(1)  # as PyTorch's RemovableHandle.id: unique, counting up


class Observer:
    """Base class of hook functions that only read activations (caches): they run even in clean passes."""


def check_hook_args(fn: Any, dir: Any) -> None:
    """Raise unless ``fn`` is callable and ``dir`` is ``"fwd"`` or ``"bwd"``."""
    check_choice(dir, DIRECTIONS, "dir")
    if not callable(fn):
        raise ArgumentTypeError(f"hook function must be callable as fn(activation, hook=...), got {type(fn).__name__}")


class HookHandle:
    """One hook attached to one hook point; ``remove()`` detaches exactly it (idempotent).

    A context manager that removes the hook on exit. ``user_hook``, ``is_permanent`` and
    ``context_level`` are TransformerLens' ``LensHandle`` fields; ``handle.hook.remove()`` and
    ``handle.hook.id`` (unique, counting up as PyTorch's handle ids do) work as there.
    """

    __slots__ = ("_point", "fn", "dir", "is_permanent", "context_level", "observer", "id", "__weakref__")

    def __init__(self, point: Any, fn: HookFn, dir: Direction, is_permanent: bool, level: Optional[int]) -> None:
        self._point: Optional[Any] = point  # the HookPoint
        self.fn = fn
        self.dir = dir
        self.is_permanent = is_permanent
        self.context_level = level
        self.observer = isinstance(fn, Observer)
        self.id = next(_HANDLE_IDS)

    @property
    def user_hook(self) -> HookFn:
        return self.fn

    @property
    def hook(self) -> "HookHandle":
        return self

    @property
    def name(self) -> str:
        """The hook point's name, or ``"<removed>"`` once removed."""
        return str(self._point.name) if self._point is not None else "<removed>"

    @property
    def attached(self) -> bool:
        return self._point is not None

    def remove(self) -> None:
        point, self._point = self._point, None
        if point is not None:
            point._detach(self)

    def __enter__(self) -> "HookHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        fn_name = getattr(self.fn, "__qualname__", type(self.fn).__name__)
        extra = (", permanent" if self.is_permanent else "") + ("" if self.attached else ", removed")
        return f"HookHandle({self.name!r}, {self.dir}, fn={fn_name}{extra})"


def matches(handle: HookHandle, including_permanent: bool, level: Optional[int]) -> bool:
    return (including_permanent or not handle.is_permanent) and (level is None or handle.context_level == level)


def selected_lists(point: Any, dir: str) -> list[list[HookHandle]]:
    """``point``'s hook lists in ``dir`` (``"fwd"``, ``"bwd"`` or ``"both"``, checked)."""
    check_choice(dir, SELECTIONS, "dir")
    return (
        [point.fwd_hooks, point.bwd_hooks] if dir == "both" else [point.fwd_hooks if dir == "fwd" else point.bwd_hooks]
    )


class HookGroup(list):
    """The handles of one ``add_hook`` on several hook points; ``remove()`` (or leaving ``with``) removes them all."""

    def remove(self) -> None:  # type: ignore[override]
        for handle in self:
            handle.remove()

    def __enter__(self) -> "HookGroup":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
