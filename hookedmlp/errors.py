"""The exceptions hookedmlp raises for user mistakes, and the "did you mean" helper.

Each one is also the built-in a caller would catch (``ShapeError`` is a ``ValueError``,
``HookNameError`` a ``KeyError``...), so ``except ValueError`` keeps working. Messages say
what was expected, what was received, and the fix; the CLI prints them as one line and
exits with status 2.
"""

import difflib
import sys
import warnings
from collections.abc import Iterable, Sequence

__all__ = [
    "HookedMLPError",
    "ConfigError",
    "UsageError",
    "ArgumentTypeError",
    "HookNameError",
    "ShapeError",
    "BatchDimError",
    "InputDtypeError",
    "UnsupportedNetworkError",
    "CheckpointError",
    "DataError",
    "SteeringError",
    "UnitIndexError",
    "FileWriteError",
    "SizeError",
    "DeviceError",
    "ClusterError",
    "MissingExtraError",
    "closest",
    "capped",
    "did_you_mean",
    "warn",
]


class HookedMLPError(Exception):
    """Base class of every error raised for user input."""


class ConfigError(HookedMLPError, ValueError):
    """A setting out of its range: a width, an activation name, a learning rate, a digit..."""


class UsageError(HookedMLPError, ValueError):
    """Arguments that contradict each other, or a call the object cannot honour."""


class ArgumentTypeError(HookedMLPError, TypeError):
    """An argument of the wrong kind (a hook function that is not callable, a str for a list...)."""


class HookNameError(HookedMLPError, KeyError):
    """A hook name or names filter that matches no hook point."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ShapeError(HookedMLPError, ValueError):
    """A tensor whose shape does not fit where it is used."""


class BatchDimError(ShapeError, AssertionError):
    """``remove_batch_dim`` on a batch of more than one; an ``AssertionError`` as in TransformerLens."""


class InputDtypeError(HookedMLPError, TypeError):
    """A tensor whose dtype or device does not fit where it is used."""


class UnsupportedNetworkError(HookedMLPError, TypeError):
    """A network hookedmlp cannot wrap without computing something different."""


class CheckpointError(HookedMLPError, ValueError):
    """A saved file that is missing, corrupt, unsafe, or for another architecture."""


class DataError(HookedMLPError, RuntimeError):
    """Data that cannot be found, read, or verified."""


class SteeringError(HookedMLPError, ValueError):
    """A steering vector, coefficient or intervention that does not fit the model."""


class UnitIndexError(HookedMLPError, IndexError):
    """A unit index outside an activation."""


class FileWriteError(HookedMLPError, OSError):
    """A file that cannot be written: read-only, no space left, a parent that is a file..."""


class DeviceError(HookedMLPError, RuntimeError):
    """A device this machine does not have (``--device cuda`` without CUDA)."""


class ClusterError(HookedMLPError, ConnectionError):
    """A cluster (Ray) that cannot be reached, or workers that were lost."""


class MissingExtraError(HookedMLPError, ImportError):
    """An optional extra that is not installed (``pip install -e ".[ray]"``)."""


class SizeError(HookedMLPError, MemoryError):
    """A network, activation or file whose memory estimate is above the budget (``hookedmlp.sizes``)."""


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` candidates similar to ``name`` (ratio at least 0.5), best first."""
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)


def did_you_mean(name: str, candidates: Sequence[str]) -> str:
    """``"; did you mean 'x'? (valid: ...)"`` for an error message (the list abbreviated past 12)."""
    matches = closest(name, candidates, n=1)
    hint = f"; did you mean {matches[0]!r}?" if matches else ""
    shown = list(candidates)
    listing = ", ".join(shown) if len(shown) <= 12 else ", ".join(shown[:3]) + " ... " + shown[-1]
    return f"{hint} (valid: {listing})"


def capped(items: Sequence[object], n: int = 4) -> str:
    """``repr`` of the first ``n`` items as a list, plus ``" and N more"``: an error message stays one short line."""
    shown = repr(list(items[:n]))
    return shown if len(items) <= n else f"{shown} and {len(items) - n} more"


# Packages whose frames a warning skips: hookedmlp's own, and those between a user's line and hookedmlp's code
# (torch's Module.__call__ around a hook point's forward; the type checkers wrapping functions in the tests).
_NOT_THE_CALLER = ("hookedmlp", "hookedmlp_analysis", "analysis", "torch", "jaxtyping", "typeguard")


def warn(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` pointing at the first caller outside hookedmlp (and its analysis package, and torch)."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in _NOT_THE_CALLER:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
