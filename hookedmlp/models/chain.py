"""HookedMLP: a chain of modules, the graph of a chain, with a hook point before and after every module.

Module ``i`` of the chain is ``model.layer{i}.module`` (it may be swapped); ``layer{i}.pre``
sees its input, ``layer{i}.post`` its output. For the study's Linear-ReLU-Linear-ReLU-Linear
network ``layer0.post`` is the first Linear's output and ``layer4.post`` the logits. The chain
is a network like any other: its graph is captured (``HookPoint`` calls included) and run as a
``HookedGraph``; ``model.layout`` describes every hook point (see ``Layout``).
"""

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Optional, Union

import torch
import torch.fx as fx
from jaxtyping import Float, Shaped
from torch import Tensor, nn

from hookedmlp.errors import ConfigError, HookNameError, ShapeError, UsageError
from hookedmlp.files.checkpoint import register_architecture
from hookedmlp.hooks.point import HookPoint, hooks_suppressed
from hookedmlp.models.api import HookedModel
from hookedmlp.models.capture import Captured, capture_graph
from hookedmlp.models.chain_build import ChainBuilders
from hookedmlp.models.configs import LeNetConfig, MLPConfig
from hookedmlp.models.facts import TRAINING_DEPENDENT, shape_variants
from hookedmlp.models.graph import HookedGraph
from hookedmlp.models.layout import Layout, Site
from hookedmlp.models.sites import Site as GraphSite

__all__ = ["HookedLayer", "HookedMLP", "ChainConfig", "Chain"]


class HookedLayer(nn.Module):
    """One module of the chain between its two hook points: ``post(module(pre(x)))``; ``path`` is where it came from.

    ``layer.module`` may be replaced by another module; the model's layout follows.
    """

    def __init__(self, module: nn.Module, path: str = "") -> None:
        super().__init__()
        self.pre = HookPoint()
        self.post = HookPoint()
        self.module = module
        self.path = path

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "module":  # a module editing its input in place edits what the hook points before it hold
            self.pre.volatile = getattr(value, "inplace", False) is True

    def forward(self, x: Any) -> Any:  # (Any: torch.fx traces it with a proxy for x)
        return self.post(self.module(self.pre(x)))


class Chain(nn.Module):
    """The network a HookedMLP hooks: its input reshaped to ``first_shape`` per example, then each layer in turn."""

    def __init__(self, layers: Sequence[HookedLayer], first_shape: Sequence[int]) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            self.add_module(f"layer{i}", layer)
        self.first_shape = tuple(first_shape)

    def forward(self, x: Any) -> Any:  # (Any: torch.fx traces it with a proxy for x)
        x = x.reshape(x.shape[0], *self.first_shape)
        for layer in self.children():
            x = layer(x)
        return x


_GRAPHS: dict[tuple[int, tuple[int, ...]], fx.Graph] = {}  # chains of one length and input shape share a graph


def _node(site: Site) -> str:
    """The graph node of a chain's hook point (``layer1.post`` -> ``layer1_post``)."""
    return f"layer{site.layer}_{site.side}"


def _captured(chain: Chain) -> Captured:
    """The chain's graph, traced once per (length, first shape): its nodes name modules by path, not by object."""
    key = (len(chain._modules), chain.first_shape)
    graph = _GRAPHS.get(key)
    if graph is None:  # traced on a stand-in of Identity layers: each layer's module is called, never looked into
        stand_in = Chain([HookedLayer(nn.Identity()) for _ in range(key[0])], chain.first_shape)
        graph = _GRAPHS[key] = capture_graph(stand_in, (), lambda m: isinstance(m, HookPoint)).graphs[False]
    return Captured(chain, {False: graph, True: graph}, chain, "fx", (), tuple(chain.named_children()))


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
class HookedMLP(ChainBuilders, HookedGraph):
    """A hooked chain of modules: the study's MLP by default, or any chain ``from_module`` accepts.

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
        HookedModel.__init__(self)  # not HookedGraph's: the graph is the chain's, made here
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
        chain = Chain([HookedLayer(m, p) for m, p in zip(modules, paths)], first)
        self._open(chain, _captured(chain), self._chain_sites(chain), tuple(shape))
        self.config = config
        self.n_layers = len(modules)
        _ = self.layout  # the chain's shapes are checked now

    @staticmethod
    def _chain_sites(chain: Chain) -> list[GraphSite]:
        """The hook points' sites, in order (their shapes are the layout's, read live)."""
        return [
            GraphSite(
                f"layer{i}_{side}",
                f"layer{i}.{side}",
                2 * i + (side == "post"),
                f"layer{i}.{side}",
                "",
                "",
                (),
                torch.float32,
                False,
            )
            for i in range(len(chain._modules))
            for side in ("pre", "post")
        ]

    def __setattr__(self, name: str, value: Any) -> None:
        replacing = "_layers_set" in self.__dict__ and name in self._modules and name.startswith("layer")
        if replacing and not isinstance(value, HookedLayer):
            raise UsageError(
                f"model.{name} is the HookedLayer holding module {name} between its two hook points; to swap "
                f"the module, set model.{name}.module = {type(value).__name__}(...) instead"
            )
        super().__setattr__(name, value)
        if replacing:  # a whole HookedLayer replaced: its hook points are new
            self.setup()

    def setup(self) -> None:
        super().setup()
        for layer in self._layers:  # the layers' own record of in-place modules (set when one is swapped in)
            layer.pre.volatile = getattr(layer.module, "inplace", False) is True
        self.__dict__["_layers_set"] = True

    # -- the layout ------------------------------------------------------------------
    @property
    def _layers(self) -> list[HookedLayer]:
        return list(self._modules.values())  # type: ignore[arg-type]

    def structure_key(self) -> tuple[Any, ...]:
        """Changes when a module is swapped or changes mode (what the layout depends on)."""
        layers = self._layers
        mods = [layer._modules["module"] for layer in layers]
        return (
            tuple(map(id, layers)),
            tuple(map(id, mods)),
            tuple(m.training for top in mods for m in top.modules() if isinstance(m, TRAINING_DEPENDENT)),
        )

    @property
    def layout(self) -> Layout:
        """The hook points' positions and shapes and the modules' paths, rebuilt when a module changes."""
        key = self.structure_key()
        memo = self.__dict__.get("_layout")
        if memo is None or memo[0] != key:
            layers = self._layers
            modules, paths = [la.module for la in layers], [la.path for la in layers]
            layout = Layout(modules, paths, self._net.first_shape, self.reference_tensor())
            memo = self.__dict__["_layout"] = (key, layout)
        return memo[1]

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

    # a chain takes its examples in any of their views (flattened, or without the channel): checked and reshaped
    as_batch = HookedModel.as_batch

    def prepare_input(self, x: Any) -> Tensor:
        """Check a batch of inputs (dtype, device, one of ``accepted_input_shapes``), reshaped to what layer0 reads."""
        ref = self.reference_tensor()  # the common case first: a batch already as the first layer reads it
        if (
            isinstance(x, Tensor)
            and x.ndim >= 2
            and x.shape[0]
            and x.shape[1:] == self._net.first_shape
            and (ref is None or x.dtype is ref.dtype and x.device == ref.device)
        ):
            return x
        return HookedModel.prepare_input(self, x)

    def reference_tensor(self) -> Optional[Tensor]:
        for layer in self._modules.values():  # the first layer's weights, without walking every module
            for t in layer._modules["module"]._parameters.values():  # type: ignore[union-attr]
                if t is not None:
                    return t
        return HookedModel.reference_tensor(self)

    def accepted_input_shapes(self) -> list[tuple[int, ...]]:
        shapes = self.__dict__.get("_accepted")
        if shapes is None:
            first = self._net.first_shape
            shapes = self.__dict__["_accepted"] = list(dict.fromkeys([first, *shape_variants(self.input_shape)]))
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
        if start_at is None and stop_at is None and start_at_layer is None and stop_at_layer is None:
            return super().forward(self.prepare_input(x))
        layout = self.layout
        for name in (start_at, stop_at):
            if name is not None:
                self.resolve_name(name)
        span = layout.span(start_at, stop_at, start_at_layer, stop_at_layer)
        if span.resumes:  # x is the value at the hook point before the first that runs, after its hooks
            site = layout.input_site(span)
            x, given = self._resumed(x, site, start_at), _node(site)
        else:
            x, given = self.prepare_input(x), "x"
        if span.last <= span.first:  # nothing runs
            return x
        wanted = _node(layout.sites[span.last - 1])
        if given == "x" and span.last == 2 * self.n_layers:
            return super().forward(x)
        return self._programs.part(self._net.training, [given], [wanted], self._any_hook())(self._net, x)

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
