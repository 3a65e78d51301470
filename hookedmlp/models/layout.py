"""Layout: the hook points of a chain of modules, in one place, derived from the live modules.

Module ``i`` of the chain is ``layer{i}``; its hook points are ``layer{i}.pre`` (its input)
and ``layer{i}.post`` (its output), at positions ``2i`` and ``2i + 1`` of the hook order.
``layer{i}.post`` and ``layer{i+1}.pre`` carry the same tensor; the post hooks run first.
A ``Layout`` knows every hook point's position and per-example shape, and each module's
original path and whether it is affine. ``HookedMLP.layout`` rebuilds it whenever a module
is replaced or changes mode, so it never describes a network that is no longer there.
"""

import dataclasses
from collections.abc import Sequence
from typing import Optional

import torch
from torch import nn

from hookedmlp.errors import HookNameError, ShapeError, UsageError, did_you_mean
from hookedmlp.models.capture import HOOKEDROOT_ROUTE
from hookedmlp.models.modules import DESCRIBABLE, is_affine, keeps_shape

__all__ = ["Site", "Layer", "Layout", "Span"]


@dataclasses.dataclass(frozen=True)
class Site:
    """One hook point: its name, position in hook order, module index, side and per-example shape."""

    name: str
    position: int
    layer: int
    side: str  # "pre" (the module's input) or "post" (its output)
    shape: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Layer:
    """One module of the chain: its index, the module, its path in the original network, and whether it is affine."""

    index: int
    module: nn.Module
    path: str
    affine: bool


@dataclasses.dataclass(frozen=True)
class Span:
    """Hook positions ``first <= p < last`` of a partial forward pass; ``resumes``: the input is an activation."""

    first: int
    last: int
    resumes: bool

    @property
    def layers(self) -> range:
        """The modules that run (module ``i`` runs at position ``2i + 1``, between its two hook points)."""
        return range(self.first // 2, self.last // 2)


def _shape_after(
    module: nn.Module, shape: tuple[int, ...], index: int, path: str, ref: Optional[torch.Tensor]
) -> tuple[int, ...]:
    who = f"layer{index} ({type(module).__name__}{f', from {path}' if path != str(index) else ''})"
    if isinstance(module, nn.Linear):
        if shape[-1:] != (module.in_features,):
            raise ShapeError(
                f"{who} reads {module.in_features} features, but its input has shape {list(shape)} per "
                f"example; replace it with a module that takes {list(shape)}, or fix the module before it"
            )
        return (*shape[:-1], module.out_features)
    if keeps_shape(module):
        return shape
    try:
        out = _run_probe(module, shape, ref)
    except Exception as e:  # say where the chain broke
        raise ShapeError(
            f"{who} cannot take an input of shape {list(shape)} per example ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); replace it with a module that does, or fix the "
            "module before it"
        ) from None
    if not isinstance(out, torch.Tensor):
        raise ShapeError(
            f"{who} returns {type(out).__name__}, not a tensor; a chain needs one tensor between modules: "
            f"wrap it in a module returning one tensor, or {HOOKEDROOT_ROUTE}"
        )
    return tuple(out.shape[1:])


def _run_probe(module: nn.Module, shape: tuple[int, ...], ref: Optional[torch.Tensor]) -> object:
    """``module`` on a batch of two zero examples of ``shape``, without touching its state."""
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    if DESCRIBABLE.get(type(module).__name__) is type(module):
        # torch.nn's own modules run on the meta device with meta stand-ins for their weights: no memory, whatever
        # sizes a file claims, and a training-mode batch norm's running statistics are left alone
        state = {
            name: torch.empty_like(t, device="meta")
            for name, t in (*module.named_parameters(), *module.named_buffers())
        }
        with torch.no_grad():
            return torch.func.functional_call(module, state, (torch.zeros(2, *shape, dtype=dtype, device="meta"),))
    modes = {m: m.training for m in module.modules()}
    try:
        for m in modes:  # an opaque module runs for real: in eval mode, so batch norms inside it learn nothing
            m.training = False
        with torch.no_grad():
            return module(torch.zeros(2, *shape, dtype=dtype, device=ref.device if ref is not None else None))
    finally:
        for m, mode in modes.items():
            m.training = mode


class Layout:
    """The hook points of ``modules`` run in order on inputs of per-example shape ``first_shape``."""

    def __init__(
        self,
        modules: Sequence[nn.Module],
        paths: Sequence[str],
        first_shape: Sequence[int],
        ref: Optional[torch.Tensor] = None,
    ) -> None:
        self.layers = tuple(Layer(i, m, p, is_affine(m)) for i, (m, p) in enumerate(zip(modules, paths)))
        sites: list[Site] = []
        shape = tuple(first_shape)
        for i, layer in enumerate(self.layers):
            sites.append(Site(f"layer{i}.pre", 2 * i, i, "pre", shape))
            shape = _shape_after(layer.module, shape, i, layer.path, ref)
            sites.append(Site(f"layer{i}.post", 2 * i + 1, i, "post", shape))
        self.sites = tuple(sites)
        self._by_name = {s.name: s for s in sites}

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sites]

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.sites[-1].shape

    def site(self, name: str) -> Site:
        try:
            return self._by_name[name]
        except KeyError:
            raise HookNameError(f"unknown hook {name!r}{did_you_mean(name, self.names)}") from None

    def next_layer(self, name: str) -> int:
        """The index of the module that runs right after hook point ``name`` (``n_layers`` after the last)."""
        s = self.site(name)
        return s.layer + (s.side == "post")

    def carrier(self, name: str) -> str:
        """The earliest hook point carrying the same tensor as ``name`` (``layer{i}.pre`` -> ``layer{i-1}.post``)."""
        s = self.site(name)
        return self.sites[s.position - 1].name if s.side == "pre" and s.layer > 0 else name

    def post(self, layer: int) -> str:
        return self.sites[2 * layer + 1].name

    def span(
        self,
        start_at: Optional[str] = None,
        stop_at: Optional[str] = None,
        start_at_layer: Optional[int] = None,
        stop_at_layer: Optional[int] = None,
    ) -> Span:
        """The hook positions a forward pass with these arguments runs (see ``HookedMLP.forward``)."""
        if start_at is not None and start_at_layer is not None or stop_at is not None and stop_at_layer is not None:
            raise UsageError("pass start_at or start_at_layer (and stop_at or stop_at_layer), not both")
        n = len(self.layers)
        first, resumes = 0, False
        if start_at is not None:
            first, resumes = self.site(start_at).position + 1, True
        elif start_at_layer is not None:
            layer = self._layer_index(start_at_layer, "start_at_layer", n - 1)
            first, resumes = 2 * layer, layer > 0
        last = 2 * n
        if stop_at is not None:
            last = self.site(stop_at).position + 1
        elif stop_at_layer is not None:
            last = 2 * self._layer_index(stop_at_layer, "stop_at_layer", n)
        if last < first:
            stop = f"stop_at={stop_at!r}" if stop_at is not None else f"stop_at_layer={stop_at_layer}"
            start = f"start_at={start_at!r}" if start_at is not None else f"start_at_layer={start_at_layer}"
            raise UsageError(
                f"{stop} comes before {start}, so the pass would stop before it starts; hook order is "
                f"{', '.join(self.names)}"
            )
        return Span(first, last, resumes)

    def _layer_index(self, i: int, what: str, high: int) -> int:
        n = len(self.layers)
        if isinstance(i, bool) or not isinstance(i, int) or not -n <= i <= high:
            raise UsageError(f"{what} must be an int from {-n} to {high} (this chain has {n} layers), got {i!r}")
        return i + n if i < 0 else i

    def input_site(self, span: Span) -> Site:
        """The hook point whose activation a resumed pass takes as input."""
        return self.sites[span.first - 1] if span.first else self.sites[0]
