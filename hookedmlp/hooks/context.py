"""HookContext: attach hooks for a ``with`` block, and remove exactly those hooks on exit.

Every name is resolved and every hook function checked when the context is made, so a
mistake raises before anything is attached. Entering attaches all the hooks or none;
leaving, normally or by an exception, removes exactly the handles this entry added. A
context can be entered again after it exited; entering it while it is active raises.
"""

from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

from hookedmlp.errors import ArgumentTypeError, UsageError
from hookedmlp.hooks.point import Direction, HookFn, HookHandle, check_hook_args

__all__ = ["HookContext", "HookSpec", "attach_all", "expand_specs"]

HookSpec = tuple[Union[str, Callable[[str], bool]], HookFn]


def attach_all(
    model: Any,
    pairs: Sequence[tuple[str, HookFn]],
    dir: Direction,
    is_permanent: bool = False,
    level: Optional[int] = None,
    prepend: bool = False,
) -> list[HookHandle]:
    """Attach every ``(name, fn)`` pair, or none of them if one registration fails."""
    handles: list[HookHandle] = []
    try:
        for name, fn in pairs:
            handles.append(model.hook_dict[name].add_hook(fn, dir, is_permanent, level, prepend))
    except BaseException:
        for h in handles:
            h.remove()
        raise
    return handles


def expand_specs(model: Any, specs: Sequence[HookSpec], dir: Direction) -> list[tuple[str, HookFn]]:
    """Check ``(name_or_filter, fn)`` pairs and expand each filter to the hook names it selects."""
    if isinstance(specs, tuple) and len(specs) == 2 and callable(specs[1]):
        raise ArgumentTypeError(f"{dir}_hooks must be a list of (name, fn) pairs; got a single pair, wrap it in a list")
    pairs = []
    for spec in specs:
        if not (isinstance(spec, (tuple, list)) and len(spec) == 2):
            raise ArgumentTypeError(f"{dir}_hooks entries must be (name_or_filter, fn) pairs, got {spec!r}")
        name_or_filter, fn = spec
        check_hook_args(fn, dir)
        pairs.extend((name, fn) for name in model.resolve_names(name_or_filter))
    return pairs


class HookContext:
    """The hooks of one ``model.hooks(...)``, ``model.steer(...)``, ``ablate``, ``patch`` or ``clamp``.

    ``before_enter`` runs at each entry, before anything is attached (e.g. steering's warnings).
    """

    def __init__(
        self,
        model: Any,
        fwd_hooks: Sequence[HookSpec] = (),
        bwd_hooks: Sequence[HookSpec] = (),
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
        before_enter: Optional[Callable[[], None]] = None,
    ) -> None:
        self.model = model
        self._fwd = expand_specs(model, fwd_hooks, "fwd")
        self._bwd = expand_specs(model, bwd_hooks, "bwd") if bwd_hooks else []
        self._reset_end = reset_hooks_end
        self._clear = clear_contexts
        self._before = before_enter
        self._handles: Optional[list[HookHandle]] = None

    @classmethod
    def prepared(
        cls, model: Any, fwd_pairs: Sequence[tuple[str, HookFn]], before_enter: Optional[Callable[[], None]] = None
    ) -> "HookContext":
        """A context of exact ``(hook name, fn)`` pairs its caller has already checked (steering's fast path)."""
        ctx = cls.__new__(cls)
        ctx.model, ctx._fwd, ctx._bwd = model, list(fwd_pairs), []
        ctx._reset_end, ctx._clear, ctx._before, ctx._handles = True, False, before_enter, None
        return ctx

    @property
    def handles(self) -> tuple[HookHandle, ...]:
        """The handles the current entry attached, in the order attached (empty while inactive)."""
        return tuple(self._handles or ())

    @property
    def names(self) -> list[str]:
        """The hook names this context attaches to, forward hooks first."""
        return [n for n, _ in self._fwd + self._bwd]

    def __enter__(self) -> Any:
        if self._handles is not None:
            raise UsageError(
                "this hook context is already active; make a new one (e.g. call model.steer(...) again) to nest"
            )
        if self._before is not None:
            self._before()
        model = self.model
        # The level lives in the module's __dict__: nn.Module.__setattr__ would cost more than attaching.
        state = model.__dict__
        level = state["context_level"] = state.get("context_level", 0) + 1
        try:
            handles = attach_all(model, self._fwd, "fwd", level=level) if self._fwd else []
            if self._bwd:
                try:
                    handles += attach_all(model, self._bwd, "bwd", level=level)
                except BaseException:
                    for h in handles:
                        h.remove()
                    raise
        except BaseException:
            state["context_level"] -= 1
            raise
        self._handles = handles
        return model

    def __exit__(self, *exc: object) -> None:
        handles, self._handles = self._handles or [], None
        self.model.__dict__["context_level"] -= 1
        if self._reset_end:
            for h in reversed(handles):
                h.remove()
            if self._clear:
                self.model.clear_contexts()

    def __repr__(self) -> str:
        state = "active" if self._handles is not None else "inactive"
        return f"HookContext({', '.join(self.names) or 'no hooks'}; {state})"
