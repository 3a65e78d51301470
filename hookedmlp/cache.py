"""ActivationCache: a read-only mapping from hook name to a cached activation."""

from collections.abc import Iterable, Iterator, Mapping
from typing import Optional, Union

import torch
from jaxtyping import Float
from torch import Tensor

from hookedmlp.errors import HookNameError, ShapeError, did_you_mean

__all__ = ["ActivationCache"]

Device = Union[str, torch.device, None]


class ActivationCache(Mapping[str, Tensor]):
    """Activations recorded by ``HookedMLP.run_with_cache``, keyed by hook name.

    Read-only: entries cannot be assigned or deleted. Tensors are detached copies
    taken when the hook point ran, so later in-place edits never reach them.
    Gradients recorded with ``incl_bwd=True`` are stored as ``"<name>_grad"``.

    Args:
        activations: hook name -> activation tensor (copied into a new dict).
        has_batch_dim: whether the tensors' first dimension is the batch
            (``False`` after ``remove_batch_dim``).

    Examples:
        >>> import torch
        >>> from hookedmlp import ActivationCache
        >>> cache = ActivationCache({"layer0.post": torch.zeros(2, 3)}, has_batch_dim=True)
        >>> cache["layer0.post"].shape
        torch.Size([2, 3])
        >>> list(cache)
        ['layer0.post']
    """

    def __init__(self, activations: Mapping[str, Tensor], has_batch_dim: bool = True) -> None:
        self._acts: dict[str, Tensor] = dict(activations)
        self.has_batch_dim = has_batch_dim

    def __getitem__(self, name: str) -> Tensor:
        try:
            return self._acts[name]
        except KeyError:
            raise HookNameError(f"no activation cached for {name!r}{did_you_mean(name, list(self._acts))}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._acts)

    def __len__(self) -> int:
        return len(self._acts)

    def __setitem__(self, name: str, value: Tensor) -> None:
        raise TypeError("ActivationCache is read-only; copy it with dict(cache) to edit")

    def __delitem__(self, name: str) -> None:
        raise TypeError("ActivationCache is read-only; copy it with dict(cache) to edit")

    def to(self, device: Device) -> "ActivationCache":
        """A new cache with every tensor moved to ``device``.

        Args:
            device: the target device (``"cpu"``, ``"cuda"``, a ``torch.device``), as for
                ``Tensor.to``.

        Returns:
            A new ``ActivationCache``; this one is unchanged.

        Examples:
            >>> import torch
            >>> from hookedmlp import ActivationCache
            >>> cache = ActivationCache({"layer0.post": torch.zeros(2, 3)})
            >>> cache.to("cpu")["layer0.post"].device
            device(type='cpu')
        """
        return ActivationCache({k: v.to(device) for k, v in self._acts.items()}, self.has_batch_dim)

    def stack(self, names: Optional[Iterable[str]] = None) -> Float[Tensor, "n_names ..."]:
        """Stack the activations of ``names`` (default: all) along a new first dimension.

        All must have the same shape (e.g. ``["layer0.post", "layer2.post"]``, both
        ``[batch, 512]``).

        Args:
            names: the hook names to stack, in that order (default: every cached name).

        Returns:
            A tensor ``[len(names), *shape]``.

        Raises:
            ShapeError: no names, or activations of different shapes (the message lists them).

        Examples:
            >>> import torch
            >>> from hookedmlp import HookedMLP, MLPConfig
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3, 3), d_out=2))
            >>> _, cache = model.run_with_cache(torch.ones(5, 4))
            >>> cache.stack(["layer0.post", "layer2.post"]).shape
            torch.Size([2, 5, 3])
        """
        keys = list(self._acts) if names is None else list(names)
        if not keys:
            raise ShapeError("stack() needs at least one name; got none")
        tensors = [self[k] for k in keys]
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            listing = ", ".join(f"{k}: {tuple(t.shape)}" for k, t in zip(keys, tensors))
            raise ShapeError(f"stack() needs activations of one shape; got {listing}. Pass names of equal width")
        return torch.stack(tensors)

    def remove_batch_dim(self) -> "ActivationCache":
        """For a cache of a single input (batch size 1): drop the batch dimension.

        Returns:
            A new cache with ``has_batch_dim=False`` (this cache itself if it already has none).

        Raises:
            ShapeError: some activation has a batch size other than 1.

        Examples:
            >>> import torch
            >>> from hookedmlp import HookedMLP, MLPConfig
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
            >>> _, cache = model.run_with_cache(torch.ones(1, 4))
            >>> cache.remove_batch_dim()["layer0.post"].shape
            torch.Size([3])
        """
        if not self.has_batch_dim:
            return self
        sizes = {k: v.shape[0] for k, v in self._acts.items() if v.ndim > 0}
        bad = {k: s for k, s in sizes.items() if s != 1}
        if bad:
            k, s = next(iter(bad.items()))
            raise ShapeError(f"remove_batch_dim() needs batch size 1; {k!r} has batch size {s}. Cache a single input")
        return ActivationCache({k: v[0] for k, v in self._acts.items()}, has_batch_dim=False)

    def __repr__(self) -> str:
        if not self._acts:
            return "ActivationCache({})"
        width = max(len(k) for k in self._acts)
        lines = [f"  {k:<{width}}  {tuple(v.shape)} {str(v.dtype).removeprefix('torch.')} {v.device}" for k, v in self._acts.items()]
        return "ActivationCache(\n" + "\n".join(lines) + "\n)"
