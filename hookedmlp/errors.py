"""Exceptions raised for user mistakes, and the "did you mean" helper they share.

Every error says what was expected, what was received, and how to fix it. They
subclass the built-in exception a caller would naturally catch (``KeyError``,
``ValueError``, ``TypeError``...), so ``except ValueError`` keeps working.
"""

import difflib
from collections.abc import Iterable, Sequence

__all__ = [
    "HookedMLPError",
    "HookNameError",
    "ShapeError",
    "InputDtypeError",
    "CheckpointError",
    "DataError",
    "SteeringError",
    "UsageError",
    "closest",
    "did_you_mean",
]


class HookedMLPError(Exception):
    """Base class of every error hookedmlp raises for user input."""


class HookNameError(HookedMLPError, KeyError):
    """A hook name or names filter that matches no hook point of the model."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ShapeError(HookedMLPError, ValueError):
    """A tensor whose shape does not fit where it is used."""


class InputDtypeError(HookedMLPError, TypeError):
    """A tensor whose dtype (or device) does not fit where it is used."""


class CheckpointError(HookedMLPError, ValueError):
    """A checkpoint or saved file that is missing, corrupt, unsafe or for another architecture."""


class DataError(HookedMLPError, RuntimeError):
    """MNIST data that cannot be found or fails its checksum."""


class UsageError(HookedMLPError, ValueError):
    """Arguments that contradict each other (e.g. ``stop_at`` before ``start_at``)."""


class SteeringError(HookedMLPError, ValueError):
    """A steering vector or intervention that does not fit the model."""


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates most similar to ``name``, best first (possibly empty)."""
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)


def did_you_mean(name: str, candidates: Sequence[str]) -> str:
    """A suffix for error messages: ``"; did you mean 'x'?"`` plus the valid choices.

    >>> did_you_mean("layer0.pst", ["layer0.pre", "layer0.post"])
    "; did you mean 'layer0.post'? (valid: layer0.pre, layer0.post)"
    """
    matches = closest(name, candidates, n=1)
    hint = ""
    if matches:
        hint = f"; did you mean {matches[0]!r}?"
    shown = list(candidates)
    listing = ", ".join(shown) if len(shown) <= 12 else ", ".join(shown[:3]) + " ... " + shown[-1]
    return f"{hint} (valid: {listing})"
