"""HookedRoot: TransformerLens' ``HookedRootModule`` hook surface, and nothing else.

Subclass it, put ``HookPoint`` modules where activations flow (in ``__init__``), call them in
``forward``, and call ``self.setup()`` at the end of ``__init__``: the model then has names,
``add_hook``, ``list_hooks``, ``reset_hooks``, ``hooks()``, ``run_with_hooks`` and
``run_with_cache``. Steering, interventions, files and the analysis work on any HookedRoot
through functions (``hookedmlp.steer(model, ...)``, ``hookedmlp.steering_vector(model, ...)``);
``hookedmlp.HookedModel`` adds them as methods.

Beyond TransformerLens: names are checked (an unknown name or a filter that matches nothing
raises ``HookNameError`` with the closest valid names, before anything is attached); glob
patterns select names; hook contexts remove exactly their own hooks; and every cache holds
only its own pass's activations, whatever other threads or nested calls do.
"""

import contextlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from hookedmlp.checks import check_choice
from hookedmlp.errors import (
    BatchDimError,
    UsageError,
    warn,
)
from hookedmlp.hooks.cache import ActivationCache
from hookedmlp.hooks.context import HookContext, HookSpec, attach_all
from hookedmlp.hooks.names import NamesFilter, select, select_one
from hookedmlp.hooks.point import (
    SELECTIONS,
    Direction,
    HookFn,
    HookHandle,
    HookPoint,
    check_hook_args,
    guarding,
)
from hookedmlp.hooks.recording import CLAIM, PASS, Device, Recorder

__all__ = ["HookedRoot", "HookGroup", "NamesFilter"]

_RUN_KEYWORDS = (
    "names_filter",
    "device",
    "remove_batch_dim",
    "incl_bwd",
    "loss_fn",
    "reset_hooks_end",
    "clear_contexts",
    "return_cache_object",
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


class HookedRoot(nn.Module):
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
        claim = CLAIM.get()
        if claim is None and PASS.get() is None:  # a plain top-level call: no cache of this thread waits on it
            return super().__call__(*args, **kwargs)
        claim_token, pass_token = CLAIM.set(None), PASS.set(claim if claim is not None else object())
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
        """The hook name of ``(name, layer)``, for ``cache[name, layer]`` (TransformerLens' ``get_act_name``)."""
        n = getattr(self, "n_layers", None)
        if layer is not None and layer < 0 and n is not None:
            layer += n
        return f"blocks.{layer}.hook_{name}" if layer is not None else f"hook_{name}"

    # -- names ---------------------------------------------------------------
    def resolve_names(self, names_filter: NamesFilter) -> list[str]:
        """The hook names ``names_filter`` selects, in forward order.

        A filter is ``None`` (all), a name, a glob such as ``"*.post"``, a list of names and
        globs, or a callable ``name -> bool``. An unknown name, or a filter that selects
        nothing, raises ``HookNameError`` naming the closest valid names.
        """
        if isinstance(names_filter, str) and names_filter in self.hook_dict:  # the common case, first
            return [names_filter]
        return select(self.hook_names, names_filter)

    def resolve_name(self, name: str) -> str:
        """``name`` if it names exactly one hook point (no pattern), else ``HookNameError``."""
        if isinstance(name, str) and name in self.hook_dict:
            return name
        return select_one(self.hook_names, name)

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
        handles = attach_all(self, [(n, hook) for n in names], dir, is_permanent, level, prepend)
        return handles[0] if isinstance(name, str) and name in self.hook_dict else HookGroup(handles)

    def add_perma_hook(
        self, name: Union[str, Callable[[str], bool]], hook: HookFn, dir: Direction = "fwd"
    ) -> Union[HookHandle, HookGroup]:
        """``add_hook(name, hook, dir, is_permanent=True)``."""
        return self.add_hook(name, hook, dir=dir, is_permanent=True)

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

    def list_hooks(
        self, name_filter: NamesFilter = None, dir: str = "both", including_permanent: bool = True
    ) -> dict[str, list[HookHandle]]:
        """The attached hooks by hook name (points without any left out), as TransformerLens' ``list_hooks``."""
        check_choice(dir, SELECTIONS, "dir")
        out = {}
        for name in self.hook_names if name_filter is None else self.resolve_names(name_filter):
            hp = self.hook_dict[name]
            handles = [
                h
                for h in (*(hp.fwd_hooks if dir != "bwd" else ()), *(hp.bwd_hooks if dir != "fwd" else ()))
                if including_permanent or not h.is_permanent
            ]
            if handles:
                out[name] = handles
        return out

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

    def _check_forward_kwargs(self, method: str, kwargs: dict[str, Any], own: Sequence[str]) -> None:
        params = inspect.signature(self.forward).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return
        accepted = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n != "x"]
        unknown = [k for k in kwargs if k not in params]
        if unknown:
            raise UsageError(
                f"{method}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; it takes "
                f"{', '.join(own)}, and the forward pass's {', '.join(accepted) or 'no keywords'}"
            )

    # -- caching -----------------------------------------------------------------
    def run_with_cache(
        self,
        *model_args: Any,
        names_filter: NamesFilter = None,
        device: Device = None,
        remove_batch_dim: bool = False,
        incl_bwd: bool = False,
        loss_fn: Optional[Callable[[Any], Tensor]] = None,
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
        return_cache_object: bool = True,
        **model_kwargs: Any,
    ) -> tuple[Any, Union[ActivationCache, dict[str, Tensor]]]:
        """Run the model and record the activations at the hook points ``names_filter`` selects.

        Entries are what the next module sees (after the other hooks at that point), detached:
        the pass's own tensors, not copies (see ``ActivationCache``).

        Args:
            *model_args: the forward pass's positional arguments (the input batch).
            names_filter: which hook points to record (see ``resolve_names``; default all).
            device: where entries go (default: where they were computed).
            remove_batch_dim: drop the batch dimension of a single input's activations.
            incl_bwd: also record ``"<name>_grad"``, the gradient of ``loss_fn(output)``
                (default: the output if it is a scalar, else its sum) with respect to each
                activation; the parameters' ``.grad`` is left untouched.
            loss_fn: the scalar to differentiate with ``incl_bwd``.
            reset_hooks_end: remove the caching hooks afterwards; with ``False`` they stay and
                record later passes too, as in TransformerLens.
            clear_contexts: also empty every hook point's ``ctx`` afterwards.
            return_cache_object: return an ``ActivationCache`` (else its plain dict).
            **model_kwargs: the forward pass's keyword arguments (e.g. ``stop_at``).

        Returns:
            ``(output, cache)``.

        Examples:
            >>> logits, cache = model.run_with_cache(images[:5], names_filter="*.post")
            >>> cache["layer0.post"].shape
            torch.Size([5, 512])
        """
        self._check_forward_kwargs("run_with_cache", model_kwargs, _RUN_KEYWORDS)
        names = self.resolve_names(names_filter)
        if loss_fn is not None and not incl_bwd:
            raise UsageError("loss_fn is used only with incl_bwd=True; pass incl_bwd=True or drop loss_fn")
        if (
            remove_batch_dim
            and model_args
            and isinstance(model_args[0], Tensor)
            and model_args[0].ndim
            and model_args[0].shape[0] != 1
        ):
            raise BatchDimError(
                f"Cannot remove batch dimension from cache with batch size {model_args[0].shape[0]}; "
                "cache a single input"
            )
        pass_id = object() if reset_hooks_end else None
        recorder = Recorder(pass_id, device, keep_live=incl_bwd, drop_batch=remove_batch_dim)
        grad_mode = torch.enable_grad() if incl_bwd else contextlib.nullcontext()
        with (
            grad_mode,
            guarding(recorder.guard),
            self.hooks([(n, recorder) for n in names], (), reset_hooks_end, clear_contexts),
        ):
            token = CLAIM.set(pass_id)
            try:
                out = self(*model_args, **model_kwargs)
            finally:
                CLAIM.reset(token)
            if incl_bwd:
                recorder.gradients(out, loss_fn)
        if incl_bwd and isinstance(out, Tensor):
            out = out.detach()
        # the recorder's own dict: with reset_hooks_end=False later passes land in it too
        cache = ActivationCache(recorder.store, self, has_batch_dim=not remove_batch_dim)
        return out, (cache if return_cache_object else cache.cache_dict)

    def get_caching_hooks(
        self,
        names_filter: NamesFilter = None,
        incl_bwd: bool = False,
        device: Device = None,
        remove_batch_dim: bool = False,
        cache: Optional[dict[str, Tensor]] = None,
    ) -> tuple[dict[str, Tensor], list[HookSpec], list[HookSpec]]:
        """TransformerLens' ``(cache, fwd_hooks, bwd_hooks)``: hooks that record every pass into ``cache``.

        With ``remove_batch_dim``, entries whose first dimension is 1 lose it (others keep it).
        """
        store: dict[str, Tensor] = {} if cache is None else cache
        names = self.resolve_names(names_filter)
        self.is_caching = True
        fwd = Recorder(None, device, store=store, drop_batch=remove_batch_dim)
        bwd = Recorder(None, device, store=store, suffix="_grad", drop_batch=remove_batch_dim)
        return store, [(n, fwd) for n in names], ([(n, bwd) for n in names] if incl_bwd else [])

    def add_caching_hooks(
        self,
        names_filter: NamesFilter = None,
        incl_bwd: bool = False,
        device: Device = None,
        remove_batch_dim: bool = False,
        cache: Optional[dict[str, Tensor]] = None,
    ) -> dict[str, Tensor]:
        """Attach ``get_caching_hooks``' hooks (removed by ``reset_hooks()``); returns the dict they fill."""
        store, fwd, bwd = self.get_caching_hooks(names_filter, incl_bwd, device, remove_batch_dim, cache)
        attach_all(self, fwd, "fwd")
        attach_all(self, bwd, "bwd")
        return store
