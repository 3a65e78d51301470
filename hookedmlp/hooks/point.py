"""HookPoint: an identity module that runs the hooks attached to it (TransformerLens' semantics).

A hook is ``fn(activation, *, hook)``, called with ``hook=`` the HookPoint as a keyword, so
``def f(act, hook)`` and ``def f(act, *, hook)`` both work. Returning a tensor replaces the
activation downstream (it must keep the activation's shape, dtype and device: a mistake raises
here, naming the hook); returning ``None`` keeps it. Backward hooks get the gradient and may
return a tensor, ``(tensor,)`` or ``None``; those attached when the forward pass reaches the
point run when the gradient flows back through it, unless removed before. Each ``add_hook``
returns a ``HookHandle`` whose ``remove()`` detaches exactly that hook.

With ``enable_reshape(conversion)``, hooks see ``conversion.convert(activation)`` and a result
they return goes back through ``conversion.revert`` (TransformerLens' hook conversions).

A hook point carries one tensor: called with anything else while hooks are attached, it raises,
naming itself. Called a second time in one forward pass of its model, it warns (``HookWarning``):
its hooks run at each call, so a cache keeps the last activation and a steering vector is added
twice.
"""

import contextvars
import re
from collections.abc import Callable
from typing import Any, Optional

import torch
from torch import Tensor, nn

from hookedmlp.errors import ArgumentTypeError, InputDtypeError, ShapeError, UsageError, warn
from hookedmlp.hooks.handle import (
    SELECTIONS,
    Direction,
    HookFn,
    HookHandle,
    Observer,
    check_hook_args,
    matches,
    selected_lists,
)

__all__ = [
    "HookPoint",
    "HookHandle",
    "HookFn",
    "HookWarning",
    "Direction",
    "Observer",
    "PASS",
    "SELECTIONS",
    "check_hook_args",
    "hooks_suppressed",
]

# Callables run before a hook that may edit an activation in place (caches copy what they hold).
_GUARDS: contextvars.ContextVar[tuple[Callable[[Tensor], None], ...]] = contextvars.ContextVar("guards", default=())
# Bumped by every add and remove of a hook on any HookPoint: a model skips its hook points while it stays put.
HOOK_EPOCH = [0]
# Inside ``hooks_suppressed()`` only Observer hooks run: a clean pass of the bare network.
_SUPPRESSED: contextvars.ContextVar[bool] = contextvars.ContextVar("suppressed", default=False)
# The token of the forward pass of a HookedRoot running in this thread (None outside one).
PASS: contextvars.ContextVar[Optional[object]] = contextvars.ContextVar("hookedmlp_pass", default=None)


class HookWarning(UserWarning):
    """A hook point called a second time in one forward pass: its hooks run at each call."""


class _Scoped:
    """Sets a context variable for a ``with`` block; one object may be entered again, also nested."""

    def __init__(self, var: contextvars.ContextVar[Any], value: Callable[[], Any]) -> None:
        self._var, self._value, self._tokens = var, value, []

    def __enter__(self) -> None:
        self._tokens.append(self._var.set(self._value()))

    def __exit__(self, *exc: object) -> None:
        self._var.reset(self._tokens.pop())


def hooks_suppressed() -> _Scoped:
    """Within this context (in this thread only), no hook runs except ``Observer`` hooks."""
    return _Scoped(_SUPPRESSED, lambda: True)


def guarding(guard: Callable[[Tensor], None]) -> _Scoped:
    """Call ``guard(activation)`` before every non-Observer hook runs, within this context and thread."""
    return _Scoped(_GUARDS, lambda: (*_GUARDS.get(), guard))


class HookPoint(nn.Module):
    """Identity module that runs its forward hooks and registers its backward hooks.

    ``name`` is set by the owning model (its attribute path, e.g. ``"layer0.post"``);
    ``ctx`` is a dict hooks may use to share state, emptied by ``clear_context()``;
    ``hook_conversion`` is set by ``enable_reshape``.

    Examples:
        >>> point = HookPoint()
        >>> with point.add_hook(lambda act, hook: act + 1):
        ...     point(torch.zeros(2)).tolist()
        [1.0, 1.0]
    """

    def __init__(self) -> None:
        super().__init__()
        self.name: Optional[str] = None
        self.fwd_hooks: list[HookHandle] = []
        self.bwd_hooks: list[HookHandle] = []
        self.ctx: dict[Any, Any] = {}
        self.volatile = False  # an in-place op later in the pass edits this activation: a cache must copy it
        self.hook_conversion: Optional[Any] = None
        self._pass: Optional[object] = None  # the last pass that called this point with hooks attached

    def add_hook(
        self,
        hook: HookFn,
        dir: Direction = "fwd",
        is_permanent: bool = False,
        level: Optional[int] = None,
        prepend: bool = False,
    ) -> HookHandle:
        """Attach ``hook``, after the others (before them with ``prepend``); returns its handle."""
        check_hook_args(hook, dir)
        handle = HookHandle(self, hook, dir, is_permanent, level)
        hooks = self.fwd_hooks if dir == "fwd" else self.bwd_hooks
        hooks.insert(0, handle) if prepend else hooks.append(handle)
        HOOK_EPOCH[0] += 1
        return handle

    def add_perma_hook(self, hook: HookFn, dir: Direction = "fwd") -> HookHandle:
        """``add_hook(hook, dir, is_permanent=True)``: kept by ``remove_hooks`` and ``reset_hooks``."""
        return self.add_hook(hook, dir=dir, is_permanent=True)

    def _detach(self, handle: HookHandle) -> None:
        hooks = self.fwd_hooks if handle.dir == "fwd" else self.bwd_hooks
        for i, h in enumerate(hooks):
            if h is handle:
                del hooks[i]
                HOOK_EPOCH[0] += 1
                return

    def has_hooks(self, dir: str = "both", including_permanent: bool = True, level: Optional[int] = None) -> bool:
        """Whether a hook is attached in ``dir`` (``"fwd"``, ``"bwd"``, ``"both"``), optionally at one level."""
        return any(matches(h, including_permanent, level) for hooks in selected_lists(self, dir) for h in hooks)

    def remove_hooks(self, dir: str = "fwd", including_permanent: bool = False, level: Optional[int] = None) -> None:
        """Remove the hooks in ``dir`` (default ``"fwd"``, as in TransformerLens), permanent ones only if asked."""
        for hooks in selected_lists(self, dir):
            for h in list(hooks):
                if matches(h, including_permanent, level):
                    h.remove()

    def clear_context(self) -> None:
        self.ctx = {}

    def enable_reshape(self, hook_conversion: Optional[Any] = None) -> None:
        """Show hooks ``hook_conversion.convert(activation)``; what they return goes through ``.revert``.

        ``hook_conversion`` is a ``BaseTensorConversion`` (``hookedmlp.hooks.conversion``), or any
        object with ``convert`` and ``revert`` methods; ``None`` turns the conversion off.
        """
        if hook_conversion is not None and not all(
            callable(getattr(hook_conversion, m, None)) for m in ("convert", "revert")
        ):
            raise ArgumentTypeError(
                f"enable_reshape() takes a BaseTensorConversion (an object with convert and revert methods) or None, "
                f"got {type(hook_conversion).__name__}"
            )
        self.hook_conversion = hook_conversion

    def layer(self) -> int:
        """The layer index in this point's name (``layer3.post`` -> 3, ``blocks.2.hook_mlp_out`` -> 2)."""
        found = re.match(r"^(?:layer(\d+)|blocks\.(\d+))\.", self.name or "")
        if found is None:
            raise UsageError(
                f"hook point {self.name!r} has no layer index; expected a name like 'layer3.post' or 'blocks.2.hook_x'"
            )
        return int(found.group(1) or found.group(2))

    def forward(self, x: Any) -> Any:
        """Run the forward hooks on ``x`` (and register the backward ones); return the result.

        Without hooks, ``x`` is returned as it is (whatever it is, as in TransformerLens); with
        hooks it must be a tensor.
        """
        hooks = self.fwd_hooks
        if not hooks and not self.bwd_hooks:
            return x
        self._check_call(x)
        if self.bwd_hooks and torch.is_grad_enabled():
            x = self._attach_bwd(x)
        if not hooks:
            return x
        suppressed = _SUPPRESSED.get()
        guards = _GUARDS.get()
        conv = self.hook_conversion
        # A copy when several hooks run: one of them may remove itself (or another) mid-pass.
        for handle in hooks if len(hooks) == 1 else list(hooks):
            if not handle.observer:
                if suppressed:
                    continue
                for guard in guards:
                    guard(x)
            out = handle.fn(x if conv is None else conv.convert(x), hook=self)
            if out is not None:
                x = self._checked(out if conv is None else conv.revert(out), x, handle)
        return x

    def _check_call(self, x: Any) -> None:
        """Raise unless ``x`` is a tensor; warn when this point runs a second time in one pass of its model."""
        if not isinstance(x, Tensor):
            size = f" of {len(x)}" if isinstance(x, (tuple, list)) else ""
            raise ArgumentTypeError(
                f"hook point {self.name!r} was called with a {type(x).__name__}{size}, but hooks and caches need one "
                "tensor per hook point; call a HookPoint on each tensor in forward (e.g. a = self.hook_a(a) and "
                "b = self.hook_b(b))"
            )
        token = PASS.get()
        if token is None:  # not inside a model's pass (a bare HookPoint, or model.forward called directly)
            return
        state = self.__dict__  # (not nn.Module.__setattr__/__getattr__: this runs at every call)
        if state.get("_pass") is not token:
            state["_pass"] = token
        elif state.get("_warned") is not token:  # once per pass
            state["_warned"] = token
            warn(
                f"hook point {self.name!r} ran twice in one forward pass: its hooks run at each call, so a steering "
                "vector or intervention is applied twice and a cache keeps only the last activation; give each call "
                "its own HookPoint",
                HookWarning,
            )

    def _checked(self, out: Any, x: Tensor, handle: HookHandle) -> Tensor:
        if not isinstance(out, Tensor):
            raise ArgumentTypeError(
                f"hook {handle!r} returned {type(out).__name__}; a hook must return a Tensor or None"
            )
        if out.shape != x.shape:
            raise ShapeError(
                f"hook {handle!r} returned shape {list(out.shape)}, expected {list(x.shape)} "
                f"(the shape of the activation at {self.name!r})"
            )
        if out.dtype is not x.dtype or out.device != x.device:
            raise InputDtypeError(
                f"hook {handle!r} returned a {out.dtype} tensor on {out.device}, expected "
                f"{x.dtype} on {x.device} (the activation at {self.name!r}); convert it with "
                f".to({x.dtype})" + ("" if out.device == x.device else f" and .to({str(x.device)!r})")
            )
        return out

    def _attach_bwd(self, x: Tensor) -> Tensor:
        if not x.requires_grad:  # an input leaf: make it part of the graph so its gradient exists
            x = x.detach().requires_grad_(True)
        # A fresh alias owned by this pass: the hooks see exactly the gradient flowing through this
        # point, later points first, and the registration dies with the graph.
        x = x.view_as(x)
        active = list(self.bwd_hooks)
        x.register_hook(lambda grad: self._run_bwd(grad, active))
        return x

    def _run_bwd(self, grad: Tensor, active: list[HookHandle]) -> Tensor:
        conv = self.hook_conversion
        for handle in active:  # the hooks attached at forward time, less those removed since
            if handle.attached:
                out = handle.fn(grad if conv is None else conv.convert(grad), hook=self)
                if isinstance(out, tuple) and len(out) == 1:
                    out = out[0]
                if out is not None:
                    grad = self._checked(out if conv is None else conv.revert(out), grad, handle)
        return grad

    def __repr__(self) -> str:
        bits = [f"name={self.name!r}"] if self.name is not None else []
        bits += [f"{len(h)} {d}" for d, h in (("fwd", self.fwd_hooks), ("bwd", self.bwd_hooks)) if h]
        return f"HookPoint({', '.join(bits)})"
