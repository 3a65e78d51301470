"""What hookedmlp knows about each kind of module: how to describe it in a file, whether it is affine.

A module hookedmlp can *save* is one of ``torch.nn``'s (plus ``Reshape``), described as
``{"type": "Conv2d", "args": {...}}`` from its constructor arguments and rebuilt from that
description, never by unpickling. Any other leaf module can still be wrapped and hooked
(it is opaque: nothing is assumed about it), but not saved.

*Affine* modules satisfy ``L(x + v) = L(x) + L(v) - L(0)``, so a vector added before one can
be carried to just after it; the analysis engine uses this.
"""

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hookedmlp.errors import CheckpointError, UnsupportedNetworkError

__all__ = ["Reshape", "describe", "build", "is_affine", "keeps_shape", "fold", "DESCRIBABLE"]


class Reshape(nn.Module):
    """Reshape each example to ``shape`` (what a ``forward`` doing ``x.view(len(x), ...)`` does)."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={list(self.shape)}"


_BIAS = "bias"  # stored as a bool: whether the module has a bias
_CONV = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", _BIAS, "padding_mode")
_BN = ("num_features", "eps", "momentum", "affine", "track_running_stats")
_INPLACE = ("inplace",)
_POOL_MAX = ("kernel_size", "stride", "padding", "dilation", "return_indices", "ceil_mode")
_ARGS: dict[type, tuple[str, ...]] = {
    nn.Linear: ("in_features", "out_features", _BIAS),
    nn.Conv1d: _CONV,
    nn.Conv2d: _CONV,
    nn.Conv3d: _CONV,
    nn.BatchNorm1d: _BN,
    nn.BatchNorm2d: _BN,
    nn.BatchNorm3d: _BN,
    nn.InstanceNorm1d: _BN,
    nn.InstanceNorm2d: _BN,
    nn.InstanceNorm3d: _BN,
    nn.LayerNorm: ("normalized_shape", "eps", "elementwise_affine", _BIAS),
    nn.GroupNorm: ("num_groups", "num_channels", "eps", "affine"),
    nn.RMSNorm: ("normalized_shape", "eps", "elementwise_affine"),
    nn.LocalResponseNorm: ("size", "alpha", "beta", "k"),
    nn.ReLU: _INPLACE,
    nn.ReLU6: _INPLACE,
    nn.SELU: _INPLACE,
    nn.SiLU: _INPLACE,
    nn.Mish: _INPLACE,
    nn.Hardswish: _INPLACE,
    nn.Hardsigmoid: _INPLACE,
    nn.ELU: ("alpha", "inplace"),
    nn.CELU: ("alpha", "inplace"),
    nn.LeakyReLU: ("negative_slope", "inplace"),
    nn.RReLU: ("lower", "upper", "inplace"),
    nn.Hardtanh: ("min_val", "max_val", "inplace"),
    nn.Threshold: ("threshold", "value", "inplace"),
    nn.GELU: ("approximate",),
    nn.Softplus: ("beta", "threshold"),
    nn.Hardshrink: ("lambd",),
    nn.Softshrink: ("lambd",),
    nn.PReLU: ("num_parameters",),
    nn.Sigmoid: (),
    nn.Tanh: (),
    nn.Softsign: (),
    nn.Tanhshrink: (),
    nn.LogSigmoid: (),
    nn.Softmax2d: (),
    nn.Softmax: ("dim",),
    nn.LogSoftmax: ("dim",),
    nn.Softmin: ("dim",),
    nn.GLU: ("dim",),
    nn.Identity: (),
    nn.Flatten: ("start_dim", "end_dim"),
    nn.Unflatten: ("dim", "unflattened_size"),
    nn.Dropout: ("p", "inplace"),
    nn.Dropout1d: ("p", "inplace"),
    nn.Dropout2d: ("p", "inplace"),
    nn.Dropout3d: ("p", "inplace"),
    nn.AlphaDropout: ("p", "inplace"),
    nn.MaxPool1d: _POOL_MAX,
    nn.MaxPool2d: _POOL_MAX,
    nn.MaxPool3d: _POOL_MAX,
    nn.AvgPool1d: ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"),
    nn.AvgPool2d: ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
    nn.AvgPool3d: ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
    nn.AdaptiveAvgPool1d: ("output_size",),
    nn.AdaptiveAvgPool2d: ("output_size",),
    nn.AdaptiveAvgPool3d: ("output_size",),
    nn.AdaptiveMaxPool1d: ("output_size", "return_indices"),
    nn.AdaptiveMaxPool2d: ("output_size", "return_indices"),
    nn.ZeroPad2d: ("padding",),
    nn.ConstantPad2d: ("padding", "value"),
    Reshape: ("shape",),
}
DESCRIBABLE: dict[str, type] = {cls.__name__: cls for cls in _ARGS}

# Elementwise modules: their output has the shape of their input, whatever that is, so shapes need not be probed.
# (Norms, PReLU and softmax also keep the shape, but only of inputs that fit them: those are probed.)
_SAME_SHAPE = (
    nn.modules.activation.ReLU,
    nn.ReLU6,
    nn.SELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.ELU,
    nn.CELU,
    nn.LeakyReLU,
    nn.RReLU,
    nn.Hardtanh,
    nn.Threshold,
    nn.GELU,
    nn.Softplus,
    nn.Hardshrink,
    nn.Softshrink,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softsign,
    nn.Tanhshrink,
    nn.LogSigmoid,
    nn.Identity,
    nn.Dropout,
    nn.AlphaDropout,
)


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list, torch.Size)):
        return [_plain(v) for v in value]
    return value


def describe(module: nn.Module, where: str) -> dict[str, Any]:
    """``{"type", "args"}`` rebuilding ``module`` (its weights aside); ``where`` names it in errors."""
    args_names = _ARGS.get(type(module))
    if args_names is None:
        raise UnsupportedNetworkError(
            f"cannot save {where} ({type(module).__name__}): hookedmlp can save only torch.nn's own modules; save "
            "your network's state_dict, and rebuild the network and wrap it with HookedMLP.from_module"
        )
    args: dict[str, Any] = {}
    for name in args_names:
        if name == _BIAS:
            args[name] = getattr(module, "bias", None) is not None
        else:
            args[name] = _plain(getattr(module, name))
    if isinstance(module, nn.LayerNorm) and not module.elementwise_affine:
        args[_BIAS] = True  # meaningless without affine parameters; the constructor's default
    return {"type": type(module).__name__, "args": args}


def _json_scalar(v: Any) -> bool:
    return (
        v is None or isinstance(v, (bool, int, float, str)) or (isinstance(v, list) and all(_json_scalar(x) for x in v))
    )


def build(desc: Any, where: str, device: Any = None) -> nn.Module:
    """The module ``desc`` describes (``CheckpointError`` if the description is malformed)."""
    if not isinstance(desc, dict) or not isinstance(desc.get("type"), str) or not isinstance(desc.get("args"), dict):
        raise CheckpointError(
            f"{where}: malformed module description {desc!r}; expected {{'type': ..., 'args': {{...}}}}"
        )
    cls = DESCRIBABLE.get(desc["type"])
    if cls is None:
        raise CheckpointError(
            f"{where}: unknown module type {desc['type']!r}; the file is corrupt or from a newer hookedmlp"
        )
    args = desc["args"]
    if set(args) - set(_ARGS[cls]) or not all(_json_scalar(v) for v in args.values()):
        raise CheckpointError(f"{where}: malformed arguments for {desc['type']}: {args!r}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
    try:
        with torch.device(device) if device is not None else contextlib.nullcontext():
            return cls(**kwargs)
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{where}: cannot build {desc['type']}({args}): {e}") from None


_ALWAYS_AFFINE = (
    nn.Linear,
    nn.modules.conv._ConvNd,
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    Reshape,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.ZeroPad2d,
    nn.ConstantPad2d,
)


def keeps_shape(module: nn.Module) -> bool:
    return isinstance(module, _SAME_SHAPE)


def is_affine(module: nn.Module) -> bool:
    """Whether ``module(x + v) == module(x) + module(v) - module(0)`` in its current mode."""
    if isinstance(module, _ALWAYS_AFFINE):  # (padding of any mode or constant is affine too)
        return True
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return not module.training
    if isinstance(module, nn.modules.batchnorm._BatchNorm):  # affine only with fixed running statistics
        return not module.training and module.track_running_stats and module.running_mean is not None
    return False


def fold(module: nn.Module, vectors: Tensor) -> Tensor:
    """``module(v) - module(0)`` for each row of ``vectors`` (one example's shape each), for an affine module."""
    zero = torch.zeros_like(vectors[:1])
    out = module(torch.cat([vectors, zero]))
    return out[:-1] - out[-1:]
