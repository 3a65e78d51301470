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
    """Base class of every error hookedmlp raises for user input.

    Catch it to handle any user mistake at once; the CLI prints it as one line
    and exits with status 2.

    Examples:
        >>> from hookedmlp.errors import HookedMLPError, ShapeError
        >>> issubclass(ShapeError, HookedMLPError)
        True
    """


class HookNameError(HookedMLPError, KeyError):
    """A hook name or names filter that matches no hook point of the model.

    Also a ``KeyError``; unlike ``KeyError``, ``str()`` gives the message itself,
    not its ``repr``.

    Examples:
        >>> from hookedmlp import HookedMLP, MLPConfig
        >>> from hookedmlp.errors import HookNameError
        >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
        >>> try:
        ...     model.resolve_name("layer0.pst")
        ... except HookNameError as e:
        ...     print(str(e).split(" (valid")[0])
        unknown hook 'layer0.pst'; did you mean 'layer0.post'?
    """

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ShapeError(HookedMLPError, ValueError):
    """A tensor whose shape does not fit where it is used (also a ``ValueError``).

    Examples:
        >>> import torch
        >>> from hookedmlp import HookedMLP, MLPConfig
        >>> from hookedmlp.errors import ShapeError
        >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
        >>> try:
        ...     model(torch.ones(2, 5))
        ... except ShapeError as e:
        ...     print(e)
        expected input of shape [batch, 4] or [batch, 1, 2, 2] or [batch, 2, 2], got [2, 5]
    """


class InputDtypeError(HookedMLPError, TypeError):
    """A tensor whose dtype (or device) does not fit where it is used (also a ``TypeError``).

    Examples:
        >>> import torch
        >>> from hookedmlp import HookedMLP, MLPConfig
        >>> from hookedmlp.errors import InputDtypeError
        >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
        >>> try:
        ...     model(torch.ones(2, 4, dtype=torch.long))
        ... except InputDtypeError:
        ...     print("integer input refused")
        integer input refused
    """


class CheckpointError(HookedMLPError, ValueError):
    """A checkpoint or saved file that is missing, corrupt, unsafe or for another architecture.

    Also a ``ValueError``.

    Examples:
        >>> import pathlib, tempfile
        >>> from hookedmlp import HookedMLP
        >>> from hookedmlp.errors import CheckpointError
        >>> missing = pathlib.Path(tempfile.mkdtemp()) / "missing.pt"
        >>> try:
        ...     HookedMLP.load(missing)
        ... except CheckpointError as e:
        ...     print(str(e).endswith("does not exist; check the path"))
        True
    """


class DataError(HookedMLPError, RuntimeError):
    """MNIST data that cannot be found or fails its checksum (also a ``RuntimeError``).

    Examples:
        >>> from hookedmlp.errors import DataError
        >>> issubclass(DataError, RuntimeError)
        True
    """


class UsageError(HookedMLPError, ValueError):
    """Arguments that contradict each other (e.g. ``stop_at`` before ``start_at``).

    Also a ``ValueError``.

    Examples:
        >>> import torch
        >>> from hookedmlp import HookedMLP, MLPConfig
        >>> from hookedmlp.errors import UsageError
        >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
        >>> try:
        ...     model(torch.ones(1, 3), start_at="layer1.post", stop_at="layer0.post")
        ... except UsageError:
        ...     print("stop_at comes first")
        stop_at comes first
    """


class SteeringError(HookedMLPError, ValueError):
    """A steering vector or intervention that does not fit the model (also a ``ValueError``).

    Examples:
        >>> from hookedmlp.errors import SteeringError
        >>> from hookedmlp.steering import check_coeff
        >>> try:
        ...     check_coeff(float("nan"))
        ... except SteeringError as e:
        ...     print(e)
        coeff must be finite, got nan; use a finite number such as 1.0
    """


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates most similar to ``name``, best first (possibly empty).

    Args:
        name: the string to match, e.g. a mistyped hook name.
        candidates: the valid strings.
        n: at most this many matches.

    Returns:
        Up to ``n`` candidates whose similarity to ``name`` is at least 0.5, best first.

    Examples:
        >>> from hookedmlp.errors import closest
        >>> closest("layer0.pst", ["layer0.pre", "layer0.post", "layer1.post"], n=1)
        ['layer0.post']
        >>> closest("xyz", ["layer0.pre"])
        []
    """
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)


def did_you_mean(name: str, candidates: Sequence[str]) -> str:
    """A suffix for error messages: ``"; did you mean 'x'?"`` plus the valid choices.

    Args:
        name: the string that matched nothing.
        candidates: the valid choices, listed in full up to 12 (else abbreviated).

    Returns:
        The suffix, starting with ``"; did you mean ...?"`` when a close match exists,
        then ``" (valid: ...)"``.

    Examples:
        >>> from hookedmlp.errors import did_you_mean
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
