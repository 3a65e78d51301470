"""HookedRoot: hook management in the TransformerLens vocabulary.

Any ``nn.Module`` whose ``HookPoint`` submodules are named by their
attribute path gets ``add_hook``, ``hooks()``, ``run_with_hooks``,
``run_with_cache`` and ``reset_hooks`` from this base class.

Guarantees (tested under injected faults):

* every name is validated before anything is registered; an unknown name or a
  filter that matches nothing raises ``HookNameError`` with the closest
  valid names, and leaves no hook behind;
* a context (``hooks()``, ``run_with_hooks``, ``run_with_cache``) removes
  exactly the hooks it added, also when a hook function or the body raises;
  hooks added with ``add_hook`` and permanent hooks survive it.
"""

import contextlib
import fnmatch
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from hookedmlp.cache import ActivationCache
from hookedmlp.errors import HookNameError, did_you_mean
from hookedmlp.hook_points import Direction, HookFn, HookHandle, HookPoint, check_hook_args

__all__ = ["HookedRoot", "HookGroup", "NamesFilter", "HookSpec"]

NamesFilter = Union[None, str, Sequence[str], Callable[[str], bool]]
HookSpec = tuple[Union[str, Callable[[str], bool]], HookFn]


class HookGroup(list):
    """The handles of one ``add_hook`` call on several hook points; ``remove()`` removes them all.

    A ``list`` of ``HookHandle``; usable as a context manager that removes the whole
    group on exit.

    Examples:
        >>> from hookedmlp import HookedMLP, MLPConfig
        >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
        >>> group = model.add_hook("*.post", lambda act, hook: None)
        >>> [h.name for h in group]
        ['layer0.post', 'layer1.post', 'layer2.post']
        >>> group.remove()
    """

    def remove(self) -> None:  # type: ignore[override]
        """Remove every hook of the group (idempotent).

        Examples:
            >>> from hookedmlp import HookedMLP, MLPConfig
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
            >>> group = model.add_hook(lambda name: name.endswith(".pre"), lambda act, hook: None)
            >>> len(model.attached_hooks())
            3
            >>> group.remove()
            >>> model.attached_hooks()
            []
        """
        for handle in self:
            handle.remove()

    def __enter__(self) -> "HookGroup":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class HookedRoot(nn.Module):
    """Base class: names the model's HookPoints and manages the hooks on them.

    Subclasses build their modules, then call ``setup_hooks``.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from hookedmlp import HookedRoot, HookPoint
        >>> class Net(HookedRoot):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.lin = nn.Linear(2, 2)
        ...         self.hook_out = HookPoint()
        ...         self.setup_hooks()
        ...     def forward(self, x):
        ...         return self.hook_out(self.lin(x))
        >>> net = Net()
        >>> net.hook_names
        ['hook_out']
        >>> out, cache = net.run_with_cache(torch.ones(1, 2))
        >>> torch.equal(cache["hook_out"], out)
        True
    """

    hook_dict: dict[str, HookPoint]

    def setup_hooks(self) -> None:
        """Index every HookPoint submodule under its attribute path (its name).

        Call it once, at the end of a subclass's ``__init__``, after every HookPoint exists.

        Examples:
            >>> from torch import nn
            >>> from hookedmlp import HookedRoot, HookPoint
            >>> root = HookedRoot()
            >>> root.block = nn.ModuleDict({"hook_in": HookPoint()})
            >>> root.setup_hooks()
            >>> root.hook_names, root.block["hook_in"].name
            (['block.hook_in'], 'block.hook_in')
        """
        self.hook_dict = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                self.hook_dict[name] = module
        self._hook_points = list(self.hook_dict.values())

    @property
    def hook_names(self) -> list[str]:
        """Names of all hook points, in forward order.

        Returns:
            A new list of the names (``"layer0.pre"``, ``"layer0.post"``, ...).

        Examples:
            >>> from hookedmlp import HookedMLP, MLPConfig
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
            >>> model.hook_names[:3]
            ['layer0.pre', 'layer0.post', 'layer1.pre']
        """
        return list(self.hook_dict)

    # -- name resolution -------------------------------------------------
    def resolve_names(self, names_filter: NamesFilter) -> list[str]:
        """The hook names selected by ``names_filter``, in forward order.

        Args:
            names_filter: ``None`` (all), a name, a glob such as ``"*.post"``, a list
                of names and globs, or a callable ``name -> bool``.

        Returns:
            The selected names, each once, in forward order.

        Raises:
            HookNameError: an unknown name (with the closest valid ones), or a filter
                that selects nothing.
            TypeError: a list entry that is not a string.

        Examples:
            >>> from hookedmlp import HookedMLP, MLPConfig
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
            >>> model.resolve_names("*.post")
            ['layer0.post', 'layer1.post', 'layer2.post']
            >>> model.resolve_names(["layer2.pre", "layer0.*"])
            ['layer0.pre', 'layer0.post', 'layer2.pre']
            >>> model.resolve_names(lambda name: name.startswith("layer1"))
            ['layer1.pre', 'layer1.post']
        """
        names = self.hook_names
        if names_filter is None:
            return names
        if callable(names_filter) and not isinstance(names_filter, str):
            selected = [n for n in names if names_filter(n)]
            if not selected:
                raise HookNameError(
                    f"names filter {getattr(names_filter, '__name__', names_filter)!r} matched no hook point; "
                    f"hook names are: {', '.join(names)}"
                )
            return selected
        patterns = [names_filter] if isinstance(names_filter, str) else list(names_filter)
        if not patterns:
            raise HookNameError(f"names filter is an empty list; pass None for all hook points or one of: {', '.join(names)}")
        chosen: set[str] = set()
        for pattern in patterns:
            if not isinstance(pattern, str):
                raise TypeError(f"names filter entries must be str, got {type(pattern).__name__} ({pattern!r})")
            if any(c in pattern for c in "*?["):
                matched = fnmatch.filter(names, pattern)
                if not matched:
                    raise HookNameError(f"pattern {pattern!r} matched no hook point{did_you_mean(pattern, names)}")
                chosen.update(matched)
            elif pattern in self.hook_dict:
                chosen.add(pattern)
            else:
                raise HookNameError(f"unknown hook {pattern!r}{did_you_mean(pattern, names)}")
        return [n for n in names if n in chosen]

    def resolve_name(self, name: str) -> str:
        """``name`` if it is exactly one hook point's name, else ``HookNameError``.

        Unknown names get the closest valid ones; patterns are refused, since the
        caller wants one place (``"layer0.post"``, not ``"*.post"``).

        Args:
            name: one hook name.

        Returns:
            ``name`` itself.

        Raises:
            HookNameError: ``name`` is unknown or a pattern.
            TypeError: ``name`` is not a string.

        Examples:
            >>> from hookedmlp import HookedMLP, MLPConfig
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
            >>> model.resolve_name("layer0.post")
            'layer0.post'
        """
        if not isinstance(name, str):
            raise TypeError(f"expected one hook name (str), got {type(name).__name__}")
        names = self.resolve_names(name)
        if names != [name]:
            raise HookNameError(f"expected one hook name, got the pattern {name!r} matching {len(names)} hook points; "
                                f"pick one, e.g. {names[0]!r}")
        return name

    # -- adding and removing ----------------------------------------------
    def add_hook(
        self,
        name_or_filter: Union[str, Callable[[str], bool]],
        fn: HookFn,
        dir: Direction = "fwd",
        is_permanent: bool = False,
    ) -> Union[HookHandle, HookGroup]:
        """Attach ``fn(activation, hook)`` at a hook point, or at every point a filter selects.

        The hook stays until removed: call ``.remove()`` on the result, use it as a
        context manager, or call ``reset_hooks()``.

        Args:
            name_or_filter: a hook name, a glob, or a callable ``name -> bool``.
            fn: returns a tensor to replace the activation, or ``None`` to keep it.
            dir: ``"fwd"`` for activations, ``"bwd"`` for their gradients.
            is_permanent: survive ``reset_hooks()`` unless ``including_permanent=True``.

        Returns:
            A ``HookHandle`` (one name) or ``HookGroup``; ``.remove()`` detaches it.

        Examples:
            >>> from hookedmlp import HookedMLP, MLPConfig
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
            >>> handle = model.add_hook("layer0.post", lambda act, hook: act * 0)
            >>> handle.remove()
        """
        check_hook_args(fn, dir)
        names = self.resolve_names(name_or_filter)
        handles = self._register([(n, fn) for n in names], dir, is_permanent)
        if isinstance(name_or_filter, str) and name_or_filter in self.hook_dict:
            return handles[0]
        return HookGroup(handles)

    def _register(self, pairs: Sequence[tuple[str, HookFn]], dir: Direction, is_permanent: bool = False) -> list[HookHandle]:
        """Attach all ``(name, fn)`` pairs, or none of them if any registration fails."""
        handles: list[HookHandle] = []
        try:
            for name, fn in pairs:
                handles.append(self.hook_dict[name].add_hook(fn, dir, is_permanent))
        except BaseException:
            for h in handles:
                h.remove()
            raise
        return handles

    def _expand(self, specs: Sequence[HookSpec], dir: Direction) -> list[tuple[str, HookFn]]:
        """Validate ``(name_or_filter, fn)`` specs and expand filters to names."""
        if isinstance(specs, tuple) and len(specs) == 2 and callable(specs[1]):
            raise TypeError(f"{dir}_hooks must be a list of (name, fn) pairs; got a single pair, wrap it in a list")
        pairs = []
        for spec in specs:
            if not (isinstance(spec, (tuple, list)) and len(spec) == 2):
                raise TypeError(f"{dir}_hooks entries must be (name_or_filter, fn) pairs, got {spec!r}")
            name_or_filter, fn = spec
            check_hook_args(fn, dir)
            pairs.extend((name, fn) for name in self.resolve_names(name_or_filter))
        return pairs

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Sequence[HookSpec] = (), bwd_hooks: Sequence[HookSpec] = ()) -> Iterator["HookedRoot"]:
        """Context manager: attach hooks for the duration of the ``with`` block.

        Every name is checked before any hook is attached. On exit, normal or by an
        exception, exactly the hooks this context added are removed.

        Args:
            fwd_hooks: ``(name_or_filter, fn)`` pairs run on activations; a filter is a
                name, a glob or a callable ``name -> bool``.
            bwd_hooks: ``(name_or_filter, fn)`` pairs run on the gradients of activations.

        Yields:
            The model itself, with the hooks attached.

        Examples:
            >>> import torch
            >>> from hookedmlp import HookedMLP, MLPConfig
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
            >>> with model.hooks(fwd_hooks=[("layer1.post", lambda act, hook: act * 0)]):
            ...     model(torch.ones(1, 4)).shape
            torch.Size([1, 2])
        """
        fwd = self._expand(fwd_hooks, "fwd")
        bwd = self._expand(bwd_hooks, "bwd")
        handles: list[HookHandle] = []
        try:
            handles += self._register(fwd, "fwd")
            handles += self._register(bwd, "bwd")
            yield self
        finally:
            for h in reversed(handles):
                h.remove()

    def run_with_hooks(
        self, *args: Any, fwd_hooks: Sequence[HookSpec] = (), bwd_hooks: Sequence[HookSpec] = (), **kwargs: Any
    ) -> Any:
        """Run the forward pass with temporary hooks; they are removed afterwards.

        Args:
            *args: positional arguments of the forward pass (the input batch).
            fwd_hooks: ``(name_or_filter, fn)`` pairs run on activations (see ``hooks``).
            bwd_hooks: ``(name_or_filter, fn)`` pairs run on gradients (see ``hooks``).
            **kwargs: keyword arguments of the forward pass (e.g. ``stop_at``).

        Returns:
            What the forward pass returns (for ``HookedMLP``: the logits, or the
            activation at ``stop_at``).

        Examples:
            >>> import torch
            >>> from hookedmlp import HookedMLP, MLPConfig
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
            >>> zero_out = lambda act, hook: torch.zeros_like(act)
            >>> model.run_with_hooks(torch.ones(1, 4), fwd_hooks=[("layer2.post", zero_out)]).tolist()
            [[0.0, 0.0]]
            >>> model.attached_hooks()
            []
        """
        with self.hooks(fwd_hooks=fwd_hooks, bwd_hooks=bwd_hooks):
            return self(*args, **kwargs)

    def reset_hooks(self, including_permanent: bool = False) -> None:
        """Remove all hooks (permanent ones only if ``including_permanent``).

        Args:
            including_permanent: also remove hooks added with ``is_permanent=True``.

        Examples:
            >>> from hookedmlp import HookedMLP, MLPConfig
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
            >>> _ = model.add_hook("layer0.post", lambda act, hook: None)
            >>> _ = model.add_hook("layer1.post", lambda act, hook: None, is_permanent=True)
            >>> model.reset_hooks()
            >>> [h.name for h in model.attached_hooks()]
            ['layer1.post']
            >>> model.reset_hooks(including_permanent=True)
        """
        for hp in self._hook_points:
            hp.remove_hooks("both", including_permanent=including_permanent)

    def attached_hooks(self) -> list[HookHandle]:
        """Every hook currently attached to this model, in forward order of hook points.

        Returns:
            The ``HookHandle`` of each attached hook (forward and backward).

        Examples:
            >>> from hookedmlp import HookedMLP, MLPConfig
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
            >>> with model.hooks(fwd_hooks=[("layer1.pre", lambda act, hook: None)]):
            ...     model.attached_hooks()
            [HookHandle('layer1.pre', fwd, fn=<lambda>)]
        """
        return [h for hp in self._hook_points for h in (*hp.fwd_hooks, *hp.bwd_hooks)]

    def _any_hooks(self) -> bool:
        for hp in self._hook_points:
            if hp.fwd_hooks or hp.bwd_hooks:
                return True
        return False

    # -- caching -----------------------------------------------------------
    def run_with_cache(
        self,
        *args: Any,
        names_filter: NamesFilter = None,
        device: Union[str, torch.device, None] = None,
        incl_bwd: bool = False,
        loss_fn: Optional[Callable[[Tensor], Tensor]] = None,
        **kwargs: Any,
    ) -> tuple[Any, ActivationCache]:
        """Run the model and record the activations at the selected hook points.

        Args:
            *args: positional arguments of the forward pass (the input batch).
            names_filter: which hook points to cache (see ``resolve_names``).
            device: where cached tensors go (default: where they were computed).
            incl_bwd: also cache gradients, as ``"<name>_grad"``: the gradient of
                ``loss_fn(output)`` (default: the output itself if it is a scalar,
                else its sum) with respect to each activation. Parameters' ``.grad``
                is left untouched.
            loss_fn: the scalar to differentiate when ``incl_bwd`` is set.
            **kwargs: keyword arguments of the forward pass (e.g. ``stop_at``).

        Returns:
            ``(output, cache)``: the forward pass's output and an ``ActivationCache``.
                Cached activations are what the next module sees: after any other hooks
                at that point, detached copies.

        Examples:
            >>> import torch
            >>> from hookedmlp import HookedMLP, MLPConfig
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
            >>> logits, cache = model.run_with_cache(torch.ones(5, 4), names_filter="*.post")
            >>> list(cache), cache["layer0.post"].shape
            (['layer0.post', 'layer1.post', 'layer2.post'], torch.Size([5, 3]))
            >>> _, cache = model.run_with_cache(torch.ones(5, 4), names_filter="layer1.post", incl_bwd=True)
            >>> list(cache)
            ['layer1.post', 'layer1.post_grad']
        """
        names = self.resolve_names(names_filter)
        store: dict[str, Tensor] = {}
        live: dict[str, Tensor] = {}
        # The last tensor copied (a weak reference: the cache must not keep the forward
        # pass's own activation alive), its version, and its copy.
        last: list[Any] = [lambda: None, -1, None]

        def save(act: Tensor, hook: HookPoint) -> Optional[Tensor]:
            version = _version(act)
            if last[0]() is act and version is not None and last[1] == version:
                copy = last[2]  # layer{i}.post and layer{i+1}.pre: the same unchanged tensor
            else:
                copy = act.detach().to(device=device or act.device, copy=True)
                last[:] = [weakref.ref(act), version, copy]
            store[hook.name] = copy
            if incl_bwd:
                if not act.requires_grad:
                    act = act.detach().requires_grad_(True)
                live[hook.name] = act
                return act
            return None

        grad_ctx = torch.enable_grad() if incl_bwd else contextlib.nullcontext()
        with grad_ctx, self.hooks(fwd_hooks=[(n, save) for n in names]):
            out = self(*args, **kwargs)
            if incl_bwd:
                loss = loss_fn(out) if loss_fn is not None else (out if out.ndim == 0 else out.sum())
                tensors = list({id(t): t for t in live.values()}.values())
                if loss.requires_grad:
                    grads = torch.autograd.grad(loss, tensors, allow_unused=True)
                else:  # the output depends on no activation (e.g. the logits are patched)
                    grads = (None,) * len(tensors)
                by_id = {id(t): g for t, g in zip(tensors, grads)}
                for name, t in live.items():
                    g = by_id[id(t)]
                    if g is not None:
                        store[name + "_grad"] = g.detach().to(device=device or g.device)
        if isinstance(out, Tensor):
            out = out.detach() if incl_bwd else out
        return out, ActivationCache(store)


def _version(t: Tensor) -> Optional[int]:
    """The tensor's in-place version counter; None where it is not tracked (inference mode)."""
    try:
        return t._version
    except RuntimeError:
        return None
