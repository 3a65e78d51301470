"""Architecture recipes: ``MLPConfig`` (the study's MLP and its variants), ``LeNetConfig`` and ``ResidualConfig``.

A recipe is plain data: it is saved in checkpoints, keys the study's model cache, and builds
fresh modules. ``HookedMLP(config)`` builds the chain of an ``MLPConfig`` or ``LeNetConfig``;
``ResidualMLP(config)`` builds a ``ResidualConfig``.
"""

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Optional, Union

from torch import nn

from hookedmlp.checks import check_choice, check_int, check_number
from hookedmlp.errors import ConfigError
from hookedmlp.sizes import check_bytes, recipe_bytes

__all__ = [
    "MLPConfig",
    "LeNetConfig",
    "ResidualConfig",
    "Recipe",
    "ACTIVATIONS",
    "NORMS",
    "activation_module",
    "check_activation",
    "config_from_dict",
    "config_to_dict",
    "image_shape",
]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "identity": nn.Identity,
}
NORMS = ("none", "layernorm", "batchnorm")


def image_shape(features: int) -> tuple[int, ...]:
    """``(1, s, s)`` when ``features`` is a square ``s * s`` (an image), else ``(features,)``."""
    side = math.isqrt(features)
    return (1, side, side) if side * side == features and side > 1 else (features,)


def check_activation(name: Any) -> str:
    """``name`` if it is one of ``ACTIVATIONS``, else ``ConfigError`` with the closest name."""
    return check_choice(name, tuple(ACTIVATIONS), "activation")


def activation_module(name: str) -> nn.Module:
    """A fresh activation module for one of ``ACTIVATIONS``."""
    return ACTIVATIONS[check_activation(name)]()


def _fits(recipe: Any) -> None:
    """``SizeError`` unless the recipe's weights and one example's activations fit the memory budget."""
    check_bytes(recipe_bytes(recipe), f"a {recipe.summary}", "use smaller widths or fewer layers")


def _linear(a: int, b: int, bias: bool = True) -> int:
    return a * b + (b if bias else 0)


def _widths(**widths: Any) -> None:
    for name, w in widths.items():
        if isinstance(w, tuple):
            for i, v in enumerate(w):
                check_int(v, f"{name}[{i}]", low=1)
        else:
            check_int(w, name, low=1)


@dataclasses.dataclass(frozen=True)
class MLPConfig:
    """A fully connected net ``d_in -> d_hidden[0] -> ... -> d_out``.

    Each hidden block is Linear, then the norm (if any), the activation, and Dropout (if
    ``dropout > 0``); every module is its own ``layer{i}``. The default is the study's
    784-512-512-10 ReLU network.
    """

    d_in: int = 784
    d_hidden: tuple[int, ...] = (512, 512)
    d_out: int = 10
    activation: str = "relu"
    dropout: float = 0.0
    norm: str = "none"
    bias: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "d_hidden", tuple(self.d_hidden))
        _widths(d_in=self.d_in, d_hidden=self.d_hidden, d_out=self.d_out)
        check_activation(self.activation)
        check_number(self.dropout, "dropout", 0.0, 1.0, high_open=True)
        check_choice(self.norm, NORMS, "norm")
        if not isinstance(self.bias, bool):
            raise ConfigError(f"bias must be True or False, got {self.bias!r}")
        _fits(self)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return image_shape(self.d_in)

    @property
    def state_elements(self) -> int:
        """Entries of the state dict: weights, biases, norms' parameters and batch norms' statistics."""
        widths = (self.d_in, *self.d_hidden, self.d_out)
        norm = {"none": 0, "layernorm": 2, "batchnorm": 4}[self.norm]  # batch norm: + running mean and variance
        counted = sum(_linear(a, b, self.bias) for a, b in zip(widths[:-1], widths[1:]))
        return counted + sum(norm * b + (self.norm == "batchnorm") for b in self.d_hidden)

    @property
    def activation_elements(self) -> int:
        """Entries of one example's activations at every hook point (each module's input and output)."""
        per_block = 1 + (self.norm != "none") + 1 + (self.dropout > 0)  # Linear, norm, activation, dropout
        inputs = self.d_in + sum(b * (per_block - 1) + b for b in self.d_hidden)  # each module's input
        outputs = sum(b * per_block for b in self.d_hidden) + self.d_out
        return inputs + outputs

    @property
    def summary(self) -> str:
        """In words: ``784-512-512-10 MLP, ReLU``."""
        extra = (f", {self.norm}" if self.norm != "none" else "") + (
            f", dropout {self.dropout:g}" if self.dropout else ""
        )
        return f"{'-'.join(map(str, (self.d_in, *self.d_hidden, self.d_out)))} MLP, {self.activation}{extra}"

    def modules(self) -> list[nn.Module]:
        """Fresh modules (new weights), in forward order."""
        out: list[nn.Module] = []
        widths = (self.d_in, *self.d_hidden, self.d_out)
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            out.append(nn.Linear(a, b, bias=self.bias))
            if i < len(widths) - 2:
                if self.norm != "none":
                    out.append(nn.LayerNorm(b) if self.norm == "layernorm" else nn.BatchNorm1d(b))
                out.append(activation_module(self.activation))
                if self.dropout > 0:
                    out.append(nn.Dropout(self.dropout))
        return out


@dataclasses.dataclass(frozen=True)
class LeNetConfig:
    """A LeNet-5-style CNN for 28 x 28 images: two conv-activation-pool stages, then three Linear layers."""

    channels: tuple[int, int] = (6, 16)
    d_hidden: tuple[int, int] = (120, 84)
    d_out: int = 10
    activation: str = "relu"
    in_channels: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "d_hidden", tuple(self.d_hidden))
        if len(self.channels) != 2 or len(self.d_hidden) != 2:
            raise ConfigError(
                f"LeNetConfig needs 2 channel counts and 2 hidden widths, got {self.channels}, {self.d_hidden}"
            )
        _widths(channels=self.channels, d_hidden=self.d_hidden, d_out=self.d_out, in_channels=self.in_channels)
        check_activation(self.activation)
        _fits(self)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.in_channels, 28, 28)

    @property
    def state_elements(self) -> int:
        (c1, c2), (h1, h2) = self.channels, self.d_hidden
        convs = self.in_channels * c1 * 25 + c1 + c1 * c2 * 25 + c2
        return convs + _linear(c2 * 25, h1) + _linear(h1, h2) + _linear(h2, self.d_out)

    @property
    def activation_elements(self) -> int:
        (c1, c2), (h1, h2) = self.channels, self.d_hidden
        # outputs of conv, act, pool, conv, act, pool, flatten, linear, act, linear, act, linear
        outputs = [c1 * 784, c1 * 784, c1 * 196, c2 * 100, c2 * 100, c2 * 25, c2 * 25, h1, h1, h2, h2, self.d_out]
        return self.in_channels * 784 + sum(outputs[:-1]) + sum(outputs)

    @property
    def summary(self) -> str:
        return f"LeNet-5-style CNN, channels {self.channels[0]}-{self.channels[1]}, {self.activation}"

    def modules(self) -> list[nn.Module]:
        c1, c2 = self.channels
        h1, h2 = self.d_hidden
        return [
            nn.Conv2d(self.in_channels, c1, 5, padding=2),
            activation_module(self.activation),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5),
            activation_module(self.activation),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(c2 * 5 * 5, h1),
            activation_module(self.activation),
            nn.Linear(h1, h2),
            activation_module(self.activation),
            nn.Linear(h2, self.d_out),
        ]


@dataclasses.dataclass(frozen=True)
class ResidualConfig:
    """A residual MLP: embed to ``d_model``, ``n_blocks`` of ``h + W_out act(W_in norm(h))``, norm, unembed."""

    d_in: int = 784
    d_model: int = 256
    d_mlp: int = 512
    n_blocks: int = 2
    d_out: int = 10
    activation: str = "relu"
    norm: str = "layernorm"

    def __post_init__(self) -> None:
        _widths(d_in=self.d_in, d_model=self.d_model, d_mlp=self.d_mlp, n_blocks=self.n_blocks, d_out=self.d_out)
        check_activation(self.activation)
        check_choice(self.norm, ("none", "layernorm"), "norm")
        _fits(self)

    @property
    def state_elements(self) -> int:
        norm = 2 * self.d_model if self.norm == "layernorm" else 0
        block = norm + _linear(self.d_model, self.d_mlp) + _linear(self.d_mlp, self.d_model)
        return _linear(self.d_in, self.d_model) + self.n_blocks * block + norm + _linear(self.d_model, self.d_out)

    @property
    def activation_elements(self) -> int:
        """hook_embed, each block's resid_pre, pre, post, mlp_out and resid_post, and hook_logits."""
        return self.d_model + self.n_blocks * (3 * self.d_model + 2 * self.d_mlp) + self.d_out

    @property
    def summary(self) -> str:
        blocks = f"{self.n_blocks} blocks of d_mlp {self.d_mlp}"
        return f"residual MLP, d_model {self.d_model}, {blocks}, {self.activation}, {self.norm}"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return image_shape(self.d_in)


Recipe = Union[MLPConfig, LeNetConfig, ResidualConfig]
_KINDS: dict[str, type] = {"mlp": MLPConfig, "lenet": LeNetConfig, "residual": ResidualConfig}


def config_to_dict(config: Recipe) -> dict[str, Any]:
    kind = next(k for k, cls in _KINDS.items() if isinstance(config, cls))
    return {"kind": kind, **dataclasses.asdict(config)}


def config_from_dict(data: Any, where: str = "config") -> Optional[Recipe]:
    """The recipe ``config_to_dict`` wrote (``None`` for ``None``); ``ConfigError`` if malformed."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a dict describing an architecture, got {type(data).__name__}")
    fields = dict(data)
    cls = _KINDS.get(fields.pop("kind", "mlp"))
    if cls is None:
        raise ConfigError(
            f"{where}: unknown architecture kind {data.get('kind')!r}; expected one of {', '.join(_KINDS)}"
        )
    try:
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in fields.items()})
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None
