"""HookedModel: what steering, interventions and the analysis need from a hooked model.

Every ``HookedRoot`` (so ``HookedMLP``, ``ResidualMLP`` and your own subclasses) has it.
``example_shape`` and ``check_example_shape`` word one example's activation shape the way
error messages show it: ``[C, H, W] = [4, 6, 6]`` for a CNN's feature map.
"""

from collections.abc import Sequence
from typing import Any, Optional, Protocol, runtime_checkable

from torch import Tensor, nn

from hookedmlp.errors import ShapeError

__all__ = ["HookedModel", "example_shape", "check_example_shape"]


@runtime_checkable
class HookedModel(Protocol):
    """A model with named hook points, hook contexts, and activation shapes."""

    hook_dict: dict
    meta: dict
    input_shape: tuple
    training: bool

    def resolve_name(self, name: str) -> str: ...

    def resolve_names(self, names_filter: Any) -> list: ...

    def hooks(
        self, fwd_hooks: Any = (), bwd_hooks: Any = (), reset_hooks_end: bool = True, clear_contexts: bool = False
    ) -> Any: ...

    def activation_shape(self, name: str) -> tuple: ...

    def clean_activations(self, x: Tensor, names: Sequence[str]) -> dict: ...

    def as_batch(self, x: Tensor) -> Tensor: ...

    def prepare_input(self, x: Any) -> Tensor: ...

    def reference_tensor(self) -> Optional[Tensor]: ...

    def structure_key(self) -> tuple: ...

    def state_tensors(self) -> list: ...

    def state_version(self) -> tuple: ...

    def training_mode_modules(self) -> list: ...

    def get_submodule(self, target: str) -> nn.Module: ...


_AXES = {2: "C, L", 3: "C, H, W", 4: "C, D, H, W"}


def example_shape(shape: Sequence[int]) -> str:
    """``[512]``, or with the axes named for a feature map: ``[C, H, W] = [4, 6, 6]``."""
    dims = "[" + ", ".join(map(str, shape)) + "]"
    return f"[{_AXES[len(shape)]}] = {dims}" if len(shape) in _AXES else dims


def check_example_shape(t: Tensor, model: HookedModel, hook: str, what: str) -> tuple[int, ...]:
    """The activation shape at ``hook``; ``ShapeError`` (expected vs got) unless ``t`` has it."""
    shape = tuple(model.activation_shape(hook))
    if tuple(t.shape) != shape:
        got = example_shape(t.shape) if t.ndim == len(shape) else "[" + ", ".join(map(str, t.shape)) + "]"
        raise ShapeError(
            f"{what} at {hook!r} has shape {got}, but one example's activation there is "
            f"{example_shape(shape)} (a batch is [batch, {', '.join(map(str, shape))}]); "
            f"expected a tensor of shape {list(shape)}"
        )
    return shape
