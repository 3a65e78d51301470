"""Caching: ``run_with_cache`` and TransformerLens' caching hooks, as ``HookedRoot`` methods (a mixin).

``run_with_cache`` records one pass: its recorder takes only that pass's activations, whatever
other threads or nested calls do. A hook point named exactly in ``names_filter`` that did not
run in the pass (forward never calls it, or stopped before it) raises ``HookNameError`` saying
so, as does a filter none of whose hook points ran. ``get_caching_hooks`` and
``add_caching_hooks`` return hooks that record every pass, as TransformerLens' do.
"""

import contextlib
import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import torch
from torch import Tensor

from hookedmlp.errors import BatchDimError, UsageError
from hookedmlp.hooks.cache import ActivationCache
from hookedmlp.hooks.context import HookSpec, attach_all
from hookedmlp.hooks.names import NamesFilter, not_run_error
from hookedmlp.hooks.point import guarding
from hookedmlp.hooks.recording import CLAIM, Device, Recorder

__all__ = ["CachingMixin", "RUN_KEYWORDS"]

logger = logging.getLogger("hookedmlp")

RUN_KEYWORDS = (
    "names_filter",
    "device",
    "remove_batch_dim",
    "incl_bwd",
    "loss_fn",
    "reset_hooks_end",
    "clear_contexts",
    "return_cache_object",
)


class CachingMixin:
    """``run_with_cache``, ``get_caching_hooks``, ``add_caching_hooks`` (and TransformerLens' deprecated
    ``cache_all`` / ``cache_some``) for ``HookedRoot``."""

    def _check_forward_kwargs(self, method: str, kwargs: dict[str, Any], own: Sequence[str]) -> None:
        """Raise for a keyword that neither ``method`` (run_with_hooks, run_with_cache) nor forward takes."""
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
            names_filter: which hook points to record (see ``resolve_names``; default all). A
                hook point it names exactly that does not run in the pass, or a filter none of
                whose points runs, raises ``HookNameError`` (with ``reset_hooks_end``).
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
        self._check_forward_kwargs("run_with_cache", model_kwargs, RUN_KEYWORDS)
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
        if reset_hooks_end and names_filter is not None:
            self._check_ran(names_filter, names, recorder.store)
        # the recorder's own dict: with reset_hooks_end=False later passes land in it too
        cache = ActivationCache(recorder.store, self, has_batch_dim=not remove_batch_dim)
        return out, (cache if return_cache_object else cache.cache_dict)

    def _check_ran(self, names_filter: NamesFilter, names: Sequence[str], store: dict[str, Tensor]) -> None:
        """Raise for hook points ``names_filter`` named exactly that did not run, or when none of its points ran."""
        missing = [n for n in names if n not in store]
        if not missing:
            return
        exact = (
            [names_filter] if isinstance(names_filter, str) else names_filter if isinstance(names_filter, list) else []
        )
        named = [n for n in missing if n in exact]
        if named or len(missing) == len(names):
            raise not_run_error(self, named or missing, [n for n in names if n in store])

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

    def cache_all(
        self,
        cache: Optional[dict[str, Tensor]],
        incl_bwd: bool = False,
        device: Device = None,
        remove_batch_dim: bool = False,
    ) -> None:
        """Deprecated in TransformerLens (logged): ``add_caching_hooks`` of every hook point into ``cache``."""
        logger.warning(
            "cache_all is deprecated and will eventually be removed, use add_caching_hooks or run_with_cache"
        )
        self.add_caching_hooks(None, incl_bwd, device, remove_batch_dim, cache)

    def cache_some(
        self,
        cache: Optional[dict[str, Tensor]],
        names: NamesFilter,
        incl_bwd: bool = False,
        device: Device = None,
        remove_batch_dim: bool = False,
    ) -> None:
        """Deprecated in TransformerLens (logged): ``add_caching_hooks`` of the hook points ``names`` into ``cache``."""
        logger.warning(
            "cache_some is deprecated and will eventually be removed, use add_caching_hooks or run_with_cache"
        )
        self.add_caching_hooks(names, incl_bwd, device, remove_batch_dim, cache)
