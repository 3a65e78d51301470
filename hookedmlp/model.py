"""HookedMLP: a fully connected network with a hook point before and after every module.

Module ``i`` of the stack (Linear, activation or Dropout, in forward order) is
``model.layer{i}``; ``layer{i}.pre`` sees its input and ``layer{i}.post`` its
output. For the study's Linear-ReLU-Linear-ReLU-Linear network ``layer0.post``
is the first Linear's output and ``layer4.post`` the logits.
"""

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import torch
from jaxtyping import Float, Shaped
from torch import Tensor, nn

from hookedmlp.config import (
    LayerSpec,
    MLPConfig,
    build_module,
    check_chain,
    default_input_shape,
    spec_from_modules,
    spec_from_state_dict,
)
from hookedmlp.errors import InputDtypeError, ShapeError, UsageError
from hookedmlp.hook_points import HookPoint
from hookedmlp.hooked import HookedRoot

__all__ = ["HookedLayer", "HookedMLP"]


class HookedLayer(nn.Module):
    """One module of the stack between its two hook points: ``post(module(pre(x)))``.

    Args:
        module: the wrapped module (Linear, activation or Dropout), kept as ``.module``.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from hookedmlp import HookedLayer
        >>> layer = HookedLayer(nn.ReLU())
        >>> layer(torch.tensor([-1.0, 2.0])).tolist()
        [0.0, 2.0]
        >>> type(layer.pre).__name__, type(layer.post).__name__
        ('HookPoint', 'HookPoint')
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.pre = HookPoint()
        self.module = module
        self.post = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        """Run ``x`` through ``pre``, the module, then ``post``."""
        return self.post(self.module(self.pre(x)))


class HookedMLP(HookedRoot):
    """A hooked fully connected network.

    Args:
        config: an ``MLPConfig`` (default: the study's 784-512-512-10 ReLU net),
            or a list of ``LayerSpec`` for any supported stack.
        input_shape: the shape of one input before flattening (default ``(1, 28, 28)``
            when ``d_in`` is 784 or another square, else ``(d_in,)``).

    Raises:
        ValueError: an empty spec, or specs whose widths do not chain.
        ShapeError: an ``input_shape`` with other than ``d_in`` elements.

    Examples:
        >>> import torch
        >>> from hookedmlp import HookedMLP, MLPConfig
        >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
        >>> model.hook_names
        ['layer0.pre', 'layer0.post', 'layer1.pre', 'layer1.post', 'layer2.pre', 'layer2.post']
        >>> logits, cache = model.run_with_cache(torch.ones(5, 4))
        >>> cache["layer1.post"].shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        config: Union[MLPConfig, Sequence[LayerSpec], None] = None,
        input_shape: Optional[Sequence[int]] = None,
        _modules: Optional[Sequence[nn.Module]] = None,
    ) -> None:
        super().__init__()
        if config is None:
            config = MLPConfig()
        self.config: Optional[MLPConfig] = config if isinstance(config, MLPConfig) else None
        specs = config.layer_specs() if isinstance(config, MLPConfig) else list(config)
        if not specs:
            raise ValueError("a HookedMLP needs at least one layer; got an empty spec")
        self.specs: tuple[LayerSpec, ...] = tuple(specs)
        check_chain(self.specs)
        modules = list(_modules) if _modules is not None else [build_module(s) for s in self.specs]
        self.n_layers = len(modules)
        for i, module in enumerate(modules):
            self.add_module(f"layer{i}", HookedLayer(module))
        self.d_in = self.specs[0].d_in
        self.d_out = self.specs[-1].d_out
        shape = tuple(input_shape) if input_shape is not None else default_input_shape(self.d_in)
        if math.prod(shape) != self.d_in:
            raise ShapeError(f"input_shape {shape} has {math.prod(shape)} elements, but the first layer takes d_in={self.d_in}")
        self.input_shape = shape
        self.setup_hooks()
        self._layers = [getattr(self, f"layer{i}") for i in range(self.n_layers)]
        self._plain = [layer.module for layer in self._layers]
        self._widths = {}  # hook name -> activation width
        for i, s in enumerate(self.specs):
            self._widths[f"layer{i}.pre"] = s.d_in
            self._widths[f"layer{i}.post"] = s.d_out

    # -- construction -----------------------------------------------------
    @classmethod
    def from_sequential(cls, seq: Union[nn.Sequential, Sequence[nn.Module]], input_shape: Optional[Sequence[int]] = None) -> "HookedMLP":
        """Wrap an existing stack of (Flatten,) Linear / activation / Dropout modules.

        The Linear modules are shared, not copied: the hooked model computes exactly
        what ``seq`` computes, with the same parameters. Activation modules are
        replaced by equivalent non-in-place ones, so every hook point sees its own
        tensor. A leading ``nn.Flatten`` is dropped (the model flattens its input),
        so ``layer0`` is the first module after it.

        Args:
            seq: an ``nn.Sequential`` or a list of modules.
            input_shape: the shape of one input before flattening (default as for
                ``HookedMLP``).

        Returns:
            The hooked model, on the device and dtype of the first Linear.

        Raises:
            TypeError: an unsupported module (the message names its position in ``seq``).
            ValueError: consecutive widths that do not match.

        Examples:
            >>> from torch import nn
            >>> from hookedmlp import HookedMLP
            >>> seq = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10))
            >>> HookedMLP.from_sequential(seq).hook_names[:2]
            ['layer0.pre', 'layer0.post']
        """
        modules = list(seq)
        offset = 1 if modules and isinstance(modules[0], nn.Flatten) else 0
        modules = modules[offset:]
        specs = spec_from_modules(modules, first_index=offset)
        kept = [m if isinstance(m, nn.Linear) else build_module(s) for m, s in zip(modules, specs)]
        model = cls(specs, input_shape=input_shape, _modules=kept)
        if modules and isinstance(modules[0], nn.Linear):
            model.to(device=modules[0].weight.device, dtype=modules[0].weight.dtype)
        return model

    def to_sequential(self) -> nn.Sequential:
        """A plain ``nn.Sequential`` (Flatten, then the stack) sharing this model's modules.

        Returns:
            The Sequential; editing its parameters edits this model's.

        Examples:
            >>> import torch
            >>> from hookedmlp import HookedMLP, MLPConfig
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
            >>> seq = model.to_sequential()
            >>> seq
            Sequential(
              (0): Flatten(start_dim=1, end_dim=-1)
              (1): Linear(in_features=4, out_features=3, bias=True)
              (2): ReLU()
              (3): Linear(in_features=3, out_features=2, bias=True)
            )
            >>> x = torch.rand(2, 4)
            >>> torch.equal(seq(x), model(x))
            True
        """
        return nn.Sequential(nn.Flatten(), *self._plain)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor], activation: str = "relu") -> "HookedMLP":
        """Load a plain PyTorch checkpoint of a Linear-activation stack, inferring its sizes.

        Works on the PyTorch quickstart's ``model.pth`` (keys
        ``linear_relu_stack.{0,2,4}.weight/bias``) or any Sequential of Linear layers
        with one activation between them. If the first Linear sits at index 1 (after
        a Flatten), the numbering shifts by one: its ``layer0`` is that Linear.

        Args:
            state_dict: the Sequential's state dict, e.g.
                ``torch.load("model.pth", weights_only=True)``.
            activation: the activation between the Linear layers (one of ``ACTIVATIONS``).

        Returns:
            A new model with these weights, on their device and dtype.

        Raises:
            CheckpointError: keys or shapes that do not describe such a stack.

        Examples:
            >>> from torch import nn
            >>> from hookedmlp import HookedMLP
            >>> seq = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10))
            >>> HookedMLP.from_state_dict(seq.state_dict()).specs[-1].d_out
            10
        """
        specs, weights, _ = spec_from_state_dict(state_dict, activation)
        model = cls(specs)
        first = next(iter(weights.values()))
        model.to(device=first.device, dtype=first.dtype)
        model.load_state_dict(weights)
        return model

    # -- forward ------------------------------------------------------------
    def _position(self, name: str) -> int:
        return self.hook_names.index(self.resolve_name(name))

    def prepare_input(self, x: Any) -> Float[Tensor, "batch d_in"]:
        """Check an input batch and flatten images to ``[batch, d_in]``.

        Accepts ``[batch, d_in]``, ``[batch, *input_shape]`` and (for a
        single-channel image shape) ``[batch, H, W]``.

        Args:
            x: the input batch, a floating-point tensor on the model's device and dtype.

        Returns:
            ``x`` reshaped to ``[batch, d_in]``.

        Raises:
            ShapeError: a shape other than those above, or an empty batch.
            InputDtypeError: not a tensor, not floating point, or another dtype or
                device than the model's.

        Examples:
            >>> import torch
            >>> from hookedmlp import HookedMLP, MLPConfig
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
            >>> model.input_shape
            (1, 2, 2)
            >>> model.prepare_input(torch.ones(3, 1, 2, 2)).shape
            torch.Size([3, 4])
            >>> model.prepare_input(torch.ones(3, 2, 2)).shape
            torch.Size([3, 4])
        """
        if not isinstance(x, Tensor):
            raise InputDtypeError(f"expected a torch.Tensor input, got {type(x).__name__}")
        shapes = [(self.d_in,), self.input_shape]
        if len(self.input_shape) == 3 and self.input_shape[0] == 1:
            shapes.append(self.input_shape[1:])
        if tuple(x.shape[1:]) not in shapes or x.ndim < 2:
            expected = " or ".join("[batch, " + ", ".join(map(str, s)) + "]" for s in shapes)
            hint = "; add a batch dimension with x.unsqueeze(0)" if tuple(x.shape) in shapes else ""
            raise ShapeError(f"expected input of shape {expected}, got {list(x.shape)}{hint}")
        self._check_tensor(x, "input")
        return x.reshape(x.shape[0], self.d_in)

    def _check_tensor(self, x: Tensor, what: str) -> None:
        w = self._plain[0].weight if isinstance(self._plain[0], nn.Linear) else None
        if not x.is_floating_point():
            raise InputDtypeError(
                f"expected a floating-point {what} (pixels in [0, 1]), got dtype {x.dtype}; convert with x.float() / 255 for uint8 images"
            )
        if w is not None and x.dtype != w.dtype:
            raise InputDtypeError(f"{what} dtype {x.dtype} does not match the model's {w.dtype}; use x.to({w.dtype}) or model.to({x.dtype})")
        if w is not None and x.device != w.device:
            raise InputDtypeError(f"{what} is on {x.device} but the model is on {w.device}; use x.to({str(w.device)!r})")
        if x.shape[0] == 0:
            raise ShapeError(f"empty batch: {what} has shape {list(x.shape)}; expected at least one example")

    def forward(
        self,
        x: Shaped[Tensor, "batch *d_in"],
        start_at: Optional[str] = None,
        stop_at: Optional[str] = None,
    ) -> Float[Tensor, "batch d_out"]:
        """Run the network, or the part of it between two hook points.

        ``forward(forward(x, stop_at=h), start_at=h)`` equals ``forward(x)``.

        Args:
            x: a batch of inputs; with ``start_at``, the activation at that hook point
                (``[batch, width]``).
            start_at: resume from this hook point: ``x`` is its activation as the next
                module sees it; hooks at ``start_at`` itself do not run (they ran when
                ``x`` was computed), later ones do.
            stop_at: stop at this hook point and return its activation, after its
                hooks ran.

        Returns:
            The logits ``[batch, d_out]``, or the activation at ``stop_at``.

        Raises:
            UsageError: ``stop_at`` comes before ``start_at``.

        Examples:
            >>> import torch
            >>> from hookedmlp import HookedMLP, MLPConfig
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
            >>> x = torch.rand(2, 4)
            >>> model(x).shape
            torch.Size([2, 2])
            >>> h = model(x, stop_at="layer1.post")
            >>> h.shape
            torch.Size([2, 3])
            >>> torch.equal(model(h, start_at="layer1.post"), model(x))
            True
        """
        if start_at is None:
            x = self.prepare_input(x)
            first = 0
        else:
            first = self._position(start_at) + 1
            width = self._widths[start_at]
            if x.ndim != 2 or x.shape[1] != width:
                raise ShapeError(f"start_at={start_at!r} expects its activation of shape [batch, {width}], got {list(x.shape)}")
            self._check_tensor(x, f"activation for start_at={start_at!r}")
        last = 2 * self.n_layers if stop_at is None else self._position(stop_at) + 1
        if last < first:
            raise UsageError(f"stop_at={stop_at!r} comes before start_at={start_at!r}; hook order is {', '.join(self.hook_names)}")
        if not self._any_hooks():
            for i in range(first // 2, last // 2):  # the modules between the two points
                x = self._plain[i](x)
            return x
        for p in range(first, last):  # hook position p is hook_names[p]
            layer = self._layers[p // 2]
            x = layer.pre(x) if p % 2 == 0 else layer.post(layer.module(x))
        return x

    def activation_width(self, name: str) -> int:
        """Width of the activation at hook point ``name``.

        Args:
            name: one hook name.

        Returns:
            The activation's width (its size after the batch dimension).

        Raises:
            HookNameError: ``name`` is not a hook point of this model.

        Examples:
            >>> import torch
            >>> from hookedmlp import HookedMLP, MLPConfig
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
            >>> model.activation_width("layer0.pre"), model.activation_width("layer2.post")
            (4, 2)
        """
        return self._widths[self.resolve_name(name)]

    def as_batch(self, x: Tensor) -> Float[Tensor, "batch d_in"]:
        """Like ``prepare_input``, but a single example (``[d_in]`` or one image) gets a batch dim.

        Args:
            x: one example or a batch.

        Returns:
            ``[batch, d_in]`` (``batch`` is 1 for a single example).

        Raises:
            ShapeError: a shape that is neither one example nor a batch.
            InputDtypeError: not a floating-point tensor of the model's dtype and device.

        Examples:
            >>> import torch
            >>> from hookedmlp import HookedMLP, MLPConfig
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
            >>> model.as_batch(torch.ones(4)).shape
            torch.Size([1, 4])
            >>> model.as_batch(torch.ones(5, 4)).shape
            torch.Size([5, 4])
        """
        single = {(self.d_in,), self.input_shape}
        if len(self.input_shape) == 3 and self.input_shape[0] == 1:
            single.add(self.input_shape[1:])
        if isinstance(x, Tensor) and tuple(x.shape) in single:
            x = x.unsqueeze(0)
        return self.prepare_input(x)

    def clean_activations(self, x: Float[Tensor, "batch d_in"], names: Sequence[str]) -> dict[str, Tensor]:
        """Activations at ``names`` from a run of the bare modules: no hook, no active steering, no grad.

        Args:
            x: a prepared batch ``[batch, d_in]`` (see ``prepare_input``).
            names: exact hook names (no patterns).

        Returns:
            ``{name: activation}`` for each of ``names``.

        Examples:
            >>> import torch
            >>> from hookedmlp import HookedMLP, MLPConfig
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
            >>> with model.hooks(fwd_hooks=[("layer0.post", lambda act, hook: act * 0)]):
            ...     acts = model.clean_activations(torch.ones(2, 4), ["layer0.post", "layer2.post"])
            >>> {k: tuple(v.shape) for k, v in acts.items()}
            {'layer0.post': (2, 3), 'layer2.post': (2, 2)}
            >>> bool(acts["layer0.post"].eq(0).all())  # the hook did not run
            False
        """
        positions = {self.hook_names.index(n): n for n in names}
        acts: dict[str, Tensor] = {}
        with torch.no_grad():
            for i in range(max(positions) // 2 + 1):
                if 2 * i in positions:
                    acts[positions[2 * i]] = x
                x = self._plain[i](x)
                if 2 * i + 1 in positions:
                    acts[positions[2 * i + 1]] = x
        return acts

    # -- steering and other interventions (see steering.py / interventions.py) --
    def steering_vector(self, a: Any, b: Any, hook: Union[str, Sequence[str]], coeff: float = 1.0, method: str = "first") -> Any:
        """``coeff * (act_hook(a) - act_hook(b))`` as a ``SteeringVector``.

        Args:
            a: the contrast's positive side: a digit 0-9 or an input tensor (one example
                or a batch, averaged).
            b: the negative side, like ``a``.
            hook: a hook name or glob, or a list of them: the vector has a tensor at each.
            coeff: the coefficient (finite).
            method: for digits, ``"first"`` (the first training image of the digit, the
                study's method) or ``"mean"`` (the class mean over the training set).

        Returns:
            The ``SteeringVector``, computed on the model without any hooks.

        Raises:
            SteeringError: a digit outside 0-9, a non-finite ``coeff``, an unknown
                ``method``, or digits on a model whose ``d_in`` is not 784.
            HookNameError: an unknown hook.

        Examples:
            >>> from hookedmlp import HookedMLP
            >>> model = HookedMLP.from_pretrained("mnist-mlp")
            >>> model.steering_vector(3, 1, "layer0.post").label
            '3 - 1'
        """
        from hookedmlp.steering import build_steering_vector

        return build_steering_vector(self, a, b, hook, coeff=coeff, method=method)

    def steer(self, vector: Any = None, *, a: Any = None, b: Any = None, hook: Union[str, Sequence[str], None] = None,
              coeff: float = 1.0, method: str = "first") -> Any:
        """Context manager adding a steering vector: ``with model.steer(a=3, b=1, hook="layer0.post"):``.

        Pass a ``SteeringVector`` (scaled by ``coeff``), or ``a``, ``b`` and ``hook``
        to build one (see ``steering_vector``). Nested contexts add up. Leaving the
        context removes exactly its hooks.

        Args:
            vector: a ready ``SteeringVector``; excludes ``a``, ``b`` and ``hook``.
            a: the contrast's positive side (a digit 0-9 or input tensors).
            b: the contrast's negative side.
            hook: where to add the vector (a name, glob or list).
            coeff: the coefficient applied to the vector.
            method: how digits become activations: ``"first"`` or ``"mean"``.

        Yields:
            The model, with the vector added at its hooks inside the ``with`` block.

        Raises:
            TypeError: neither a vector nor all of ``a``, ``b`` and ``hook``, or both.

        Examples:
            >>> from hookedmlp import HookedMLP
            >>> from hookedmlp.data import load_mnist
            >>> model = HookedMLP.from_pretrained("mnist-mlp")
            >>> images, labels = load_mnist("test")
            >>> ones = images[labels == 1][:5]
            >>> model(ones).argmax(-1).tolist()
            [1, 1, 1, 1, 1]
            >>> with model.steer(a=3, b=1, hook="layer0.post"):
            ...     model(ones).argmax(-1).tolist()
            [3, 3, 3, 3, 3]
        """
        from hookedmlp.steering import SteeringVector, check_coeff

        if vector is not None:
            if not isinstance(vector, SteeringVector):
                raise TypeError(f"steer() takes a SteeringVector, got {type(vector).__name__}; or pass a=, b=, hook=")
            if a is not None or b is not None or hook is not None:
                raise TypeError("pass either a SteeringVector or a=, b=, hook=, not both")
            check_coeff(coeff)
            return vector.apply(self, coeff=coeff)
        missing = [k for k, v in (("a", a), ("b", b), ("hook", hook)) if v is None]
        if missing:
            raise TypeError(f"steer() needs a SteeringVector or all of a=, b=, hook=; missing {', '.join(missing)}")
        return self.steering_vector(a, b, hook, coeff=coeff, method=method).apply(self)

    def ablate(self, direction: Any, hook: str) -> Any:
        """Context manager projecting ``direction`` out of the activation at ``hook``.

        See ``hookedmlp.interventions.ablate``.

        Args:
            direction: a tensor ``[width]`` (non-zero), or a steering vector holding ``hook``.
            hook: one hook name.

        Yields:
            The model, with the direction projected out inside the ``with`` block.

        Examples:
            >>> import torch
            >>> from hookedmlp import HookedMLP, MLPConfig
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
            >>> with model.ablate(torch.tensor([1.0, 0.0, 0.0]), "layer0.post"):
            ...     _, cache = model.run_with_cache(torch.ones(2, 4), names_filter="layer0.post")
            >>> cache["layer0.post"][:, 0].tolist()
            [0.0, 0.0]
        """
        from hookedmlp.interventions import ablate

        return ablate(self, direction, hook)

    def patch(self, hook: str, activations: Any) -> Any:
        """Context manager replacing the activation at ``hook`` with cached ``activations``.

        See ``hookedmlp.interventions.patch``.

        Args:
            hook: one hook name.
            activations: ``[batch, width]``, ``[width]``, or an ``ActivationCache`` holding ``hook``.

        Yields:
            The model, with the activation at ``hook`` replaced inside the ``with`` block.

        Examples:
            >>> import torch
            >>> from hookedmlp import HookedMLP, MLPConfig
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
            >>> clean, corrupt = torch.ones(1, 4), torch.zeros(1, 4)
            >>> _, cache = model.run_with_cache(clean)
            >>> with model.patch("layer1.post", cache):
            ...     patched = model(corrupt)
            >>> torch.equal(patched, model(clean))
            True
        """
        from hookedmlp.interventions import patch

        return patch(self, hook, activations)

    def clamp(self, hook: str, index: Any, value: Any) -> Any:
        """Context manager fixing units ``index`` at ``hook`` to ``value``.

        See ``hookedmlp.interventions.clamp``.

        Args:
            hook: one hook name.
            index: a unit index, a list of them, or a boolean mask ``[width]``.
            value: a scalar, or one value per index.

        Yields:
            The model, with the units clamped inside the ``with`` block.

        Examples:
            >>> import torch
            >>> from hookedmlp import HookedMLP, MLPConfig
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
            >>> with model.clamp("layer1.post", [0, 2], 0.0):
            ...     _, cache = model.run_with_cache(torch.ones(2, 4), names_filter="layer1.post")
            >>> cache["layer1.post"][:, [0, 2]].tolist()
            [[0.0, 0.0], [0.0, 0.0]]
        """
        from hookedmlp.interventions import clamp

        return clamp(self, hook, index, value)

    # -- checkpoints ------------------------------------------------------
    def checkpoint(self, meta: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
        """The plain-data checkpoint of this model: specs, config, input shape, weights, ``meta``.

        Args:
            meta: JSON-like metadata to store with it (e.g. training settings).

        Returns:
            A dict of tensors and plain containers, loadable with ``weights_only=True``;
                weights are detached CPU copies.

        Examples:
            >>> import torch
            >>> from hookedmlp import HookedMLP, MLPConfig
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
            >>> ckpt = model.checkpoint({"note": "demo"})
            >>> sorted(ckpt)
            ['config', 'format', 'input_shape', 'meta', 'specs', 'state_dict', 'version']
            >>> ckpt["meta"]
            {'note': 'demo'}
        """
        return {
            "format": "hookedmlp.checkpoint",
            "version": 1,
            "specs": [s.to_dict() for s in self.specs],
            "config": dataclasses.asdict(self.config) if self.config is not None else None,
            "input_shape": list(self.input_shape),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            "meta": dict(meta or {}),
        }

    def save(self, path: Any, meta: Optional[Mapping[str, Any]] = None) -> None:
        """Write a checkpoint atomically (temp file, then rename).

        Args:
            path: the file to write.
            meta: JSON-like metadata to store with it (read back as ``model.meta``).

        Examples:
            >>> import pathlib, tempfile
            >>> import torch
            >>> from hookedmlp import HookedMLP, MLPConfig
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
            >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.pt"
            >>> model.save(path, meta={"note": "demo"})
            >>> HookedMLP.load(path).meta
            {'note': 'demo'}
        """
        from hookedmlp.checkpoint import save_checkpoint

        save_checkpoint(self, path, meta)

    @classmethod
    def load(cls, path: Any, device: Union[str, torch.device, None] = None) -> "HookedMLP":
        """Load a checkpoint written by ``save`` (``torch.load(weights_only=True)``).

        Args:
            path: the checkpoint file.
            device: where to put the model (default: CPU).

        Returns:
            The model, in eval mode, with the checkpoint's metadata as ``model.meta``.

        Raises:
            CheckpointError: a missing, corrupt or unsafe file, or one that is not a
                hookedmlp checkpoint.

        Examples:
            >>> import pathlib, tempfile
            >>> import torch
            >>> from hookedmlp import HookedMLP, MLPConfig
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
            >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.pt"
            >>> model.save(path)
            >>> loaded = HookedMLP.load(path)
            >>> x = torch.rand(2, 4)
            >>> torch.equal(loaded(x), model(x))
            True
        """
        from hookedmlp.checkpoint import load_checkpoint

        return load_checkpoint(path, device=device)

    @classmethod
    def from_pretrained(cls, name: str = "mnist-mlp", device: Union[str, torch.device, None] = None) -> "HookedMLP":
        """Load a model shipped with the package (``"mnist-mlp"``: the study's architecture).

        The file's sha256 is checked against the card shipped beside it.

        Args:
            name: the model's name; ``"mnist-mlp"`` is the only one.
            device: where to put the model (default: CPU).

        Returns:
            The model, in eval mode.

        Raises:
            CheckpointError: an unknown name, or a file that fails its checksum.

        Examples:
            >>> from hookedmlp import HookedMLP
            >>> model = HookedMLP.from_pretrained("mnist-mlp")
            >>> model.d_in, model.d_out, model.n_layers
            (784, 10, 5)
        """
        from hookedmlp.checkpoint import load_pretrained

        return load_pretrained(name, device=device)

    def extra_repr(self) -> str:
        """The widths, activations, numbers of layers and hook points, and hooks attached."""
        widths = " -> ".join(str(w) for w in [self.d_in] + [s.d_out for s in self.specs if s.kind == "linear"])
        kinds = sorted({s.kind for s in self.specs} - {"linear"})
        return (f"{widths}, {'/'.join(kinds) or 'linear'}; {self.n_layers} layers, "
                f"{len(self.hook_dict)} hook points, {len(self.attached_hooks())} hooks attached")
