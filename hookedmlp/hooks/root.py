"""HookedRoot: TransformerLens' ``HookedRootModule`` API, plus steering and interventions.

Subclass it, put ``HookPoint`` modules where activations flow (in ``__init__``), call them in
``forward``, and call ``self.setup()`` at the end of ``__init__``: the model then has
``add_hook``, ``hooks()``, ``run_with_hooks``, ``run_with_cache``, ``steer``, ``ablate``,
``patch`` and ``clamp``, and the analysis works on it. ``HookedMLP`` is such a subclass.

Beyond TransformerLens: names are checked (an unknown name or a filter that matches nothing
raises ``HookNameError`` with the closest valid names, before anything is attached); glob
patterns select names; hook contexts remove exactly their own hooks; and every cache holds
only its own pass's activations, whatever other threads or nested calls do.
"""

import contextlib
import fnmatch
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from hookedmlp.checks import check_choice
from hookedmlp.errors import (
    ArgumentTypeError,
    BatchDimError,
    CheckpointError,
    HookNameError,
    InputDtypeError,
    ShapeError,
    UsageError,
    did_you_mean,
    warn,
)
from hookedmlp.files.checkpoint import load_checkpoint, load_pretrained, save_checkpoint
from hookedmlp.hooks.cache import ActivationCache
from hookedmlp.hooks.context import HookContext, HookSpec, attach_all
from hookedmlp.hooks.point import (
    SELECTIONS,
    Direction,
    HookFn,
    HookHandle,
    HookPoint,
    check_hook_args,
    guarding,
    hooks_suppressed,
)
from hookedmlp.hooks.recording import CLAIM, PASS, Device, Recorder
from hookedmlp.steering import contrast, interventions
from hookedmlp.steering.vector import SteeringVector

__all__ = ["HookedRoot", "HookGroup", "NamesFilter"]

NamesFilter = Union[None, str, Sequence[str], Callable[[str], bool]]
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


_TRAINING_DEPENDENT = (
    nn.modules.dropout._DropoutNd,
    nn.modules.batchnorm._BatchNorm,
    nn.RReLU,
    nn.modules.instancenorm._InstanceNorm,
)


def shape_variants(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """``shape``, its flattening, and for one channel of ``(1, H, W)`` also ``(H, W)``: the views an input may take."""
    variants = [shape, (math.prod(shape),)]
    if len(shape) == 3 and shape[0] == 1:
        variants.append(shape[1:])
    return list(dict.fromkeys(variants))


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
    """Base class: names the model's HookPoints and manages the hooks on them.

    Subclasses set ``self.input_shape`` (one example's shape) and call ``self.setup()``.
    """

    hook_dict: dict[str, HookPoint]
    mod_dict: dict[str, nn.Module]
    input_shape: tuple[int, ...]

    def __init__(self) -> None:
        super().__init__()
        self.context_level = 0
        self.is_caching = False  # TransformerLens' flag: set by caching hooks, cleared by reset_hooks()
        self.meta: dict[str, Any] = {}
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
        names = self.hook_names
        if names_filter is None:
            return names
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
        chosen: set[str] = set()
        for pattern in patterns:
            if not isinstance(pattern, str):
                raise ArgumentTypeError(f"names filter entries must be str, got {type(pattern).__name__} ({pattern!r})")
            if pattern in self.hook_dict:
                chosen.add(pattern)
            elif any(c in pattern for c in "*?["):
                matched = fnmatch.filter(names, pattern)
                if not matched:
                    raise HookNameError(f"pattern {pattern!r} matched no hook point{did_you_mean(pattern, names)}")
                chosen.update(matched)
            else:
                raise HookNameError(f"unknown hook {pattern!r}{did_you_mean(pattern, names)}")
        return [n for n in names if n in chosen]

    def resolve_name(self, name: str) -> str:
        """``name`` if it names exactly one hook point (no pattern), else ``HookNameError``."""
        if not isinstance(name, str):
            raise ArgumentTypeError(f"expected one hook name (str), got {type(name).__name__}")
        names = self.resolve_names(name)
        if names != [name]:
            raise HookNameError(
                f"expected one hook name, got the pattern {name!r} matching {len(names)} hook points; "
                f"pick one, e.g. {names[0]!r}"
            )
        return name

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

    # -- inputs and shapes ----------------------------------------------------------
    def accepted_input_shapes(self) -> list[tuple[int, ...]]:
        """The shapes of one example ``forward`` accepts; inputs are reshaped to the first."""
        shape = getattr(self, "input_shape", None)
        if shape is None:
            raise UsageError(
                f"{type(self).__name__} has no input_shape; set self.input_shape (one example's shape) in __init__"
            )
        return shape_variants(tuple(shape))

    def reference_tensor(self) -> Optional[Tensor]:
        """A parameter (or buffer) whose dtype and device inputs must match; None for a model without any."""
        for t in self.parameters():
            return t
        for t in self.buffers():
            if t.is_floating_point():
                return t
        return None

    def check_tensor(self, x: Any, what: str = "input") -> Tensor:
        """``x`` if it is a non-empty floating-point tensor on the model's dtype and device."""
        if not isinstance(x, Tensor):
            raise InputDtypeError(f"expected a torch.Tensor {what}, got {type(x).__name__}")
        if not x.is_floating_point():
            raise InputDtypeError(
                f"expected a floating-point {what} (pixels in [0, 1]), got dtype {x.dtype}; "
                "convert with x.float() / 255 for uint8 images"
            )
        ref = self.reference_tensor()
        if ref is not None and (x.dtype is not ref.dtype or x.device != ref.device):
            if x.dtype != ref.dtype:
                raise InputDtypeError(
                    f"{what} dtype {x.dtype} does not match the model's {ref.dtype}; "
                    f"use x.to({ref.dtype}) or model.to({x.dtype})"
                )
            raise InputDtypeError(
                f"{what} is on {x.device} but the model is on {ref.device}; use x.to({str(ref.device)!r})"
            )
        if x.ndim == 0 or x.shape[0] == 0:
            raise ShapeError(f"empty batch: {what} has shape {list(x.shape)}; expected at least one example")
        return x

    def prepare_input(self, x: Any) -> Tensor:
        """Check a batch ``[batch, *shape]`` (``shape`` in ``accepted_input_shapes()``), reshaped to ``input_shape``."""
        shapes = self.accepted_input_shapes()
        tail = tuple(x.shape[1:]) if isinstance(x, Tensor) and x.ndim >= 2 else None
        if isinstance(x, Tensor) and tail not in shapes:
            expected = " or ".join("[batch, " + ", ".join(map(str, s)) + "]" for s in shapes)
            hint = "; add a batch dimension with x.unsqueeze(0)" if tuple(x.shape) in shapes else ""
            raise ShapeError(f"expected input of shape {expected}, got {list(x.shape)}{hint}")
        x = self.check_tensor(x)
        return x if tail == shapes[0] else x.reshape(x.shape[0], *shapes[0])

    def as_batch(self, x: Tensor) -> Tensor:
        """Like ``prepare_input``, but one example (without a batch dimension) becomes a batch of one."""
        if isinstance(x, Tensor) and tuple(x.shape) in self.accepted_input_shapes():
            x = x.unsqueeze(0)
        return self.prepare_input(x)

    def structure_key(self) -> tuple[Any, ...]:
        """Changes whenever a module is replaced, changes mode, or a parameter changes shape."""
        return tuple((id(m), m.training) for m in self.modules()) + tuple(p.shape for p in self.parameters())

    def state_tensors(self) -> list[tuple[str, Tensor]]:
        """Every parameter and buffer of the state dict, by name (what ``model_fingerprint`` hashes)."""
        return list(self.state_dict(keep_vars=True).items())

    def state_version(self) -> tuple[Any, ...]:
        """Changes whenever a parameter or buffer is replaced or edited in place (identities, storages, versions)."""
        return tuple((id(t), t._version, t.data_ptr()) for _, t in self.state_tensors())

    def activation_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of one example's activation at every hook point (from a clean probe pass, memoised)."""
        key = self.structure_key()
        memo = self.__dict__.get("_shapes_memo")
        if memo is not None and memo[0] == key:
            return memo[1]
        ref = self.reference_tensor()
        probe = torch.zeros(
            2,
            *self.accepted_input_shapes()[0],
            dtype=ref.dtype if ref is not None else torch.float32,
            device=ref.device if ref is not None else None,
        )
        shapes = {k: tuple(v.shape[1:]) for k, v in self.clean_activations(probe, self.hook_names).items()}
        self.__dict__["_shapes_memo"] = (key, shapes)
        return shapes

    def activation_shape(self, name: str) -> tuple[int, ...]:
        """The shape of one example's activation at hook point ``name``."""
        return self.activation_shapes()[self.resolve_name(name)]

    def training_mode_modules(self) -> list[str]:
        """The modules that compute something else in training mode (dropout, batch norm...), by path."""
        return [name for name, m in self.named_modules() if name and isinstance(m, _TRAINING_DEPENDENT)]

    def check_hook_names(self, names: Any, what: str = "names") -> list[str]:
        """``names`` as a list of exact hook names (at least one), each checked (``HookNameError`` with the closest)."""
        if isinstance(names, str) or not isinstance(names, Sequence):
            raise ArgumentTypeError(f"{what} must be a list of hook names, got {type(names).__name__}")
        if not names:
            raise UsageError(f"{what} is empty; pass at least one hook name, e.g. {self.hook_names[-1]!r}")
        return [self.resolve_name(n) for n in names]

    def clean_activations(self, x: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
        """Activations at ``names`` from a pass where no hook runs (no steering, no intervention), without grad."""
        names = self.check_hook_names(names)
        with torch.no_grad(), hooks_suppressed():
            _, cache = self.run_with_cache(x, names_filter=names)
        return dict(cache.cache_dict)

    # -- files ---------------------------------------------------------------------------
    def save(self, path: Any, meta: Optional[dict[str, Any]] = None) -> None:
        """Write a checkpoint atomically: the architecture, weights, buffers and ``meta`` (default ``self.meta``)."""
        save_checkpoint(self, path, meta)

    @classmethod
    def load(cls, path: Any, device: Device = None) -> Any:
        """Load a checkpoint written by ``save`` (``weights_only``; checked against its architecture), in eval mode."""
        model = load_checkpoint(path, device)
        if not isinstance(model, cls):
            raise CheckpointError(
                f"{str(path)!r} holds a {type(model).__name__}, not a {cls.__name__}; load it with "
                f"{type(model).__name__}.load or hookedmlp.load"
            )
        return model

    @classmethod
    def from_pretrained(cls, name: str = "mnist-mlp", device: Device = None) -> Any:
        """A model shipped with the package (``"mnist-mlp"``: the study's network), its sha256 checked, in eval mode.

        Examples:
            >>> HookedMLP.from_pretrained("mnist-mlp").hook_names[-1]
            'layer4.post'
        """
        model = load_pretrained(name, device)
        if not isinstance(model, cls):
            raise CheckpointError(f"pretrained {name!r} is a {type(model).__name__}, not a {cls.__name__}")
        return model

    def hook_table(self) -> list[tuple[str, str, str]]:
        """``(hook name, [batch, *shape], what it is)`` for every hook point; ``hookedmlp hooks`` prints it."""
        shapes = self.activation_shapes()
        return [
            (n, "[" + ", ".join(["batch", *map(str, shapes[n])]) + "]", "hook point in forward")
            for n in self.hook_names
        ]

    # -- steering and other interventions ------------------------------------------
    def steering_vector(
        self,
        a: Any,
        b: Any,
        hook: Union[str, Sequence[str]],
        coeff: float = 1.0,
        method: str = "first",
        exemplar: int = 0,
        data: Any = None,
    ) -> "SteeringVector":
        """``coeff * (act_hook(a) - act_hook(b))`` as a ``SteeringVector``, computed with no hook running.

        Args:
            a: the positive side: a class label (a digit) or inputs (one example or a batch, averaged).
            b: the negative side, like ``a``.
            hook: a hook name or glob, or a list of them: the vector has a tensor at each.
            coeff: the coefficient (finite).
            method: for labels, ``"first"`` (the ``exemplar``-th example of the class, 0 for the
                study's first training image) or ``"mean"`` (the class mean).
            exemplar: which example of each class ``"first"`` takes (0-based).
            data: ``(images, labels)`` or a labelled ``Dataset`` for class labels (default: MNIST's
                training set, for MNIST-shaped models only).

        Examples:
            >>> model.steering_vector(3, 1, "layer0.post").label
            '3 - 1'
        """
        return contrast.build_steering_vector(
            self, a, b, hook, coeff=coeff, method=method, exemplar=exemplar, data=data
        )

    def steer(
        self,
        vector: Optional["SteeringVector"] = None,
        *,
        a: Any = None,
        b: Any = None,
        hook: Union[str, Sequence[str], None] = None,
        coeff: float = 1.0,
        method: str = "first",
        exemplar: int = 0,
        data: Any = None,
    ) -> HookContext:
        """Context manager adding a steering vector: ``with model.steer(a=3, b=1, hook="layer0.post"):``.

        Pass a ``SteeringVector`` (scaled by ``coeff``), or ``a``, ``b`` and ``hook`` to build one
        (see ``steering_vector``). Nested contexts add up; leaving one removes exactly its hooks.

        Examples:
            >>> ones = images[labels == 1][:5]
            >>> with model.steer(a=3, b=1, hook="layer0.post"):
            ...     model(ones).argmax(-1).tolist()
            [3, 3, 3, 3, 3]
        """
        if vector is not None:
            if not isinstance(vector, SteeringVector):
                raise ArgumentTypeError(
                    f"steer() takes a SteeringVector, got {type(vector).__name__}; or pass a=, b=, hook="
                )
            if a is not None or b is not None or hook is not None:
                raise UsageError("pass either a SteeringVector or a=, b=, hook=, not both")
            return vector.apply(self, coeff=coeff)
        missing = [k for k, v in (("a", a), ("b", b), ("hook", hook)) if v is None]
        if missing:
            raise UsageError(f"steer() needs a SteeringVector or all of a=, b=, hook=; missing {', '.join(missing)}")
        return self.steering_vector(a, b, hook, coeff=coeff, method=method, exemplar=exemplar, data=data).apply(self)

    def ablate(self, direction: Any, hook: str) -> HookContext:
        """Context manager projecting ``direction`` out of the activation at ``hook`` (see ``interventions.ablate``).

        Examples:
            >>> with tiny.ablate(torch.tensor([1.0] + [0.0] * 7), "layer0.post"):
            ...     _, cache = tiny.run_with_cache(tiny_x, names_filter="layer0.post")
            >>> cache["layer0.post"][:, 0].abs().max().item()
            0.0
        """
        return interventions.ablate(self, direction, hook)

    def patch(self, hook: str, activations: Any) -> HookContext:
        """Context manager replacing the activation at ``hook`` (see ``interventions.patch``).

        Examples:
            >>> _, clean = tiny.run_with_cache(tiny_x)
            >>> with tiny.patch("layer1.post", clean):
            ...     torch.equal(tiny(torch.zeros_like(tiny_x)), tiny(tiny_x))
            True
        """
        return interventions.patch(self, hook, activations)

    def clamp(self, hook: str, index: Any, value: Any) -> HookContext:
        """Context manager fixing units ``index`` at ``hook`` to ``value`` (see ``interventions.clamp``).

        Examples:
            >>> with tiny.clamp("layer1.post", [0, 2], 5.0):
            ...     _, cache = tiny.run_with_cache(tiny_x, names_filter="layer1.post")
            >>> cache["layer1.post"][0, [0, 2]].tolist()
            [5.0, 5.0]
        """
        return interventions.clamp(self, hook, index, value)
