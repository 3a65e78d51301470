"""Argument checks shared by the library, the analysis and the CLI: each check is written once here."""

import json
import math
import numbers
from collections.abc import Sequence
from typing import Any, Optional

import torch
from torch import Tensor

from hookedmlp.errors import ArgumentTypeError, ConfigError, HookedMLPError, SteeringError, closest

__all__ = [
    "check_choice",
    "check_class",
    "check_int",
    "check_number",
    "check_coeff",
    "check_scale_fits",
    "check_finite",
    "check_json",
]


def _is_real(value: Any) -> bool:
    """A real scalar of any kind (int, float, numpy's float32/int64...), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_choice(value: Any, choices: Sequence[str], what: str) -> str:
    """``value`` if it is one of ``choices``, else ``ConfigError`` with the closest choice."""
    if not isinstance(value, str) or value not in choices:
        near = closest(value, choices, n=1) if isinstance(value, str) else []
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ConfigError(f"{what} must be one of {', '.join(map(repr, choices))}, got {value!r}{hint}")
    return value


def check_int(value: Any, what: str, low: Optional[int] = None, high: Optional[int] = None) -> int:
    """``value`` if it is an int (not a bool) in ``[low, high)``, else ``ConfigError``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be an int, got {type(value).__name__} ({value!r})")
    if (low is not None and value < low) or (high is not None and value >= high):
        bounds = (
            f"in [{low}, {high})"
            if low is not None and high is not None
            else (f">= {low}" if low is not None else f"< {high}")
        )
        raise ConfigError(f"{what} must be {bounds}, got {value}")
    return value


def check_class(value: Any, n_classes: int, what: str = "digit") -> int:
    """A class label ``0 <= value < n_classes`` (an int, not a bool), else ``ConfigError``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be an int from 0 to {n_classes - 1}, got {type(value).__name__} ({value!r})")
    if not 0 <= value < n_classes:
        raise ConfigError(f"{what} must be from 0 to {n_classes - 1}, got {value}")
    return value


def check_number(
    value: Any,
    what: str,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number in the given range, as a float, else ``ConfigError``."""
    if not _is_real(value):
        raise ConfigError(f"{what} must be a number, got {type(value).__name__} ({value!r})")
    v = float(value)
    below = v <= low if low_open else v < low
    above = v >= high if high_open else v > high
    if not math.isfinite(v) or below or above:
        lo, hi = ("(" if low_open else "[") + f"{low:g}", f"{high:g}" + (")" if high_open else "]")
        raise ConfigError(f"{what} must be finite and in {lo}, {hi}, got {value!r}")
    return v


def check_coeff(coeff: Any) -> float:
    """A finite real coefficient (a real scalar, numpy's too, or a one-element tensor; not a bool), as a float."""
    if not (_is_real(coeff) or (isinstance(coeff, Tensor) and coeff.numel() == 1 and coeff.dtype != torch.bool)):
        raise SteeringError(f"coeff must be a real number, got {type(coeff).__name__} ({coeff!r})")
    value = float(coeff)
    if not math.isfinite(value):
        raise SteeringError(f"coeff must be finite, got {value}; use a finite number such as 1.0")
    return value


def check_scale_fits(coeff: float, tensors: Sequence[Tensor], dtype: torch.dtype, what: str = "coeff") -> None:
    """Raise ``SteeringError`` if ``coeff * t`` would overflow ``dtype`` for any of ``tensors``."""
    if not dtype.is_floating_point:
        raise ArgumentTypeError(f"expected a floating-point dtype, got {dtype}")
    limit = torch.finfo(dtype).max
    biggest = max((float(t.detach().abs().max()) for t in tensors if t.numel()), default=0.0)
    if biggest and abs(coeff) * biggest > limit:
        raise SteeringError(
            f"{what}={coeff:g} times the vector's largest entry {biggest:.4g} is {abs(coeff) * biggest:.4g}, beyond "
            f"{dtype}'s range (largest finite {limit:.4g}); use a smaller {what} or a wider dtype"
        )


def check_finite(t: Tensor, what: str) -> Tensor:
    """``t`` if every entry is finite, else ``SteeringError`` naming ``what`` and the first bad value."""
    bad = ~torch.isfinite(t.detach())
    if bool(bad.any()):
        first = float(t.detach()[bad].reshape(-1)[0])
        count = f" ({int(bad.sum())} of {t.numel()} entries are NaN or infinite)" if t.numel() > 1 else ""
        raise SteeringError(f"{what} must be finite, got {first}{count}")
    return t


def check_json(value: Any, what: str, error: type[HookedMLPError] = ConfigError) -> str:
    """``value`` as JSON text (str, finite numbers, bools, None, lists, dicts with str keys), else ``error``."""
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as e:
        raise error(
            f"{what} must be JSON data (str, finite numbers, bools, None, lists, dicts): {e}; convert "
            "tensors and arrays with .tolist() and numpy numbers with float() or int()"
        ) from None
