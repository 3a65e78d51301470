"""Making and keeping a HookedMLP: from a user's chain network, a state dict or a checkpoint; back to torch; display.

``from_module`` captures the network's graph and accepts it when it is a chain of modules
(``hookedmlp.models.chains.module_chain``); anything else is refused with the line of
``forward`` and the route to ``hookedmlp.capture``, which opens any capturable network. The
chain shares the network's modules, and is checked against the network (``verify``).
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from hookedmlp.errors import CheckpointError, ConfigError, HookedMLPError, ShapeError, UnsupportedNetworkError, warn
from hookedmlp.files.checkpoint import check_state
from hookedmlp.hooks.point import HookPoint
from hookedmlp.models.capture import HOOKEDROOT_ROUTE, capture_graph
from hookedmlp.models.chains import module_chain
from hookedmlp.models.configs import config_from_dict, config_to_dict
from hookedmlp.models.example import check_input_shape, example_inputs, guess_input_shape
from hookedmlp.models.modules import Reshape, build, describe
from hookedmlp.models.sites import find_sites
from hookedmlp.models.state_dict import sequential_from_state_dict
from hookedmlp.models.verify import verify

__all__ = ["ChainBuilders"]


def _leaf(m: nn.Module) -> bool:
    """A chain's steps: modules without children, and modules with weights of their own, are kept whole."""
    own = next(iter(m._parameters.values()), None) is not None or bool(m._buffers)
    return isinstance(m, HookPoint) or next(m.children(), None) is None or own


def _one_line(module: nn.Module) -> str:
    text = repr(module)
    return text if "\n" not in text else f"{type(module).__name__}(...)"


def _warn_linear_pairs(modules: Sequence[nn.Module], paths: Sequence[str]) -> None:
    """A list of Linear layers with nothing between two of them is what ``list(net.children())`` gives for a
    network applying ``F.relu`` in its forward: say so, since the list alone cannot show it."""
    for (a, pa), (b, pb) in zip(zip(modules, paths), zip(modules[1:], paths[1:])):
        if isinstance(a, nn.Linear) and isinstance(b, nn.Linear):
            warn(
                f"modules {pa} and {pb} are two Linear layers with no activation between them; if this list came from "
                "list(net.children()) of a network whose forward applies F.relu (or similar), wrap the network itself "
                "with HookedMLP.from_module(net), which checks it",
                UserWarning,
            )
            return


class ChainBuilders:
    """HookedMLP's constructors from other things, its checkpoint fields, and its display."""

    @classmethod
    def from_module(
        cls, net: Union[nn.Module, Sequence[nn.Module]], input_shape: Optional[Sequence[int]] = None
    ) -> Any:
        """Wrap an existing network whose ``forward`` runs its modules one after another.

        Works on an ``nn.Sequential`` (nested or not), a list of modules, or a module class
        such as the PyTorch quickstart's ``NeuralNetwork`` (``flatten`` + ``linear_relu_stack``;
        a leading Flatten is absorbed, so ``layer0`` is ``linear_relu_stack.0``). Modules are
        shared, not copied. The network's graph is captured; anything ``forward`` computes
        between its modules (``F.relu``, a skip connection, a parameter used directly) is refused
        with its line, pointing to ``hookedmlp.capture``, which opens any network with a hook
        point at every module and op.

        Args:
            net: the network.
            input_shape: one example's shape (default: inferred from the first Linear or Conv2d).

        Returns:
            The hooked model, in the network's training mode.

        Raises:
            UnsupportedNetworkError: the network is not a chain of modules, or cannot be captured
                (the message names the place and the way forward).

        Examples:
            >>> seq = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.SiLU(), nn.Linear(32, 10))
            >>> wrapped = HookedMLP.from_module(seq)
            >>> wrapped.layer0.path, wrapped.activation_shape("layer1.post")
            ('1', (32,))
        """
        given_list = isinstance(net, (list, tuple))
        if given_list:
            net = nn.Sequential(*net)
        if not isinstance(net, nn.Module):
            raise UnsupportedNetworkError(f"expected an nn.Module (or a list of modules), got {type(net).__name__}")
        if next(net.modules(), None) is net and len(list(net.modules())) == 1 and not net._parameters:
            raise UnsupportedNetworkError(f"{type(net).__name__} has no modules to hook; a chain needs at least one")
        shape = check_input_shape(input_shape) if input_shape is not None else guess_input_shape(net, image=True)
        first_leaf = next((m for m in net.modules() if m is not net and _leaf(m)), None)
        probe_shape = (math.prod(shape),) if isinstance(first_leaf, nn.Linear) else shape  # it reads flat examples
        inputs = example_inputs(net, probe_shape, None)
        with torch.random.fork_rng(devices=[]):
            captured = capture_graph(net, inputs, _leaf)
            sites = find_sites(captured.owner, captured.graphs[False], inputs, captured.kind == "export")
        modules, paths = module_chain(captured.graphs[False], sites, net, HOOKEDROOT_ROUTE)
        steps = sites[1:]
        first = probe_shape
        flat = isinstance(modules[0], nn.Flatten) and (modules[0].start_dim, modules[0].end_dim) == (1, -1)
        if len(modules) > 1 and (flat or modules[0] is None and len(steps[0].shape) == 1):
            first = (math.prod(shape),)  # a leading flatten: the model flattens its input itself
            modules, paths, steps = modules[1:], paths[1:], steps[1:]
        chain: list[nn.Module] = []
        for k, (module, site) in enumerate(zip(modules, steps)):
            if module is None:  # a pure reshape in forward, such as x.view(len(x), -1)
                module = Reshape(site.shape)
                after = next((p for m, p in zip(modules[k + 1 :], paths[k + 1 :]) if m is not None), None)
                paths[k] = f"<reshape in forward, before {after}>" if after else "<reshape in forward, at the end>"
            chain.append(module)
        if given_list:
            _warn_linear_pairs(chain, paths)
        model = cls(modules=chain, paths=paths, input_shape=shape, first_shape=first)
        for layer, site in zip(model._layers, steps):  # type: ignore[attr-defined]
            layer.post.volatile = layer.post.volatile or site.volatile
        model.train(net.training)
        with torch.random.fork_rng(devices=[]):
            verify(model, net, inputs)
        return model

    @classmethod
    def from_sequential(
        cls, seq: Union[nn.Sequential, Sequence[nn.Module]], input_shape: Optional[Sequence[int]] = None
    ) -> Any:
        """``from_module`` for an ``nn.Sequential`` or a list of modules."""
        return cls.from_module(seq, input_shape)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor], activation: Optional[str] = None) -> Any:
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
        first = self._net.first_shape  # type: ignore[attr-defined]
        flatten = [nn.Flatten()] if first != self.input_shape and len(first) == 1 else []  # type: ignore[attr-defined]
        return nn.Sequential(*flatten, *(layer.module for layer in self._layers))  # type: ignore[attr-defined]

    # -- checkpoints ----------------------------------------------------------------------
    def to_checkpoint(self) -> dict[str, Any]:
        layers = [
            {**describe(layer.module, f"layer{i} ({layer.path})"), "path": layer.path}
            for i, layer in enumerate(self._layers)  # type: ignore[attr-defined]
        ]
        return {
            "layers": layers,
            "input_shape": list(self.input_shape),  # type: ignore[attr-defined]
            "first_shape": list(self._net.first_shape),  # type: ignore[attr-defined]
            "config": config_to_dict(self.config) if self.config is not None else None,  # type: ignore[attr-defined]
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},  # type: ignore[attr-defined]
        }

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], source: str) -> Any:
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
        in the original network (``(from linear_relu_stack.0)``); ``layer{i}.pre`` says that it is
        the same tensor as ``layer{i-1}.post``.
        """
        rows = []
        layout = self.layout  # type: ignore[attr-defined]
        for site in layout.sites:
            layer = layout.layers[site.layer]
            where = "input of" if site.side == "pre" else "output of"
            shape = "[" + ", ".join(["batch", *map(str, site.shape)]) + "]"
            origin = f"  (from {layer.path})" if layer.path != str(layer.index) else ""
            same = f"; the same tensor as layer{site.layer - 1}.post" if site.side == "pre" and site.layer else ""
            rows.append((site.name, shape, f"{where} {_one_line(layer.module)}{origin}{same}"))
        return rows

    def __repr__(self) -> str:
        try:
            rows = self.hook_table()
        except HookedMLPError as e:  # a swapped-in module that does not fit: say so rather than fail to print
            return f"HookedMLP({self.n_layers} layers, not a working chain: {e})"  # type: ignore[attr-defined]
        head = (
            f"HookedMLP(input {list(self.input_shape)} -> output {list(self.layout.output_shape)}; "  # type: ignore
            f"{self.n_layers} layers, {len(self.hook_dict)} hook points, "  # type: ignore[attr-defined]
            f"{len(self.attached_hooks())} hooks attached"  # type: ignore[attr-defined]
        )
        return "\n".join([head, *(f"  {name:<13} {shape:<20} {what}" for name, shape, what in rows), ")"])
