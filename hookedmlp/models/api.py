"""HookedModel: a HookedRoot with the whole API as methods (steering, interventions, files, shapes, the hook table).

Every method here is one line over a function that works on any ``HookedRoot``
(``hookedmlp.steer(model, ...)`` and ``model.steer(...)`` are the same thing). ``HookedGraph``,
``HookedMLP`` and ``ResidualMLP`` are HookedModels; subclass it for a network you write by hand
(or ``HookedRoot``, TransformerLens' hook surface alone, and call the functions).
"""

from collections.abc import Sequence
from typing import Any, Optional, Union

from torch import Tensor

from hookedmlp import _moved
from hookedmlp.errors import CheckpointError
from hookedmlp.files.checkpoint import load_checkpoint, load_pretrained, save_checkpoint
from hookedmlp.hooks.context import HookContext
from hookedmlp.hooks.recording import Device
from hookedmlp.hooks.root import HookedRoot
from hookedmlp.models import facts
from hookedmlp.steering import interventions
from hookedmlp.steering.contrast import build_steering_vector, steer
from hookedmlp.steering.vector import SteeringVector

__all__ = ["HookedModel", "hook_table"]


def hook_table(model: Any) -> list[tuple[str, str, str]]:
    """``(hook name, [batch, *shape], what it is)`` for every hook point; ``hookedmlp hooks`` prints it."""
    shapes = facts.activation_shapes(model)
    return [
        (n, "[" + ", ".join(["batch", *map(str, shapes[n])]) + "]", "hook point in forward") for n in model.hook_names
    ]


class HookedModel(HookedRoot):
    """A ``HookedRoot`` with steering, interventions, files, shapes and the hook table as methods (see the module)."""

    def __init__(self) -> None:
        super().__init__()
        self.meta: dict[str, Any] = {}

    # -- inputs, state and shapes (hookedmlp.models.facts) -----------------------------
    def reference_tensor(self) -> Optional[Tensor]:
        return facts.reference_tensor.default(self)  # type: ignore[attr-defined]

    def check_tensor(self, x: Any, what: str = "input") -> Tensor:
        return facts.check_tensor.default(self, x, what)  # type: ignore[attr-defined]

    def accepted_input_shapes(self) -> Optional[list[tuple[int, ...]]]:
        return facts.accepted_input_shapes.default(self)  # type: ignore[attr-defined]

    def prepare_input(self, x: Any) -> Tensor:
        """Check a batch of inputs (dtype, device, shape) and reshape it to what ``forward`` reads."""
        return facts.prepare_input.default(self, x)  # type: ignore[attr-defined]

    def as_batch(self, x: Any) -> Tensor:
        """Like ``prepare_input``, but one example (without a batch dimension) becomes a batch of one."""
        return facts.as_batch.default(self, x)  # type: ignore[attr-defined]

    def structure_key(self) -> tuple[Any, ...]:
        return facts.structure_key.default(self)  # type: ignore[attr-defined]

    def state_tensors(self) -> list[tuple[str, Tensor]]:
        return facts.state_tensors.default(self)  # type: ignore[attr-defined]

    def state_version(self) -> tuple[Any, ...]:
        return facts.state_version.default(self)  # type: ignore[attr-defined]

    def training_mode_modules(self) -> list[str]:
        return facts.training_mode_modules.default(self)  # type: ignore[attr-defined]

    def check_hook_names(self, names: Any, what: str = "names") -> list[str]:
        return facts.check_hook_names.default(self, names, what)  # type: ignore[attr-defined]

    def clean_activations(self, x: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
        """Activations at ``names`` from a pass where no hook runs (no steering, no intervention), without grad."""
        return facts.clean_activations.default(self, x, names)  # type: ignore[attr-defined]

    def activation_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of one example's activation at every hook point."""
        return facts.activation_shapes.default(self)  # type: ignore[attr-defined]

    def activation_shape(self, name: str) -> tuple[int, ...]:
        """The shape of one example's activation at hook point ``name``."""
        return facts.activation_shape.default(self, name)  # type: ignore[attr-defined]

    def hook_table(self) -> list[tuple[str, str, str]]:
        """``(hook name, [batch, *shape], what it is)`` for every hook point; ``hookedmlp hooks`` prints it."""
        return hook_table(self)

    # -- files ----------------------------------------------------------------------------
    def save(self, path: Any, meta: Optional[dict[str, Any]] = None) -> None:
        """Write a checkpoint atomically: the architecture, weights, buffers and ``meta`` (default ``self.meta``)."""
        save_checkpoint(self, path, meta)

    @classmethod
    def load(cls, path: Any, device: Device = None) -> Any:
        """Load a checkpoint written by ``save`` (``weights_only``; checked against its architecture), in eval mode."""
        model = load_checkpoint(path, device)
        if not isinstance(model, cls):
            raise CheckpointError(
                f"{str(path)!r} holds a {type(model).__name__}, not a {cls.__name__}; load it with "
                f"{type(model).__name__}.load or hookedmlp.load"
            )
        return model

    @classmethod
    def from_pretrained(cls, name: str = "mnist-mlp", device: Device = None) -> Any:
        """A model shipped with the package (``"mnist-mlp"``: the study's network), its sha256 checked, in eval mode.

        Examples:
            >>> HookedMLP.from_pretrained("mnist-mlp").hook_names[-1]
            'layer4.post'
        """
        model = load_pretrained(name, device)
        if not isinstance(model, cls):
            raise CheckpointError(f"pretrained {name!r} is a {type(model).__name__}, not a {cls.__name__}")
        return model

    # -- steering and the other interventions (hookedmlp.steering) --------------------------
    def steering_vector(
        self,
        a: Any,
        b: Any,
        hook: Union[str, Sequence[str]],
        coeff: float = 1.0,
        method: str = "first",
        exemplar: int = 0,
        data: Any = None,
    ) -> SteeringVector:
        """``coeff * (act_hook(a) - act_hook(b))`` as a ``SteeringVector`` (see ``hookedmlp.steering_vector``).

        Examples:
            >>> model.steering_vector(3, 1, "layer0.post").label
            '3 - 1'
        """
        return build_steering_vector(self, a, b, hook, coeff=coeff, method=method, exemplar=exemplar, data=data)

    def steer(
        self,
        vector: Optional[SteeringVector] = None,
        *,
        a: Any = None,
        b: Any = None,
        hook: Union[str, Sequence[str], None] = None,
        coeff: float = 1.0,
        method: str = "first",
        exemplar: int = 0,
        data: Any = None,
    ) -> HookContext:
        """Context manager adding a steering vector: ``with model.steer(a=3, b=1, hook="layer0.post"):``.

        See ``hookedmlp.steer``.

        Examples:
            >>> ones = images[labels == 1][:5]
            >>> with model.steer(a=3, b=1, hook="layer0.post"):
            ...     model(ones).argmax(-1).tolist()
            [3, 3, 3, 3, 3]
        """
        return steer(self, vector, a=a, b=b, hook=hook, coeff=coeff, method=method, exemplar=exemplar, data=data)

    def ablate(self, direction: Any, hook: str) -> HookContext:
        """Context manager projecting ``direction`` out of the activation at ``hook`` (see ``interventions.ablate``).

        Examples:
            >>> with tiny.ablate(torch.tensor([1.0] + [0.0] * 7), "layer0.post"):
            ...     _, cache = tiny.run_with_cache(tiny_x, names_filter="layer0.post")
            >>> cache["layer0.post"][:, 0].abs().max().item()
            0.0
        """
        return interventions.ablate(self, direction, hook)

    def patch(self, hook: str, activations: Any) -> HookContext:
        """Context manager replacing the activation at ``hook`` (see ``interventions.patch``).

        Examples:
            >>> _, clean = tiny.run_with_cache(tiny_x)
            >>> with tiny.patch("layer1.post", clean):
            ...     torch.equal(tiny(torch.zeros_like(tiny_x)), tiny(tiny_x))
            True
        """
        return interventions.patch(self, hook, activations)

    def clamp(self, hook: str, index: Any, value: Any) -> HookContext:
        """Context manager fixing units ``index`` at ``hook`` to ``value`` (see ``interventions.clamp``).

        Examples:
            >>> with tiny.clamp("layer1.post", [0, 2], 5.0):
            ...     _, cache = tiny.run_with_cache(tiny_x, names_filter="layer1.post")
            >>> cache["layer1.post"][0, [0, 2]].tolist()
            [5.0, 5.0]
        """
        return interventions.clamp(self, hook, index, value)


_moved.install_methods(HookedRoot, HookedModel)  # HookedRoot's old methods, as deprecated aliases of these
