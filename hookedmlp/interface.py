"""HookedModel: what steering, interventions and the analysis need from a hooked model.

Every ``HookedRoot`` (so ``HookedMLP``, ``ResidualMLP`` and your own subclasses) has it.
"""

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

__all__ = ["HookedModel"]


@runtime_checkable
class HookedModel(Protocol):
    """A model with named hook points, hook contexts, and activation shapes."""

    hook_dict: dict
    meta: dict
    input_shape: tuple

    def resolve_name(self, name: str) -> str: ...

    def resolve_names(self, names_filter: Any) -> list: ...

    def hooks(self, fwd_hooks: Any = (), bwd_hooks: Any = (), reset_hooks_end: bool = True,
              clear_contexts: bool = False) -> Any: ...

    def activation_shape(self, name: str) -> tuple: ...

    def clean_activations(self, x: Tensor, names: Sequence[str]) -> dict: ...

    def as_batch(self, x: Tensor) -> Tensor: ...
