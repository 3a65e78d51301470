"""HookedRoot: TransformerLens' ``HookedRootModule`` hook surface, and nothing else.

Subclass it, put ``HookPoint`` modules where activations flow (in ``__init__``), call them in
``forward``, and call ``self.setup()`` at the end of ``__init__``: the model then has names,
``add_hook``, ``list_hooks``, ``reset_hooks``, ``hooks()``, ``run_with_hooks`` and
``run_with_cache``. Steering, interventions, files and the analysis work on any HookedRoot
through functions (``hookedmlp.steer(model, ...)``, ``hookedmlp.steering_vector(model, ...)``);
``hookedmlp.HookedModel`` adds them as methods.

Beyond TransformerLens: names are checked (an unknown name or a filter that matches nothing
raises ``HookNameError`` with the closest valid names, before anything is attached, and says
so when ``setup()`` was forgotten); glob patterns select names; hook contexts remove exactly
their own hooks; and every cache holds only its own pass's activations, whatever other threads
or nested calls do. ``list_hooks`` comes from ``HookIntrospectionMixin``
(hooks/introspection.py), ``run_with_cache`` and the caching hooks from ``CachingMixin``
(hooks/caching.py).
"""

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Optional, Union

from torch import nn

from hookedmlp.errors import ArgumentTypeError, HookNameError, capped, did_you_mean, warn
from hookedmlp.hooks.caching import CachingMixin
from hookedmlp.hooks.context import HookContext, HookSpec, attach_all
from hookedmlp.hooks.handle import HookGroup
from hookedmlp.hooks.introspection import HookIntrospectionMixin
from hookedmlp.hooks.names import NamesFilter, get_act_name, layer_count, select, select_one
from hookedmlp.hooks.point import PASS, Direction, HookFn, HookHandle, HookPoint, check_hook_args
from hookedmlp.hooks.recording import CLAIM

__all__ = ["HookedRoot", "HookGroup", "NamesFilter"]


class HookedRoot(HookIntrospectionMixin, CachingMixin, nn.Module):
    """Base class: names the model's HookPoints and manages the hooks on them (TransformerLens' hook surface).

    Subclasses call ``self.setup()`` once their HookPoints exist.
    """

    hook_dict: dict[str, HookPoint]
    mod_dict: dict[str, nn.Module]

    def __init__(self) -> None:
        super().__init__()
        self.context_level = 0
        self.is_caching = False  # TransformerLens' flag: set by caching hooks, cleared by reset_hooks()
        self.hook_dict = {}
        self.mod_dict = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Every pass runs under a token of its own (a hook point tells a second call in one pass by it),
        # run_with_cache's under the token its recorder waits for.
        claim = CLAIM.get()
        if claim is None:
            pass_token = PASS.set(object())
            try:
                return super().__call__(*args, **kwargs)
            finally:
                PASS.reset(pass_token)
        claim_token, pass_token = CLAIM.set(None), PASS.set(claim)
        try:
            return super().__call__(*args, **kwargs)
        finally:
            PASS.reset(pass_token)
            CLAIM.reset(claim_token)

    def setup(self) -> None:
        """Name every HookPoint by its attribute path and index the modules; call once ``__init__`` is done."""
        self.mod_dict, self.hook_dict = {}, {}
        for name, module in self.named_modules():
            if name:
                self.mod_dict[name] = module
            if isinstance(module, HookPoint):
                module.name = name
                self.hook_dict[name] = module

    def hook_points(self) -> list[HookPoint]:
        return list(self.hook_dict.values())

    @property
    def hook_names(self) -> list[str]:
        """All hook names, in forward order."""
        return list(self.hook_dict)

    def act_name(self, name: str, layer: Optional[int] = None, *rest: Any) -> str:
        """The hook name of ``(name, layer, layer_type)``, for ``cache[name, layer]``: TransformerLens'
        ``get_act_name`` (``hookedmlp.hooks.names``), a negative layer counted back from ``n_layers``
        (or ``cfg.n_layers``)."""
        n = layer_count(self)
        if layer is not None and layer < 0 and n is not None:
            layer += n
        return get_act_name(name, layer, *rest)

    # -- names ---------------------------------------------------------------
    def resolve_names(self, names_filter: NamesFilter) -> list[str]:
        """The hook names ``names_filter`` selects, in forward order.

        A filter is ``None`` (all), a name, a glob such as ``"*.post"``, a list of names and
        globs, or a callable ``name -> bool``. An unknown name, or a filter that selects
        nothing, raises ``HookNameError`` naming the closest valid names.
        """
        if isinstance(names_filter, str) and names_filter in self.hook_dict:  # the common case, first
            return [names_filter]
        try:
            names = select(self.hook_names, names_filter)
        except HookNameError:
            self._check_setup()
            raise
        if not names:  # None on a model without hook names
            self._check_setup()
        return names

    def resolve_name(self, name: str) -> str:
        """``name`` if it names exactly one hook point (no pattern), else ``HookNameError``."""
        if isinstance(name, str) and name in self.hook_dict:
            return name
        try:
            return select_one(self.hook_names, name)
        except HookNameError:
            self._check_setup()
            raise

    def _check_setup(self) -> None:
        """Raise if some HookPoint of this model has no name: ``setup()`` was not called after it was made."""
        named = {id(hp) for hp in self.hook_dict.values()}
        unnamed = [n for n, m in self.named_modules() if isinstance(m, HookPoint) and id(m) not in named]
        if unnamed:
            cls = type(self).__name__
            when = "was never called" if not self.hook_dict else "ran before they were made"
            raise HookNameError(
                f"{cls} has HookPoints that setup() has not named ({capped(unnamed)}): setup() {when}; "
                f"call self.setup() at the end of {cls}.__init__, after making every HookPoint"
            )

    # -- adding and removing hooks ------------------------------------------------
    def add_hook(
        self,
        name: Union[str, Callable[[str], bool]],
        hook: HookFn,
        dir: Direction = "fwd",
        is_permanent: bool = False,
        level: Optional[int] = None,
        prepend: bool = False,
    ) -> Union[HookHandle, HookGroup]:
        """Attach ``hook(activation, hook=...)`` at a hook point, or at every point a filter selects.

        The hook stays until removed: call ``.remove()`` on the result (a ``HookHandle``, or a
        ``HookGroup`` for a filter), use it in ``with``, or call ``reset_hooks()``.

        Args:
            name: a hook name, a glob, or a callable ``name -> bool``.
            hook: returns a tensor to replace the activation, or ``None`` to keep it.
            dir: ``"fwd"`` for activations, ``"bwd"`` for their gradients.
            is_permanent: survive ``reset_hooks()`` unless ``including_permanent=True``.
            level: a context level to tag the hook with (``reset_hooks(level=...)``).
            prepend: run before the hooks already there.

        Examples:
            >>> handle = tiny.add_hook("layer0.post", lambda act, hook: act * 0)
            >>> handle.remove()
        """
        check_hook_args(hook, dir)
        names = self.resolve_names(name)
        for n in names:  # every check first: all the hooks are attached, or none
            self.check_hooks_to_add(self.hook_dict[n], n, hook, dir=dir, is_permanent=is_permanent, prepend=prepend)
        handles = attach_all(self, [(n, hook) for n in names], dir, is_permanent, level, prepend)
        return handles[0] if isinstance(name, str) and name in self.hook_dict else HookGroup(handles)

    def check_hooks_to_add(
        self,
        hook_point: HookPoint,
        hook_point_name: str,
        hook: HookFn,
        dir: Direction = "fwd",
        is_permanent: bool = False,
        prepend: bool = False,
    ) -> None:
        """Override to refuse a hook (raise); ``add_hook`` calls it for each hook point, as TransformerLens does."""

    def check_and_add_hook(
        self,
        hook_point: HookPoint,
        hook_point_name: str,
        hook: HookFn,
        dir: Direction = "fwd",
        is_permanent: bool = False,
        level: Optional[int] = None,
        prepend: bool = False,
    ) -> HookHandle:
        """``check_hooks_to_add``, then attach ``hook`` at ``hook_point`` (TransformerLens' method)."""
        self.check_hooks_to_add(hook_point, hook_point_name, hook, dir=dir, is_permanent=is_permanent, prepend=prepend)
        return hook_point.add_hook(hook, dir=dir, is_permanent=is_permanent, level=level, prepend=prepend)

    def add_perma_hook(
        self, name: Union[str, Callable[[str], bool]], hook: HookFn, dir: Direction = "fwd"
    ) -> Union[HookHandle, HookGroup]:
        """``add_hook(name, hook, dir, is_permanent=True)``."""
        return self.add_hook(name, hook, dir=dir, is_permanent=True)

    # TransformerLens' protected helpers, for code written against them (hookedmlp's contexts attach
    # through HookContext): attach at the current context level.
    def _enable_hook_with_name(self, name: str, hook: HookFn, dir: Direction) -> HookHandle:
        module = self.mod_dict.get(name)
        if module is None:
            raise HookNameError(f"unknown module {name!r}{did_you_mean(name, list(self.mod_dict))}")
        if not hasattr(module, "add_hook"):
            raise ArgumentTypeError(f"module {name!r} is a {type(module).__name__}, not a HookPoint; pick a hook name")
        return module.add_hook(hook, dir=dir, level=self.context_level)

    def _enable_hooks_for_points(
        self, hook_points: Iterable[tuple[str, HookPoint]], enabled: Callable[[str], bool], hook: HookFn, dir: Direction
    ) -> list[HookHandle]:
        return [hp.add_hook(hook, dir=dir, level=self.context_level) for name, hp in hook_points if enabled(name)]

    def _enable_hook(
        self, name: Union[str, Callable[[str], bool]], hook: HookFn, dir: Direction
    ) -> Union[HookHandle, list[HookHandle]]:
        if isinstance(name, str):
            return self._enable_hook_with_name(name, hook, dir)
        return self._enable_hooks_for_points(self.hook_dict.items(), name, hook, dir)

    def remove_all_hook_fns(
        self, direction: str = "both", including_permanent: bool = False, level: Optional[int] = None
    ) -> None:
        for hp in self.hook_dict.values():
            hp.remove_hooks(direction, including_permanent=including_permanent, level=level)

    def clear_contexts(self) -> None:
        for hp in self.hook_dict.values():
            hp.clear_context()

    def reset_hooks(
        self,
        clear_contexts: bool = True,
        direction: str = "both",
        including_permanent: bool = False,
        level: Optional[int] = None,
    ) -> None:
        """Remove hooks (permanent ones only if asked; one ``level`` only if given) and clear the hook contexts."""
        if clear_contexts:
            self.clear_contexts()
        self.remove_all_hook_fns(direction, including_permanent, level)
        self.is_caching = False

    def attached_hooks(self) -> list[HookHandle]:
        """Every attached hook, forward and backward, in forward order of hook points."""
        return [h for hp in self.hook_dict.values() for h in (*hp.fwd_hooks, *hp.bwd_hooks)]

    def hooks(
        self,
        fwd_hooks: Sequence[HookSpec] = (),
        bwd_hooks: Sequence[HookSpec] = (),
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
    ) -> HookContext:
        """Context manager attaching hooks for the duration of a ``with`` block.

        Every name is checked before any hook is attached. On exit, also by an exception,
        exactly the hooks it attached are removed (kept with ``reset_hooks_end=False``, so
        backward hooks can run on a later ``backward()``).

        Args:
            fwd_hooks: ``(name_or_filter, fn)`` pairs run on activations.
            bwd_hooks: ``(name_or_filter, fn)`` pairs run on the activations' gradients.
            reset_hooks_end: remove the hooks on exit.
            clear_contexts: also empty every hook point's ``ctx`` on exit.

        Examples:
            >>> with tiny.hooks(fwd_hooks=[("layer1.post", lambda act, hook: act * 0)]):
            ...     tiny(tiny_x).shape
            torch.Size([5, 3])
        """
        return HookContext(self, fwd_hooks, bwd_hooks, reset_hooks_end, clear_contexts)

    def run_with_hooks(
        self,
        *model_args: Any,
        fwd_hooks: Sequence[HookSpec] = (),
        bwd_hooks: Sequence[HookSpec] = (),
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
        **model_kwargs: Any,
    ) -> Any:
        """Run the model with temporary hooks (see ``hooks``); returns what the forward pass returns."""
        self._check_forward_kwargs(
            "run_with_hooks", model_kwargs, ("fwd_hooks", "bwd_hooks", "reset_hooks_end", "clear_contexts")
        )
        if bwd_hooks and reset_hooks_end:
            warn(
                "run_with_hooks removes its hooks at the end, so the backward hooks are gone before a backward "
                "pass can run; pass reset_hooks_end=False and call reset_hooks() after backward()",
                UserWarning,
            )
        with self.hooks(fwd_hooks, bwd_hooks, reset_hooks_end, clear_contexts):
            return self(*model_args, **model_kwargs)
