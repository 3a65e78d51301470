"""The inputs of patching: clean and corrupt batches, which run is patched, and the units of a hook point.

``direction="denoise"`` (the default, as TransformerLens' patching) runs the corrupt inputs and
patches in the clean run's values: an entry near the clean run's metric marks what carries the
difference. ``"noise"`` runs the clean inputs and patches in the corrupt run's values.

The entries of a hook point whose one-example activation has shape ``s``:

- ``per="hook"``: the whole activation (one entry);
- ``per="unit"``: each index of its first dimension (a neuron of ``[512]``, a channel of
  ``[C, H, W]``), as ``hookedmlp.clamp`` counts units;
- ``per="position"``: each index of the other dimensions, all units together (a pixel ``(h, w)``
  of ``[C, H, W]``); a ``[d]`` activation has one position, the whole vector.
"""

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor

from hookedmlp.checks import check_choice
from hookedmlp.errors import ShapeError
from hookedmlp.models import facts

__all__ = ["PER", "DIRECTIONS", "Pair", "prepare_pair", "grid_of", "unit_masks", "unit_sums", "any_hook_attached"]

PER = ("hook", "unit", "position")
DIRECTIONS = ("denoise", "noise")


@dataclasses.dataclass(frozen=True)
class Pair:
    """The patched run (``base``) and the run whose values are patched in (``source``), as the model reads them."""

    base: Tensor
    source: Tensor
    direction: str

    @property
    def n(self) -> int:
        return len(self.base)


def _shape(x: Any) -> str:
    return str(list(x.shape)) if isinstance(x, Tensor) else type(x).__name__


def prepare_pair(model: Any, clean: Any, corrupt: Any, direction: str) -> Pair:
    """Check both batches (one shape; dtype, device, the model's input shape) and order them by ``direction``."""
    check_choice(direction, DIRECTIONS, "direction")
    if not isinstance(clean, Tensor) or not isinstance(corrupt, Tensor) or clean.shape != corrupt.shape:
        raise ShapeError(
            f"clean has shape {_shape(clean)} and corrupt {_shape(corrupt)}; patching pairs clean[i] with "
            "corrupt[i], so pass two batches of one shape"
        )
    clean_x, corrupt_x = facts.as_batch(model, clean), facts.as_batch(model, corrupt)
    return Pair(corrupt_x, clean_x, direction) if direction == "denoise" else Pair(clean_x, corrupt_x, direction)


def grid_of(shape: tuple[int, ...], per: str) -> tuple[int, ...]:
    """The shape of the entries of an activation of one-example ``shape`` (see the module's docs)."""
    return {"hook": (), "unit": tuple(shape[:1]), "position": tuple(shape[1:])}[per]


def unit_masks(shape: tuple[int, ...], per: str, entries: range, device: Any) -> Tensor:
    """``[len(entries), *shape]`` booleans: where each entry patches (``per`` is ``"unit"`` or ``"position"``)."""
    grid = grid_of(shape, per)
    masks = torch.zeros(len(entries), math.prod(grid), dtype=torch.bool, device=device)
    masks[torch.arange(len(entries), device=device), torch.arange(entries.start, entries.stop, device=device)] = True
    masks = masks.view(len(entries), *grid)
    if per == "unit":
        return masks.view(len(entries), *grid, *[1] * (len(shape) - 1)).expand(len(entries), *shape)
    return masks.unsqueeze(1).expand(len(entries), *shape)


def unit_sums(x: Tensor, per: str) -> Tensor:
    """``x [n, *shape]`` summed over the batch and within each entry: ``[*grid]``."""
    if per == "hook":
        return x.sum()
    if per == "unit":
        return x.sum(0).flatten(1).sum(1) if x.ndim > 2 else x.sum(0)
    return x.sum((0, 1)) if x.ndim > 2 else x.sum()


def any_hook_attached(model: Any) -> bool:
    """Whether any hook (hookedmlp's or PyTorch's own) is on a hook point: the patched runs must run them."""
    return bool(model.attached_hooks()) or any(hp._forward_hooks for hp in model.hook_dict.values())
