"""HookPoint: an identity module that runs the hooks attached to it.

A HookPoint sits at every place an activation can be read or edited. With no
hooks attached it returns its input unchanged. Hooks follow TransformerLens'
signature ``fn(activation, hook) -> Tensor | None``: returning a tensor replaces
the activation for everything downstream, returning ``None`` keeps it.

Each attached hook is a ``HookHandle``; ``handle.remove()`` removes exactly
that hook and nothing else, and may be called any number of times.
"""

import itertools
import weakref
from collections.abc import Callable
from typing import Any, Literal, Optional

import torch
from torch import Tensor, nn

from hookedmlp.errors import InputDtypeError, ShapeError

__all__ = ["HookPoint", "HookHandle", "HookFn", "Direction"]

HookFn = Callable[[Tensor, "HookPoint"], Optional[Tensor]]
Direction = Literal["fwd", "bwd"]

_ids = itertools.count()
# Every HookPoint that currently has a hook attached, for leak checks in tests.
_WITH_HOOKS: "weakref.WeakSet[HookPoint]" = weakref.WeakSet()


def check_hook_args(fn: Any, dir: Any) -> None:
    """Raise unless ``fn`` is callable and ``dir`` is ``"fwd"`` or ``"bwd"`` (shared by every way to add a hook)."""
    if dir not in ("fwd", "bwd"):
        raise ValueError(f"dir must be 'fwd' or 'bwd', got {dir!r}")
    if not callable(fn):
        raise TypeError(f"hook function must be callable as fn(activation, hook), got {type(fn).__name__}")


class HookHandle:
    """One hook attached to one hook point; ``remove()`` detaches exactly it.

    Usable as a context manager: ``with model.add_hook(...):`` removes the hook on exit.
    Handles are made by ``HookPoint.add_hook`` and ``HookedRoot.add_hook``, not directly.

    Args:
        point: the hook point the hook is attached to.
        fn: the hook function ``fn(activation, hook)``.
        dir: ``"fwd"`` (activations) or ``"bwd"`` (gradients).
        is_permanent: whether ``reset_hooks()`` keeps it unless ``including_permanent=True``.

    Examples:
        >>> import torch
        >>> from hookedmlp import HookedMLP, MLPConfig
        >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
        >>> with model.add_hook("layer0.post", lambda act, hook: act * 0) as handle:
        ...     handle
        HookHandle('layer0.post', fwd, fn=<lambda>)
        >>> handle.attached
        False
    """

    __slots__ = ("_point", "fn", "dir", "is_permanent", "id", "__weakref__")

    def __init__(self, point: "HookPoint", fn: HookFn, dir: Direction, is_permanent: bool) -> None:
        self._point: Optional[HookPoint] = point
        self.fn = fn
        self.dir = dir
        self.is_permanent = is_permanent
        self.id = next(_ids)

    @property
    def name(self) -> str:
        """Name of the hook point this hook is (or was) attached to.

        Returns:
            The hook point's name, or ``"<removed>"`` once the hook is removed.

        Examples:
            >>> from hookedmlp import HookedMLP, MLPConfig
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
            >>> handle = model.add_hook("layer1.pre", lambda act, hook: None)
            >>> handle.name
            'layer1.pre'
            >>> handle.remove()
            >>> handle.name
            '<removed>'
        """
        return self._point.name if self._point is not None else "<removed>"

    @property
    def attached(self) -> bool:
        """Whether the hook is still attached.

        Returns:
            ``True`` until ``remove()`` is called (directly or by a context exit).

        Examples:
            >>> from hookedmlp import HookedMLP, MLPConfig
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
            >>> handle = model.add_hook("layer0.post", lambda act, hook: None)
            >>> handle.attached
            True
            >>> handle.remove()
            >>> handle.attached
            False
        """
        return self._point is not None

    def remove(self) -> None:
        """Detach the hook. Idempotent: removing twice is a no-op.

        Examples:
            >>> from hookedmlp import HookedMLP, MLPConfig
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
            >>> handle = model.add_hook("layer0.post", lambda act, hook: None)
            >>> handle.remove()
            >>> handle.remove()
            >>> model.attached_hooks()
            []
        """
        point, self._point = self._point, None
        if point is not None:
            point._detach(self)

    def __enter__(self) -> "HookHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        fn_name = getattr(self.fn, "__qualname__", type(self.fn).__name__)
        state = "" if self.attached else ", removed"
        perm = ", permanent" if self.is_permanent else ""
        return f"HookHandle({self.name!r}, {self.dir}, fn={fn_name}{perm}{state})"


class HookPoint(nn.Module):
    """Identity module that runs its forward hooks and registers its backward hooks.

    ``name`` is the module's attribute path inside the model (``"layer0.post"``),
    set by the owning model.

    Examples:
        >>> import torch
        >>> from hookedmlp import HookPoint
        >>> point = HookPoint()
        >>> handle = point.add_hook(lambda act, hook: act + 1)
        >>> point(torch.zeros(2)).tolist()
        [1.0, 1.0]
        >>> handle.remove()
        >>> point(torch.zeros(2)).tolist()
        [0.0, 0.0]
    """

    def __init__(self) -> None:
        super().__init__()
        self.name = "<unnamed>"
        self.fwd_hooks: list[HookHandle] = []
        self.bwd_hooks: list[HookHandle] = []

    @property
    def has_hooks(self) -> bool:
        """True when at least one forward or backward hook is attached.

        Returns:
            Whether any hook is attached to this point.

        Examples:
            >>> from hookedmlp import HookPoint
            >>> point = HookPoint()
            >>> point.has_hooks
            False
            >>> with point.add_hook(lambda act, hook: None):
            ...     point.has_hooks
            True
        """
        return bool(self.fwd_hooks or self.bwd_hooks)

    def add_hook(self, fn: HookFn, dir: Direction = "fwd", is_permanent: bool = False) -> HookHandle:
        """Attach ``fn``; returns the handle that removes it.

        Args:
            fn: ``fn(activation, hook)``; returns a tensor of the same shape to replace
                the activation (or gradient), or ``None`` to keep it.
            dir: ``"fwd"`` to run on the activation, ``"bwd"`` on its gradient.
            is_permanent: survive ``remove_hooks()`` unless ``including_permanent=True``.

        Returns:
            The ``HookHandle`` of the new hook.

        Raises:
            ValueError: ``dir`` is neither ``"fwd"`` nor ``"bwd"``.
            TypeError: ``fn`` is not callable.

        Examples:
            >>> import torch
            >>> from hookedmlp import HookPoint
            >>> point = HookPoint()
            >>> with point.add_hook(lambda act, hook: act * 2):
            ...     point(torch.ones(3)).tolist()
            [2.0, 2.0, 2.0]
        """
        check_hook_args(fn, dir)
        handle = HookHandle(self, fn, dir, is_permanent)
        (self.fwd_hooks if dir == "fwd" else self.bwd_hooks).append(handle)
        _WITH_HOOKS.add(self)
        return handle

    def _detach(self, handle: HookHandle) -> None:
        hooks = self.fwd_hooks if handle.dir == "fwd" else self.bwd_hooks
        for i, h in enumerate(hooks):
            if h is handle:
                del hooks[i]
                break
        if not self.has_hooks:
            _WITH_HOOKS.discard(self)

    def remove_hooks(self, dir: Literal["fwd", "bwd", "both"] = "both", including_permanent: bool = False) -> None:
        """Remove this point's hooks (permanent ones only if ``including_permanent``).

        Args:
            dir: which hooks to remove: ``"fwd"``, ``"bwd"`` or ``"both"``.
            including_permanent: also remove hooks added with ``is_permanent=True``.

        Examples:
            >>> from hookedmlp import HookPoint
            >>> point = HookPoint()
            >>> _ = point.add_hook(lambda act, hook: None)
            >>> _ = point.add_hook(lambda act, hook: None, is_permanent=True)
            >>> point.remove_hooks()
            >>> len(point.fwd_hooks)
            1
            >>> point.remove_hooks(including_permanent=True)
            >>> point.has_hooks
            False
        """
        groups = [self.fwd_hooks, self.bwd_hooks] if dir == "both" else [self.fwd_hooks if dir == "fwd" else self.bwd_hooks]
        for hooks in groups:
            for h in list(hooks):
                if including_permanent or not h.is_permanent:
                    h.remove()

    def forward(self, x: Tensor) -> Tensor:
        """Run the forward hooks on ``x`` (and register the backward ones); return the result."""
        if self.bwd_hooks and torch.is_grad_enabled():
            if not x.requires_grad:
                # An input leaf: make it part of the graph so its gradient exists.
                x = x.detach().requires_grad_(True)
            # A fresh alias owned by this pass: the hook sees exactly the gradient flowing
            # through this point (later points first), and dies with the graph.
            x = x.view_as(x)
            active = list(self.bwd_hooks)
            x.register_hook(lambda grad: self._run_bwd_hooks(grad, active))
        for handle in list(self.fwd_hooks):
            out = handle.fn(x, self)
            if out is not None:
                if not isinstance(out, Tensor):
                    raise InputDtypeError(
                        f"hook {handle!r} returned {type(out).__name__}; a hook must return a Tensor or None"
                    )
                if out.shape != x.shape:
                    raise ShapeError(
                        f"hook {handle!r} returned shape {tuple(out.shape)}, expected {tuple(x.shape)} "
                        f"(the shape of the activation at {self.name!r})"
                    )
                x = out
        return x

    def _run_bwd_hooks(self, grad: Tensor, active: list[HookHandle]) -> Tensor:
        # The hooks attached at forward time, less those removed since.
        for handle in active:
            if not handle.attached:
                continue
            out = handle.fn(grad, self)
            if out is not None:
                grad = out
        return grad

    def extra_repr(self) -> str:
        """The point's name and its numbers of forward and backward hooks."""
        return f"name={self.name!r}, fwd_hooks={len(self.fwd_hooks)}, bwd_hooks={len(self.bwd_hooks)}"
