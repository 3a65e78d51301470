"""Provenance and its warnings: model fingerprints, and steering a model in training mode."""

import weakref
from typing import Any

from hookedmlp.errors import warn
from hookedmlp.files.fingerprint import tensors_fingerprint
from hookedmlp.models import facts

__all__ = ["SteeringWarning", "model_fingerprint", "warn_training_mode"]


class SteeringWarning(UserWarning):
    """Steering whose result may mislead: a module that is random in training mode, or a vector from another model."""


_FINGERPRINTS: "weakref.WeakKeyDictionary[Any, tuple[tuple, str]]" = weakref.WeakKeyDictionary()


def model_fingerprint(model: Any) -> str:
    """12 hex digits of the SHA-256 of the parameters' names, shapes and values (as float64, so dtype-free).

    Memoised on the tensors' identities, storages and version counters: free until a weight is
    replaced or edited in place (an optimizer step, ``with torch.no_grad(): w.add_(1)``). An edit
    through ``w.data`` bypasses the version counter and is not seen.
    """
    key = facts.state_version(model)
    memo = _FINGERPRINTS.get(model)
    if memo is not None and memo[0] == key:
        return memo[1]
    fp = tensors_fingerprint(facts.state_tensors(model))
    _FINGERPRINTS[model] = (key, fp)
    return fp


_TRAINING: "weakref.WeakKeyDictionary[Any, tuple[tuple, list[str]]]" = weakref.WeakKeyDictionary()


def warn_training_mode(model: Any, doing: str) -> None:
    """``SteeringWarning`` if a module that computes something else in training mode is in training mode."""
    key = facts.structure_key(model)  # changes with every module's mode: the scan below runs once per change
    memo = _TRAINING.get(model)
    if memo is None or memo[0] != key:
        memo = (key, [n for n in facts.training_mode_modules(model) if model.get_submodule(n).training])
        _TRAINING[model] = memo
    active = memo[1]
    if active:
        kinds = sorted({type(model.get_submodule(n)).__name__ for n in active})
        warn(
            f"{doing} a model in training mode: {', '.join(active)} ({', '.join(kinds)}) compute something else "
            "there (dropout is random, batch norm uses the batch's statistics); call model.eval() first",
            SteeringWarning,
        )
