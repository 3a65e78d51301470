"""HookedMLP: any chain of modules, with a hook point before and after every module.

Module ``i`` of the chain is ``model.layer{i}`` (the module itself is ``model.layer{i}.module``,
and may be swapped); ``layer{i}.pre`` sees its input, ``layer{i}.post`` its output. For the
study's Linear-ReLU-Linear-ReLU-Linear network ``layer0.post`` is the first Linear's output and
``layer4.post`` the logits. ``model.layout`` describes every hook point (see ``Layout``).
"""

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import torch
from jaxtyping import Float, Shaped
from torch import Tensor, nn

from hookedmlp.errors import (
    CheckpointError,
    ConfigError,
    HookedMLPError,
    HookNameError,
    ShapeError,
    UnsupportedNetworkError,
    UsageError,
)
from hookedmlp.files.checkpoint import check_state, register_architecture
from hookedmlp.hooks.point import HookPoint, hooks_suppressed
from hookedmlp.hooks.root import _TRAINING_DEPENDENT, HookedRoot, shape_variants
from hookedmlp.models.configs import LeNetConfig, MLPConfig, config_from_dict, config_to_dict
from hookedmlp.models.layout import Layout, Site
from hookedmlp.models.modules import build, describe
from hookedmlp.models.state_dict import sequential_from_state_dict
from hookedmlp.models.wrap import HOOKEDROOT_ROUTE, chain_of

__all__ = ["HookedLayer", "HookedMLP", "ChainConfig"]


# Bumped whenever any HookedLayer's module is replaced: what HookedMLP derives from its modules is then rebuilt.
_EPOCH = [0]


class HookedLayer(nn.Module):
    """One module of the chain between its two hook points: ``post(module(pre(x)))``; ``path`` is where it came from.

    ``layer.module`` may be replaced by another module; the model's layout follows.
    """

    def __init__(self, module: nn.Module, path: str = "") -> None:
        super().__init__()
        self.pre = HookPoint()
        self.module = module
        self.post = HookPoint()
        self.path = path

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "module":
            _EPOCH[0] += 1

    def forward(self, x: Tensor) -> Tensor:
        return self.post(self.module(self.pre(x)))


@dataclasses.dataclass
class _Derived:
    """What depends only on which modules the chain holds (rebuilt when one is replaced)."""

    epoch: int
    modules: list[nn.Module]
    holders: list[nn.Module]  # the modules owning parameters or buffers, in order
    mode_dependent: list[nn.Module]  # modules whose result depends on training mode
    layout: Optional[tuple[Any, Layout]] = None


@dataclasses.dataclass(frozen=True)
class ChainConfig:
    """``model.cfg``: what TransformerLens code reads from a model's config, for a chain of layers."""

    n_layers: int
    input_shape: tuple[int, ...]
    d_in: int
    d_out: int
    device: torch.device
    dtype: torch.dtype


@register_architecture("chain")
class HookedMLP(HookedRoot):
    """A hooked chain of modules: the study's MLP by default, or any network ``from_module`` accepts.

    Args:
        config: an ``MLPConfig`` (default: the study's 784-512-512-10 ReLU net) or
            ``LeNetConfig``; fresh weights.
        input_shape: the shape of one example (default: the config's).
        modules: instead of a config, the chain itself (``from_module`` and checkpoints pass it;
            a user wraps a network with ``from_module``).
        paths: each module's path in the original network.
        first_shape: what the first module reads.

    Examples:
        >>> net = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
        >>> net.hook_names[:3]
        ['layer0.pre', 'layer0.post', 'layer1.pre']
    """

    def __init__(
        self,
        config: Union[MLPConfig, LeNetConfig, None] = None,
        input_shape: Optional[Sequence[int]] = None,
        *,
        modules: Optional[Sequence[nn.Module]] = None,
        paths: Optional[Sequence[str]] = None,
        first_shape: Optional[Sequence[int]] = None,
    ) -> None:
        super().__init__()
        if modules is None:
            config = MLPConfig() if config is None else config
            if not isinstance(config, (MLPConfig, LeNetConfig)):
                raise ConfigError(
                    f"HookedMLP builds an MLPConfig or LeNetConfig, got {type(config).__name__}; "
                    "wrap an existing network with HookedMLP.from_module"
                )
            modules = config.modules()
            shape = tuple(input_shape) if input_shape is not None else config.input_shape
            first_shape = (math.prod(shape),) if isinstance(modules[0], nn.Linear) else shape
            if isinstance(modules[0], nn.Linear) and math.prod(shape) != modules[0].in_features:
                raise ShapeError(
                    f"input_shape {list(shape)} has {math.prod(shape)} elements, but the first layer takes "
                    f"{modules[0].in_features}"
                )
        elif config is not None:
            raise ConfigError("pass a config or modules, not both")
        elif input_shape is None and first_shape is None:
            raise ConfigError(
                "HookedMLP(modules=...) needs input_shape=, the shape of one example; or wrap the network "
                "with HookedMLP.from_module, which infers it"
            )
        else:
            shape = tuple(input_shape if input_shape is not None else first_shape)  # type: ignore[arg-type]
        if not modules:
            raise ConfigError("a HookedMLP needs at least one module; got none")
        first = tuple(first_shape if first_shape is not None else shape)
        for what, dims in (("input_shape", shape), ("first_shape", first)):
            if not dims or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in dims):
                raise ShapeError(f"{what} must be positive ints (one example's shape), got {list(dims)}")
        if first != shape and (len(first) != 1 or first[0] != math.prod(shape)):
            raise ShapeError(
                f"first_shape {list(first)} is neither input_shape {list(shape)} nor its flattening "
                f"[{math.prod(shape)}]"
            )
        paths = list(paths) if paths is not None else [str(i) for i in range(len(modules))]
        if len(paths) != len(modules):
            raise ConfigError(f"got {len(modules)} modules but {len(paths)} paths; pass one path per module")
        self.config = config
        self.input_shape = tuple(shape)
        self._first_shape = first
        self.n_layers = len(modules)
        for i, (module, path) in enumerate(zip(modules, paths)):
            self.add_module(f"layer{i}", HookedLayer(module, path))
        self._index_layers()
        _ = self.layout  # the chain's shapes are checked now

    def _index_layers(self) -> None:
        self.setup()
        self._layers: list[HookedLayer] = [getattr(self, f"layer{i}") for i in range(self.n_layers)]
        self._points: list[HookPoint] = [hp for layer in self._layers for hp in (layer.pre, layer.post)]

    def __setattr__(self, name: str, value: Any) -> None:
        replacing = "_layers" in self.__dict__ and name in self._modules and name.startswith("layer")
        if replacing and not isinstance(value, HookedLayer):
            raise UsageError(
                f"model.{name} is the HookedLayer holding module {name} between its two hook points; to swap "
                f"the module, set model.{name}.module = {type(value).__name__}(...) instead"
            )
        super().__setattr__(name, value)
        if replacing:  # a whole HookedLayer replaced: its hook points are new
            self._index_layers()
            _EPOCH[0] += 1

    # -- construction -------------------------------------------------------------
    @classmethod
    def from_module(
        cls, net: Union[nn.Module, Sequence[nn.Module]], input_shape: Optional[Sequence[int]] = None
    ) -> "HookedMLP":
        """Wrap an existing network whose ``forward`` runs its modules one after another.

        Works on an ``nn.Sequential`` (nested or not), a list of modules, or a module class
        such as the PyTorch quickstart's ``NeuralNetwork`` (``flatten`` + ``linear_relu_stack``;
        a leading Flatten is absorbed, so ``layer0`` is ``linear_relu_stack.0``). Modules are
        shared, not copied (in-place activations get an out-of-place copy). The network is
        run on a probe batch to prove the hooked model computes the same thing; a network that
        does anything else between its modules (``F.relu`` in ``forward``, a skip connection,
        a reused module) is refused with the place it happens.

        Args:
            net: the network.
            input_shape: one example's shape (default: inferred from the first Linear or Conv2d).

        Returns:
            The hooked model, in the network's training mode.

        Raises:
            UnsupportedNetworkError: the network is not such a chain (the message names the module
                and the place, and points to writing a ``HookedRoot`` subclass), or cannot run on
                the probe (pass ``input_shape``).

        Examples:
            >>> seq = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.SiLU(), nn.Linear(32, 10))
            >>> wrapped = HookedMLP.from_module(seq)
            >>> wrapped.layer0.path, wrapped.activation_shape("layer1.post")
            ('1', (32,))
        """
        chain = chain_of(net, input_shape)
        model = cls(
            modules=chain.modules, paths=chain.paths, input_shape=chain.input_shape, first_shape=chain.first_shape
        )
        model.training = net.training if isinstance(net, nn.Module) else True
        modes = {m: m.training for m in model.modules()}
        try:
            for m in model.modules():
                m.training = False
            with torch.no_grad():
                got = model(chain.probe)
        finally:
            for m, mode in modes.items():
                m.training = mode
        if got.shape != chain.expected.shape or not torch.allclose(got, chain.expected, rtol=1e-6, atol=1e-6):
            diff = (
                f"max difference {float((got - chain.expected).abs().max()):.3g}"
                if got.shape == chain.expected.shape
                else f"shape {list(got.shape)} instead of {list(chain.expected.shape)}"
            )
            raise UnsupportedNetworkError(
                f"the chain of {type(net).__name__}'s modules computes something else than the "
                f"network on a probe batch ({diff}); {HOOKEDROOT_ROUTE}"
            )
        return model

    @classmethod
    def from_sequential(
        cls, seq: Union[nn.Sequential, Sequence[nn.Module]], input_shape: Optional[Sequence[int]] = None
    ) -> "HookedMLP":
        """``from_module`` for an ``nn.Sequential`` or a list of modules."""
        return cls.from_module(seq, input_shape)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor], activation: Optional[str] = None) -> "HookedMLP":
        """Load a plain state dict of a Linear-activation stack (e.g. the PyTorch quickstart's ``model.pth``).

        The sizes come from the ``<prefix>{i}.weight`` / ``.bias`` keys (Linear layers at every
        other index). The activation between them cannot be read from the file: ``activation``
        (default ``"relu"``, with a warning saying so) names it. Keys of anything else (batch norm
        buffers, conv weights) are refused: build that network and use ``from_module``.

        Examples:
            >>> seq = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10))
            >>> HookedMLP.from_state_dict(seq.state_dict(), activation="relu").d_out
            10
        """
        return cls.from_module(sequential_from_state_dict(state_dict, activation))

    def to_sequential(self) -> nn.Sequential:
        """A plain ``nn.Sequential`` sharing this model's modules (with a leading Flatten where the model flattens)."""
        flatten = [nn.Flatten()] if self._first_shape != self.input_shape and len(self._first_shape) == 1 else []
        return nn.Sequential(*flatten, *(layer.module for layer in self._layers))

    # -- the layout ------------------------------------------------------------------
    def _derived(self) -> _Derived:
        d = self.__dict__.get("_derived_memo")
        if d is None or d.epoch != _EPOCH[0]:
            modules = [layer._modules["module"] for layer in self._layers]
            inner = [m for top in modules for m in top.modules()]
            d = _Derived(
                _EPOCH[0],
                modules,
                [m for m in inner if m._parameters or m._buffers],
                [m for m in inner if isinstance(m, _TRAINING_DEPENDENT)],
            )
            self.__dict__["_derived_memo"] = d
        return d

    def structure_key(self) -> tuple[Any, ...]:
        d = self._derived()
        return (d.epoch, *(m.training for m in d.mode_dependent))

    def reference_tensor(self) -> Optional[Tensor]:
        for holder in self._derived().holders:
            for t in holder._parameters.values():
                if t is not None:
                    return t
        return super().reference_tensor()

    def state_tensors(self) -> list[tuple[str, Tensor]]:
        return [
            (f"layer{i}.module.{k}", t)
            for i, m in enumerate(self._derived().modules)
            for k, t in m.state_dict(keep_vars=True).items()
        ]

    def state_version(self) -> tuple[Any, ...]:
        # a list comprehension, not a generator: this runs at every steering entry (model_fingerprint's memo key)
        return tuple(
            [
                (id(t), t._version, t.data_ptr())
                for m in self._derived().holders
                for d in (m._parameters, m._buffers)
                for t in d.values()
                if t is not None
            ]
        )

    def training_mode_modules(self) -> list[str]:
        mode_dependent = {id(m) for m in self._derived().mode_dependent}
        return [name for name, m in self.named_modules() if id(m) in mode_dependent]

    @property
    def layout(self) -> Layout:
        """The hook points' positions and shapes and the modules' paths, rebuilt when a module changes."""
        d = self._derived()
        key = self.structure_key()
        if d.layout is None or d.layout[0] != key:
            d.layout = (
                key,
                Layout(d.modules, [layer.path for layer in self._layers], self._first_shape, self.reference_tensor()),
            )
        return d.layout[1]

    @property
    def d_in(self) -> int:
        return math.prod(self.input_shape)

    @property
    def d_out(self) -> int:
        return math.prod(self.layout.output_shape)

    @property
    def cfg(self) -> ChainConfig:
        ref = self.reference_tensor()
        return ChainConfig(
            self.n_layers,
            self.input_shape,
            self.d_in,
            self.d_out,
            ref.device if ref is not None else torch.device("cpu"),
            ref.dtype if ref is not None else torch.float32,
        )

    def activation_shapes(self) -> dict[str, tuple[int, ...]]:
        return {s.name: s.shape for s in self.layout.sites}

    def activation_shape(self, name: str) -> tuple[int, ...]:
        return self.layout.site(self.resolve_name(name)).shape

    def accepted_input_shapes(self) -> list[tuple[int, ...]]:
        shapes = self.__dict__.get("_accepted")
        if shapes is None:
            shapes = self.__dict__["_accepted"] = list(
                dict.fromkeys([self._first_shape, *shape_variants(self.input_shape)])
            )
        return shapes

    def act_name(self, name: str, layer: Optional[int] = None, *rest: Any) -> str:
        """``("post", 0)`` -> ``"layer0.post"``; negative layers count from the end."""
        if name not in ("pre", "post") or layer is None or rest:
            raise HookNameError(f"tuple keys of a HookedMLP are ('pre' or 'post', layer), got {(name, layer, *rest)!r}")
        return f"layer{layer + self.n_layers if layer < 0 else layer}.{name}"

    # -- forward -----------------------------------------------------------------------
    def forward(
        self,
        x: Shaped[Tensor, "batch *example"],  # noqa: F821 (a jaxtyping shape)
        start_at: Optional[str] = None,
        stop_at: Optional[str] = None,
        *,
        start_at_layer: Optional[int] = None,
        stop_at_layer: Optional[int] = None,
    ) -> Float[Tensor, "batch *out"]:  # noqa: F821 (a jaxtyping shape)
        """Run the network, or the part of it between two hook points.

        ``forward(forward(x, stop_at=h), start_at=h)`` equals ``forward(x)``.

        Args:
            x: a batch of inputs; with ``start_at``, the activation at that hook point.
            start_at: resume from this hook point: ``x`` is its activation as the next module
                sees it; hooks at ``start_at`` do not run (they ran when ``x`` was made).
            stop_at: stop at this hook point and return its activation, after its hooks ran.
            start_at_layer: TransformerLens' form: ``x`` is module ``i``'s input (its ``pre``
                hooks run).
            stop_at_layer: run modules ``0 .. i-1`` and return module ``i``'s input (its ``pre``
                hooks do not run); negative ``i`` counts from the end.

        Examples:
            >>> h = tiny(tiny_x, stop_at="layer1.post")
            >>> torch.equal(tiny(h, start_at="layer1.post"), tiny(tiny_x))
            True
        """
        modules = self._derived().modules
        if start_at is None and stop_at is None and start_at_layer is None and stop_at_layer is None:
            first, last = 0, 2 * self.n_layers
            x = self.prepare_input(x)
        else:
            layout = self.layout
            if start_at is not None:
                self.resolve_name(start_at)
            if stop_at is not None:
                self.resolve_name(stop_at)
            span = layout.span(start_at, stop_at, start_at_layer, stop_at_layer)
            first, last = span.first, span.last
            x = self._resumed(x, layout.input_site(span), start_at) if span.resumes else self.prepare_input(x)
        points = self._points
        # One scan for the points with hooks; module i runs at position 2i + 1 (see Layout).
        active = [
            p
            for p in range(first, last)
            if (hp := points[p]).fwd_hooks or hp.bwd_hooks or hp._forward_hooks or hp._forward_pre_hooks
        ]
        done = first  # the positions before `done` have run
        for p in active:
            for i in range(done // 2, (p + 1) // 2):
                x = modules[i](x)
            hp = points[p]
            # PyTorch's own hooks on a hook point need its __call__; hookedmlp's run in forward
            x = hp(x) if hp._forward_hooks or hp._forward_pre_hooks else hp.forward(x)
            done = p + 1
        for i in range(done // 2, last // 2):
            x = modules[i](x)
        return x

    def _resumed(self, x: Any, site: Site, start_at: Optional[str]) -> Tensor:
        what = f"start_at={start_at!r}" if start_at else f"start_at_layer={site.layer + (site.side == 'post')}"
        if isinstance(x, Tensor) and (x.ndim < 1 or tuple(x.shape[1:]) != site.shape):
            raise ShapeError(
                f"{what} expects the activation at {site.name!r}, of shape "
                f"[batch, {', '.join(map(str, site.shape))}], got {list(x.shape)}"
            )
        return self.check_tensor(x, f"activation for {what}")

    def clean_activations(self, x: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
        names = self.check_hook_names(names)
        last = max(self.layout.site(n).position for n in names)
        with torch.no_grad(), hooks_suppressed():
            _, cache = self.run_with_cache(x, names_filter=names, stop_at=self.layout.sites[last].name)
        return dict(cache.cache_dict)

    # -- checkpoints ----------------------------------------------------------------------
    def to_checkpoint(self) -> dict[str, Any]:
        layers = [
            {**describe(layer.module, f"layer{i} ({layer.path})"), "path": layer.path}
            for i, layer in enumerate(self._layers)
        ]
        return {
            "layers": layers,
            "input_shape": list(self.input_shape),
            "first_shape": list(self._first_shape),
            "config": config_to_dict(self.config) if self.config is not None else None,
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], source: str) -> "HookedMLP":
        layers, shape, first = ckpt.get("layers"), ckpt.get("input_shape"), ckpt.get("first_shape")
        if (
            not isinstance(layers, list)
            or not layers
            or not all(isinstance(s, list) and all(isinstance(n, int) and n > 0 for n in s) for s in (shape, first))
        ):
            raise CheckpointError(
                f"{source} lacks a list of layers and positive input and first shapes; the file is "
                "corrupt or was edited"
            )
        modules = [build(d, f"{source} layer {i}", device="meta") for i, d in enumerate(layers)]
        paths = [str(d.get("path", i)) for i, d in enumerate(layers)]
        try:
            model = cls(modules=modules, paths=paths, input_shape=shape, first_shape=first)
        except (ShapeError, ConfigError) as e:
            raise CheckpointError(f"{source} describes an impossible architecture: {e}") from None
        check_state(model, ckpt["state_dict"], source)
        model.load_state_dict(ckpt["state_dict"], assign=True)
        try:
            model.config = config_from_dict(ckpt.get("config"), f"{source} config")
        except ConfigError as e:
            raise CheckpointError(f"{e}; the file is corrupt or was edited") from None
        if model.config is not None:
            with torch.device("meta"):
                expected = [describe(m, "") for m in model.config.modules()]
            if expected != [describe(layer.module, "") for layer in model._layers]:
                raise CheckpointError(
                    f"{source} has a config that does not describe its layers ({model.config}); the "
                    "file is corrupt or was edited"
                )
        return model

    # -- display ---------------------------------------------------------------------------
    def hook_table(self) -> list[tuple[str, str, str]]:
        """``(hook name, [batch, *shape], what it is)`` for every hook point; ``hookedmlp hooks`` prints it.

        "What it is" names the module and, where it differs from the layer's index, its path
        in the original network (``(from linear_relu_stack.0)``).
        """
        rows = []
        for site in self.layout.sites:
            layer = self.layout.layers[site.layer]
            where = "input of" if site.side == "pre" else "output of"
            shape = "[" + ", ".join(["batch", *map(str, site.shape)]) + "]"
            origin = f"  (from {layer.path})" if layer.path != str(layer.index) else ""
            rows.append((site.name, shape, f"{where} {_one_line(layer.module)}{origin}"))
        return rows

    def __repr__(self) -> str:
        try:
            rows = self.hook_table()
        except HookedMLPError as e:  # a swapped-in module that does not fit: say so rather than fail to print
            return f"HookedMLP({self.n_layers} layers, not a working chain: {e})"
        head = (
            f"HookedMLP(input {list(self.input_shape)} -> output {list(self.layout.output_shape)}; {self.n_layers} "
            f"layers, {len(self.hook_dict)} hook points, {len(self.attached_hooks())} hooks attached"
        )
        return "\n".join([head, *(f"  {name:<13} {shape:<20} {what}" for name, shape, what in rows), ")"])


def _one_line(module: nn.Module) -> str:
    text = repr(module)
    return text if "\n" not in text else f"{type(module).__name__}(...)"
