"""Recording activations during forward passes, for ``run_with_cache`` and TransformerLens' caching hooks.

Each forward pass of a ``HookedRoot`` runs under its own pass token (a context variable, so
per thread). A ``Recorder`` made for one ``run_with_cache`` call records only its own pass:
another thread's pass, or a pass a hook starts inside it, never writes into its cache.

Recorded entries are the pass's tensors, detached, not copies. Before any other hook runs on
a tensor a recorder holds (or on a view of its storage), the recorder copies what it holds,
so a hook's later in-place edit never reaches the cache.
"""

import contextvars
import weakref
from collections.abc import Callable
from typing import Any, Optional, Union

import torch
from torch import Tensor

from hookedmlp.errors import UsageError
from hookedmlp.hooks.point import PASS, HookPoint, Observer

__all__ = ["Recorder", "PASS", "CLAIM"]

# The token the next forward pass must take (run_with_cache's, so its recorder knows its pass).
CLAIM: contextvars.ContextVar[Optional[object]] = contextvars.ContextVar("hookedmlp_claim", default=None)

Device = Union[str, torch.device, None]


def _storage(t: Tensor) -> Optional[int]:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. functorch wrappers)
        return None


class Recorder(Observer):
    """A hook that stores each activation it sees under its hook's name.

    Args:
        pass_id: record only the pass with this token (None: every pass, as TransformerLens' caching hooks).
        device: where entries go (None: where they were computed).
        keep_live: also keep the graph-connected tensors, to take gradients afterwards.
        suffix: appended to each name (``"_grad"`` for backward recorders).
        drop_batch: store ``t[0]`` for entries whose first dimension is 1 (TransformerLens'
            ``remove_batch_dim`` of caching hooks).
    """

    def __init__(
        self,
        pass_id: Optional[object],
        device: Device = None,
        keep_live: bool = False,
        store: Optional[dict[str, Tensor]] = None,
        suffix: str = "",
        drop_batch: bool = False,
    ) -> None:
        self.pass_id = pass_id
        self.device = device
        self.drop_batch = drop_batch
        self.keep_live = keep_live
        self.suffix = suffix
        self.store: dict[str, Tensor] = {} if store is None else store
        self.live: dict[str, Tensor] = {}
        self._shared: dict[int, list[str]] = {}  # storage -> names holding a tensor on it, uncopied
        # (a weak reference to the last activation seen, what was kept of it): weak, so the
        # recorder never keeps a pass's tensor (and its graph) alive past its use.
        self._last: tuple[Optional[weakref.ref[Tensor]], Optional[Tensor]] = (None, None)

    def __call__(self, act: Tensor, hook: HookPoint) -> Optional[Tensor]:
        if self.pass_id is not None and PASS.get() is not self.pass_id:
            return None
        name = f"{hook.name}{self.suffix}"
        last = self._last[0]
        if last is not None and last() is act:  # layer{i}.post and layer{i+1}.pre: one activation, one entry object
            kept = self._last[1]
        else:
            kept = act.detach()
            if self.device is not None:
                kept = kept.to(self.device)
            if _storage(kept) is None:
                kept = kept.clone()
            if self.drop_batch and kept.ndim and kept.shape[0] == 1:
                kept = kept[0]
            self._last = (weakref.ref(act), kept)
        self.store[name] = kept
        if hook.volatile:  # the pass edits this tensor in place later: every entry on its storage keeps a copy
            self._copy_entries(_storage(act))
        where = _storage(kept) if self.pass_id is not None else None  # only a pass-bound recorder is guarded
        if where is not None and where == _storage(act):
            self._shared.setdefault(where, []).append(name)
        if self.keep_live:
            if not act.requires_grad:  # an input leaf: make it part of the graph
                act = act.detach().requires_grad_(True)
                self.live[name] = act
                return act
            self.live[name] = act
        return None

    def _copy_entries(self, where: Optional[int]) -> None:
        copies: dict[int, Tensor] = {}
        for name, t in self.store.items():
            if where is not None and _storage(t) == where:
                if id(t) not in copies:
                    copies[id(t)] = t.clone()
                self.store[name] = copies[id(t)]
        self._shared.pop(where, None)  # type: ignore[arg-type]
        self._last = (None, None)

    def guard(self, x: Tensor) -> None:
        """Copy the entries that share ``x``'s storage: a hook is about to get ``x`` and may edit it."""
        if not self._shared:
            return
        names = self._shared.pop(_storage(x), None)  # type: ignore[arg-type]
        copies: dict[int, Tensor] = {}
        for name in names or ():
            t = self.store[name]
            if id(t) not in copies:
                copies[id(t)] = t.clone()
            self.store[name] = copies[id(t)]
        if names:  # the hook may edit the activation in place: the next point must record it afresh
            self._last = (None, None)

    def gradients(self, out: Any, loss_fn: Optional[Callable[[Any], Tensor]]) -> None:
        """Store ``d loss / d activation`` as ``"<name>_grad"``; the parameters' ``.grad`` is untouched."""
        loss = loss_fn(out) if loss_fn is not None else (out if out.ndim == 0 else out.sum())
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            shape = list(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise UsageError(
                f"incl_bwd needs a scalar loss, but loss_fn returned {shape}; reduce it, e.g. with .mean()"
            )
        tensors = list({id(t): t for t in self.live.values()}.values())
        if loss.requires_grad and tensors:
            grads = torch.autograd.grad(loss.reshape(()), tensors, allow_unused=True)
        else:  # the output depends on no recorded activation (e.g. the logits are patched)
            grads = (None,) * len(tensors)
        by_id = {id(t): g for t, g in zip(tensors, grads)}
        for name, t in self.live.items():
            g = by_id[id(t)]
            if g is not None:
                g = g.detach().to(self.device or g.device)
                self.store[name + "_grad"] = g[0] if self.drop_batch and g.ndim and g.shape[0] == 1 else g
