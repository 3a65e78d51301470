"""Architecture descriptions: MLPConfig for new models, LayerSpec for any supported stack.

A model is a sequence of ``LayerSpec`` (one per module: linear, activation
or dropout). ``MLPConfig`` is the short way to write the usual
Linear-activation-...-Linear stack; ``from_sequential`` and ``from_state_dict``
produce specs directly. Specs are plain data, saved inside checkpoints so that
loading rebuilds the same architecture.
"""

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from torch import Tensor, nn

from hookedmlp.errors import CheckpointError

__all__ = ["MLPConfig", "LayerSpec", "ACTIVATIONS", "spec_from_modules", "spec_from_state_dict", "build_module", "check_chain"]

ACTIVATIONS = ("relu", "gelu", "tanh", "sigmoid", "leaky_relu")
_KINDS = ("linear", "dropout") + ACTIVATIONS


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One module of the stack.

    Args:
        kind: ``"linear"``, ``"dropout"`` or an activation name (see ``ACTIVATIONS``).
        d_in: the width the module reads.
        d_out: the width it writes (equal to ``d_in`` except for ``"linear"``).
        bias: whether a Linear module has a bias.
        param: the dropout probability, the leaky-ReLU slope, or GELU's
            approximation flag (1.0 for tanh) where relevant; else 0.0.

    Examples:
        >>> from hookedmlp import LayerSpec
        >>> LayerSpec("linear", 784, 512)
        LayerSpec(kind='linear', d_in=784, d_out=512, bias=True, param=0.0)
    """

    kind: str
    d_in: int
    d_out: int
    bias: bool = True
    param: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, as stored in checkpoints.

        Returns:
            ``{"kind", "d_in", "d_out", "bias", "param"}`` as a dict.

        Examples:
            >>> from hookedmlp import LayerSpec
            >>> LayerSpec("dropout", 8, 8, param=0.1).to_dict()
            {'kind': 'dropout', 'd_in': 8, 'd_out': 8, 'bias': True, 'param': 0.1}
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> "LayerSpec":
        """Inverse of ``to_dict``; raises ``CheckpointError`` on malformed data.

        Args:
            d: a mapping with ``kind``, ``d_in`` and ``d_out`` (``bias`` and ``param`` optional).

        Returns:
            The ``LayerSpec`` it describes.

        Raises:
            CheckpointError: a missing or malformed field, or an unknown kind.

        Examples:
            >>> from hookedmlp import LayerSpec
            >>> LayerSpec.from_dict({"kind": "relu", "d_in": 3, "d_out": 3})
            LayerSpec(kind='relu', d_in=3, d_out=3, bias=True, param=0.0)
        """
        if not isinstance(d, Mapping):
            raise CheckpointError(f"malformed layer spec {d!r}: expected a mapping with kind, d_in, d_out")
        try:
            spec = cls(kind=str(d["kind"]), d_in=int(d["d_in"]), d_out=int(d["d_out"]),
                       bias=bool(d.get("bias", True)), param=float(d.get("param", 0.0)))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"malformed layer spec {dict(d)!r}: {e}") from None
        if spec.d_in < 1 or spec.d_out < 1:
            raise CheckpointError(f"malformed layer spec {dict(d)!r}: widths must be positive, got d_in={spec.d_in}, d_out={spec.d_out}")
        if spec.kind not in _KINDS:
            raise CheckpointError(f"unknown layer kind {spec.kind!r}; expected one of {', '.join(_KINDS)}")
        return spec


@dataclasses.dataclass(frozen=True)
class MLPConfig:
    """A fully connected net: ``d_in -> d_hidden[0] -> ... -> d_out``.

    Each hidden Linear is followed by ``activation`` and, if ``dropout > 0``, a
    Dropout module (which then also gets its own ``layer{i}``).

    Args:
        d_in: input width (784 for flattened 28 x 28 images).
        d_hidden: widths of the hidden layers, one Linear-activation pair each.
        d_out: output width (number of classes).
        activation: one of ``ACTIVATIONS`` (``"relu"``, ``"gelu"``, ``"tanh"``,
            ``"sigmoid"``, ``"leaky_relu"``).
        dropout: dropout probability after each activation, in ``[0, 1)``; 0 adds none.
        bias: whether the Linear layers have biases.

    Raises:
        ValueError: a width that is not a positive int, an unknown activation, or a
            dropout outside ``[0, 1)``.

    Examples:
        >>> from hookedmlp import MLPConfig
        >>> cfg = MLPConfig()  # the study's quickstart network
        >>> [s.kind for s in cfg.layer_specs()]
        ['linear', 'relu', 'linear', 'relu', 'linear']
    """

    d_in: int = 784
    d_hidden: tuple[int, ...] = (512, 512)
    d_out: int = 10
    activation: str = "relu"
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "d_hidden", tuple(self.d_hidden))
        widths = (self.d_in, *self.d_hidden, self.d_out)
        if any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in widths):
            raise ValueError(f"layer widths must be positive ints, got d_in={self.d_in}, d_hidden={self.d_hidden}, d_out={self.d_out}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; expected one of {', '.join(ACTIVATIONS)}")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout must be a probability in [0, 1), got {self.dropout!r}")

    def layer_specs(self) -> list[LayerSpec]:
        """The module-by-module description of this network.

        Returns:
            One ``LayerSpec`` per module, in forward order (module ``i`` becomes ``layer{i}``).

        Examples:
            >>> from hookedmlp import MLPConfig
            >>> specs = MLPConfig(d_in=4, d_hidden=(3,), d_out=2, dropout=0.1).layer_specs()
            >>> [(s.kind, s.d_in, s.d_out) for s in specs]
            [('linear', 4, 3), ('relu', 3, 3), ('dropout', 3, 3), ('linear', 3, 2)]
        """
        specs: list[LayerSpec] = []
        widths = (self.d_in, *self.d_hidden, self.d_out)
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            specs.append(LayerSpec("linear", a, b, bias=self.bias))
            if i < len(widths) - 2:
                specs.append(LayerSpec(self.activation, b, b, param=0.01 if self.activation == "leaky_relu" else 0.0))
                if self.dropout > 0:
                    specs.append(LayerSpec("dropout", b, b, param=float(self.dropout)))
        return specs


def build_module(spec: LayerSpec) -> nn.Module:
    """A fresh module for ``spec`` (weights of Linear layers are freshly initialised).

    Args:
        spec: the module's description.

    Returns:
        The ``nn.Module`` (``nn.Linear``, ``nn.ReLU``, ``nn.Dropout``...).

    Raises:
        CheckpointError: an unknown ``spec.kind``.

    Examples:
        >>> from hookedmlp import LayerSpec
        >>> from hookedmlp.config import build_module
        >>> build_module(LayerSpec("linear", 4, 3))
        Linear(in_features=4, out_features=3, bias=True)
        >>> build_module(LayerSpec("leaky_relu", 3, 3, param=0.01))
        LeakyReLU(negative_slope=0.01)
    """
    if spec.kind == "linear":
        return nn.Linear(spec.d_in, spec.d_out, bias=spec.bias)
    if spec.kind == "relu":
        return nn.ReLU()
    if spec.kind == "gelu":
        return nn.GELU(approximate="tanh" if spec.param else "none")
    if spec.kind == "tanh":
        return nn.Tanh()
    if spec.kind == "sigmoid":
        return nn.Sigmoid()
    if spec.kind == "leaky_relu":
        return nn.LeakyReLU(spec.param)
    if spec.kind == "dropout":
        return nn.Dropout(spec.param)
    raise CheckpointError(f"unknown layer kind {spec.kind!r}; expected one of {', '.join(_KINDS)}")


_SIMPLE = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}


def spec_from_modules(modules: Sequence[nn.Module], first_index: int = 0) -> list[LayerSpec]:
    """Describe a stack of Linear / activation / Dropout modules (no leading Flatten).

    Args:
        modules: the modules in forward order; the first must be an ``nn.Linear``.
        first_index: the position of ``modules[0]`` in the user's own Sequential
            (1 when the caller dropped a leading Flatten), used in error messages.

    Returns:
        One ``LayerSpec`` per module.

    Raises:
        TypeError: an unsupported module, or a non-Linear module before the first Linear
            (the message names its position and type).
        ValueError: consecutive widths that do not match, or no Linear at all.

    Examples:
        >>> from torch import nn
        >>> from hookedmlp.config import spec_from_modules
        >>> specs = spec_from_modules([nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)])
        >>> [(s.kind, s.d_in, s.d_out) for s in specs]
        [('linear', 4, 3), ('tanh', 3, 3), ('linear', 3, 2)]
    """
    specs: list[LayerSpec] = []
    width: Optional[int] = None
    supported = "Flatten (first only), Linear, ReLU, GELU, Tanh, Sigmoid, LeakyReLU, Dropout"
    for i, m in enumerate(modules, start=first_index):
        if isinstance(m, nn.Linear):
            if width is not None and m.in_features != width:
                raise ValueError(f"module {i} (Linear) expects {m.in_features} inputs but the previous layer gives {width}")
            specs.append(LayerSpec("linear", m.in_features, m.out_features, bias=m.bias is not None))
            width = m.out_features
            continue
        if width is None:
            raise TypeError(f"module {i} ({type(m).__name__}) comes before any Linear; the stack must start with Linear (after an optional Flatten)")
        if type(m) in _SIMPLE:
            specs.append(LayerSpec(_SIMPLE[type(m)], width, width))
        elif type(m) is nn.GELU:
            specs.append(LayerSpec("gelu", width, width, param=1.0 if m.approximate == "tanh" else 0.0))
        elif type(m) is nn.LeakyReLU:
            specs.append(LayerSpec("leaky_relu", width, width, param=float(m.negative_slope)))
        elif type(m) is nn.Dropout:
            specs.append(LayerSpec("dropout", width, width, param=float(m.p)))
        else:
            raise TypeError(f"module {i} is {type(m).__name__}, which HookedMLP does not support; supported: {supported}")
    if not specs:
        raise ValueError("the stack has no Linear layer; expected at least one nn.Linear")
    return specs


_KEY = re.compile(r"^(?P<prefix>(?:.*\.)?)(?P<index>\d+)\.(?P<param>weight|bias)$")


def spec_from_state_dict(state_dict: Mapping[str, Tensor], activation: str = "relu") -> tuple[list[LayerSpec], dict[str, Tensor], int]:
    """Infer a Linear-activation stack from a plain ``nn.Sequential``-style state dict.

    Accepts keys ``<prefix>{i}.weight`` / ``<prefix>{i}.bias`` with one common
    prefix, e.g. the PyTorch quickstart's ``linear_relu_stack.0.weight``. Linear
    layers must sit at every other index (Linear, activation, Linear, ...).

    Args:
        state_dict: the Sequential's state dict.
        activation: the activation between the Linear layers (one of ``ACTIVATIONS``).

    Returns:
        ``(specs, weights, offset)``: the specs, the weights renamed to the hooked
            model's keys (``layer{i}.module.weight``...), and ``offset``, the index of
            the first Linear in the original stack.

    Raises:
        CheckpointError: keys or shapes that do not describe such a stack.
        ValueError: an unknown ``activation``.

    Examples:
        >>> from torch import nn
        >>> from hookedmlp.config import spec_from_state_dict
        >>> seq = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> specs, weights, offset = spec_from_state_dict(seq.state_dict())
        >>> [s.kind for s in specs], sorted(weights)[:2], offset
        (['linear', 'relu', 'linear'], ['layer0.module.bias', 'layer0.module.weight'], 0)
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {', '.join(ACTIVATIONS)}")
    params: dict[int, dict[str, Tensor]] = {}
    prefixes = set()
    for key, value in state_dict.items():
        m = _KEY.match(key)
        if m is None:
            raise CheckpointError(f"unexpected key {key!r}; expected keys like 'linear_relu_stack.0.weight' (a Sequential's state dict)")
        prefixes.add(m["prefix"])
        params.setdefault(int(m["index"]), {})[m["param"]] = value
    if not params:
        raise CheckpointError("the state dict is empty; expected the weights of a Sequential of Linear layers")
    if len(prefixes) > 1:
        raise CheckpointError(f"keys have several prefixes {sorted(prefixes)}; pass the state dict of one Sequential")
    indices = sorted(params)
    offset = indices[0]
    if offset > 1 or any(b - a != 2 for a, b in zip(indices, indices[1:])):
        raise CheckpointError(
            f"Linear layers at indices {indices}; expected them at every other index (0, 2, 4, ...: Linear, "
            "activation, Linear, ...). For other stacks build the nn.Sequential and use HookedMLP.from_sequential"
        )
    specs: list[LayerSpec] = []
    weights: dict[str, Tensor] = {}
    width = None
    for n, idx in enumerate(indices):
        w = params[idx].get("weight")
        if w is None or w.ndim != 2:
            raise CheckpointError(f"index {idx} has no 2-D weight; got {sorted(params[idx])}")
        if width is not None and w.shape[1] != width:
            raise CheckpointError(f"Linear at index {idx} takes {w.shape[1]} inputs but the previous one gives {width}")
        bias = params[idx].get("bias")
        if bias is not None and tuple(bias.shape) != (w.shape[0],):
            raise CheckpointError(f"Linear at index {idx}: bias has shape {list(bias.shape)}, expected [{w.shape[0]}] to match its weight {list(w.shape)}")
        if n > 0:
            specs.append(LayerSpec(activation, width, width, param=0.01 if activation == "leaky_relu" else 0.0))
        pos = len(specs)
        specs.append(LayerSpec("linear", int(w.shape[1]), int(w.shape[0]), bias="bias" in params[idx]))
        weights[f"layer{pos}.module.weight"] = w
        if "bias" in params[idx]:
            weights[f"layer{pos}.module.bias"] = params[idx]["bias"]
        width = int(w.shape[0])
    return specs, weights, offset


def check_chain(specs: Sequence[LayerSpec]) -> None:
    """Raise ``ValueError`` unless each module reads the width the previous one writes.

    Args:
        specs: the stack, in forward order.

    Raises:
        ValueError: an activation or dropout that changes the width, or two
            consecutive modules whose widths differ.

    Examples:
        >>> from hookedmlp import LayerSpec
        >>> from hookedmlp.config import check_chain
        >>> check_chain([LayerSpec("linear", 4, 3), LayerSpec("relu", 3, 3)])
        >>> try:
        ...     check_chain([LayerSpec("linear", 4, 3), LayerSpec("linear", 5, 2)])
        ... except ValueError as e:
        ...     print(e)
        layer 1 (linear) reads 5 features but layer 0 writes 3
    """
    for i, spec in enumerate(specs):
        if spec.kind != "linear" and spec.d_in != spec.d_out:
            raise ValueError(f"layer {i} ({spec.kind}) must keep its width, got d_in={spec.d_in}, d_out={spec.d_out}")
        if i and specs[i - 1].d_out != spec.d_in:
            raise ValueError(f"layer {i} ({spec.kind}) reads {spec.d_in} features but layer {i - 1} writes {specs[i - 1].d_out}")


def default_input_shape(d_in: int) -> tuple[int, ...]:
    """``(1, s, s)`` when ``d_in`` is a square ``s*s`` (images), else ``(d_in,)``."""
    side = math.isqrt(d_in)
    return (1, side, side) if side * side == d_in and d_in > 1 else (d_in,)
