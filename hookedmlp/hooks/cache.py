"""ActivationCache: the activations of one forward pass, keyed by hook name (TransformerLens' API)."""

import html
import logging
import numbers
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Optional, Union

import torch
from jaxtyping import Float
from torch import Tensor

from hookedmlp.errors import (
    ArgumentTypeError,
    BatchDimError,
    HookNameError,
    ShapeError,
    UnitIndexError,
    UsageError,
    capped,
    did_you_mean,
    warn,
)
from hookedmlp.files.cache_file import read_cache_file, write_cache_file
from hookedmlp.files.fingerprint import tensors_fingerprint
from hookedmlp.hooks.names import layer_count

__all__ = ["ActivationCache"]

logger = logging.getLogger("hookedmlp")
Key = Union[str, tuple[Any, ...]]


class ActivationCache(Mapping[str, Tensor]):
    """The activations recorded by ``run_with_cache``, keyed by hook name; gradients as ``"<name>_grad"``.

    Entries are the pass's own tensors, detached, not copies: ``layer{i}.post`` and
    ``layer{i+1}.pre`` are one activation, so both keys hold the same tensor object (as
    TransformerLens' residual names do). A hook that later edits a cached tensor in place
    during the same pass gets it copied first, so the cache holds what the hook point saw.
    Editing a cached tensor in place after the pass edits it for every key that shares it (the
    last entry is the returned output itself; ``layer0.pre`` is the input batch).

    The mapping cannot be assigned to; ``cache_dict`` is the plain dict behind it (the dict
    given, not a copy, as in TransformerLens). As in TransformerLens, a tuple key goes through
    the model's ``act_name`` (``cache["post", 0]`` is ``cache["layer0.post"]`` on a HookedMLP,
    ``cache["k", -1]`` is ``cache["blocks.1.attn.hook_k"]`` on a two-block HookedRoot; negative
    layers count from the end; a trailing ``None`` sublayer is ignored), so does a string that
    is not a cached name (``cache["embed"]``, ``cache["scale1ln1"]``), and ``to`` and
    ``remove_batch_dim`` change the cache in place and return it.

    Args:
        cache_dict: hook name -> tensor (a dict is kept as it is; another mapping is copied).
        model: the model the activations come from (for tuple keys and ``stack_activation``).
        has_batch_dim: whether the first dimension of every entry is the batch.
    """

    def __init__(self, cache_dict: Mapping[str, Tensor], model: Any = None, has_batch_dim: bool = True) -> None:
        self.cache_dict: dict[str, Tensor] = cache_dict if isinstance(cache_dict, dict) else dict(cache_dict)
        self.model = model
        self.has_batch_dim = has_batch_dim

    def _name(self, key: Key) -> str:
        if isinstance(key, str):
            if key in self.cache_dict or getattr(self.model, "act_name", None) is None:
                return key
            try:  # TransformerLens expands a short name (``"embed"``, ``"k1"``) through get_act_name
                return self.model.act_name(key)
            except HookNameError:  # a model whose act_name takes no such key: the key is the name
                return key
        if not isinstance(key, tuple) or not key:
            raise HookNameError(f"cache keys are hook names or tuples like ('post', 0), got {key!r}")
        act_name = getattr(self.model, "act_name", None)
        if act_name is None:
            raise HookNameError(f"tuple key {key!r} needs the cache's model to name it; use the hook name instead")
        while len(key) > 2 and key[-1] is None:  # TransformerLens' (name, layer, sublayer_type=None)
            key = key[:-1]
        return act_name(*key)

    def __getitem__(self, key: Key) -> Tensor:
        name = self._name(key)
        try:
            return self.cache_dict[name]
        except KeyError:
            asked = key if isinstance(key, str) else name
            read = f" (read as {name!r})" if asked != name else ""
            if name in getattr(self.model, "hook_dict", {}):
                raise HookNameError(
                    f"no activation cached for {name!r}: it is a hook point of {type(self.model).__name__}, but it did "
                    "not run in the recorded pass (forward never calls it, or returned before it) or names_filter left "
                    f"it out; cached: {capped(list(self.cache_dict))}"
                ) from None
            raise HookNameError(
                f"no activation cached for {asked!r}{read}{did_you_mean(asked, list(self.cache_dict))}"
            ) from None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self.cache_dict

    def __iter__(self) -> Iterator[str]:
        return iter(self.cache_dict)

    def __len__(self) -> int:
        return len(self.cache_dict)

    def __setitem__(self, name: str, value: Tensor) -> None:
        raise UsageError("ActivationCache is read-only; copy it with dict(cache) to edit, or edit cache.cache_dict")

    def __delitem__(self, name: str) -> None:
        raise UsageError("ActivationCache is read-only; copy it with dict(cache) to edit, or edit cache.cache_dict")

    def to(self, device: Union[str, torch.device]) -> "ActivationCache":
        """Move every tensor to ``device``, in place; returns the cache."""
        self.cache_dict = {k: v.to(device) for k, v in self.cache_dict.items()}
        return self

    def toggle_autodiff(self, mode: bool = False) -> None:
        """``torch.set_grad_enabled(mode)``: global state, as in TransformerLens (logged)."""
        logger.warning("Changed the global state, set autodiff to %s", mode)
        torch.set_grad_enabled(mode)

    def remove_batch_dim(self, batch_size: Optional[int] = None) -> "ActivationCache":
        """Drop the batch dimension of a cache of one example, in place; returns the cache.

        Raises ``BatchDimError`` (an ``AssertionError``) for a batch of more than one; a second
        call only logs a warning, as in TransformerLens.
        """
        if not self.has_batch_dim:
            logger.warning("Tried removing batch dimension after already having removed it.")
            return self
        if batch_size is None:
            batch_size = self._batch_size()
        if batch_size != 1:
            raise BatchDimError(
                f"Cannot remove batch dimension from cache with batch size {batch_size}; cache a single input"
            )
        dropped: dict[int, Tensor] = {}  # keys sharing one tensor keep sharing one
        for k, v in self.cache_dict.items():  # in the same dict, as TransformerLens does
            if v.ndim > 0 and v.shape[0] == 1:
                self.cache_dict[k] = dropped.setdefault(id(v), v[0])
        self.has_batch_dim = False
        return self

    def _batch_size(self) -> int:
        """The most common first dimension of the entries (1 for a cache of scalars or none)."""
        sizes = [v.shape[0] for v in self.cache_dict.values() if v.ndim > 0]
        return max(set(sizes), key=sizes.count) if sizes else 1

    def apply_slice_to_batch_dim(self, batch_slice: Any) -> "ActivationCache":
        """A new cache holding only the examples ``batch_slice`` selects, as TransformerLens' ``Slice``:

        an int (the batch dimension goes), a tuple ``(stop,)``, ``(start, stop)`` or
        ``(start, stop, step)``, a ``slice``, a list, tensor or array of indices, ``None`` (all),
        or a TransformerLens ``Slice``. Entries whose first dimension is not the batch size (a
        broadcast entry of 1) are kept whole. A cache without a batch dimension raises
        ``BatchDimError`` (an ``AssertionError``, as in TransformerLens).
        """
        index = _batch_index(
            getattr(batch_slice, "slice", batch_slice) if hasattr(batch_slice, "mode") else batch_slice
        )
        if not self.has_batch_dim:
            raise BatchDimError(
                "Cannot index into a cache without a batch dim; slice the cache before remove_batch_dim()"
            )
        n = self._batch_size()
        return ActivationCache(
            {k: v[index] if v.ndim > 0 and v.shape[0] == n else v for k, v in self.cache_dict.items()},
            self.model,
            has_batch_dim=not isinstance(index, int),
        )

    def stack(self, names: Optional[Sequence[str]] = None) -> Float[Tensor, "n_names ..."]:
        """The activations of ``names`` (default: all) stacked along a new first dimension."""
        keys = list(self.cache_dict) if names is None else list(names)
        if not keys:
            raise ShapeError("stack() needs at least one name; got none")
        tensors = [self[k] for k in keys]
        if len({t.shape for t in tensors}) > 1:
            listing = ", ".join(f"{k}: {list(t.shape)}" for k, t in zip(keys, tensors))
            raise ShapeError(f"stack() needs activations of one shape; got {listing}. Pass names of equal shape")
        return torch.stack(tensors)

    def stack_activation(
        self, activation_name: str, layer: Optional[int] = -1, sublayer_type: Optional[str] = None
    ) -> Float[Tensor, "layers_covered ..."]:
        """``cache[activation_name, l, sublayer_type]`` for every layer ``l`` before ``layer``, stacked.

        ``layer`` is 1 to ``n_layers``, or ``-1`` / ``None`` for all (TransformerLens' semantics);
        the layers' activations must have one shape.
        """
        n_layers = layer_count(self.model)
        if n_layers is None:
            raise UsageError(
                "stack_activation needs the cache's model and its n_layers (or cfg.n_layers); use stack(names) instead"
            )
        stop = n_layers if layer in (-1, None) else layer
        if not isinstance(stop, int) or not 1 <= stop <= n_layers:
            raise UnitIndexError(
                f"layer must be 1 to {n_layers} (the layers before it), or -1 or None for all; got {layer!r}"
            )
        return self.stack([self._name((activation_name, i, sublayer_type)) for i in range(stop)])

    # -- files -----------------------------------------------------------------------
    def save(self, path: Any, meta: Optional[Mapping[str, Any]] = None) -> None:
        """Write the cache atomically as a safetensors file (``hookedmlp.files.cache_file``).

        The header holds the hook names, ``has_batch_dim``, the fingerprint of the cache's
        model and ``meta`` (JSON data); tensors shared by several names are stored once.
        """
        info: dict[str, Any] = {"has_batch_dim": self.has_batch_dim, "meta": dict(meta or {})}
        if self.model is not None:
            info["model"] = _fingerprint(self.model)
        write_cache_file(self.cache_dict, info, path)

    @classmethod
    def load(cls, path: Any, model: Any = None, device: Union[str, torch.device, None] = None) -> "ActivationCache":
        """A cache ``save`` wrote, sizes checked before anything is read; warns if ``model`` is not its model.

        The file's metadata is in the cache's ``file_meta``.
        """
        entries, info = read_cache_file(path, device)
        recorded = info.get("model")
        if model is not None and recorded and recorded != (current := _fingerprint(model)):
            warn(
                f"activation cache {str(path)!r} was recorded on model {recorded}, loaded for model {current}",
                UserWarning,
            )
        cache = cls(entries, model, has_batch_dim=info["has_batch_dim"])
        cache.file_meta = info
        return cache

    def __repr__(self) -> str:
        if not self.cache_dict:
            return "ActivationCache({})"
        width = max(len(k) for k in self.cache_dict)
        lines = [
            f"  {k:<{width}}  {list(v.shape)} {str(v.dtype).removeprefix('torch.')} {v.device}"
            for k, v in self.cache_dict.items()
        ]
        return "ActivationCache(\n" + "\n".join(lines) + "\n)"

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td><code>{html.escape(k)}</code></td><td>{list(v.shape)}</td>"
            f"<td>{str(v.dtype).removeprefix('torch.')}</td>"
            f"<td>{v.device}</td><td>{float(v.float().abs().mean()) if v.numel() else 0.0:.4g}</td></tr>"
            for k, v in self.cache_dict.items()
        )
        return (
            "<table><caption>ActivationCache</caption><thead><tr><th>hook</th><th>shape</th><th>dtype</th>"
            f"<th>device</th><th>mean |x|</th></tr></thead><tbody>{rows}</tbody></table>"
        )


def _fingerprint(model: Any) -> str:
    """The fingerprint of the model's state (``model_fingerprint``'s, without its memo)."""
    return tensors_fingerprint(model.state_dict(keep_vars=True).items())


def _batch_index(batch_slice: Any) -> Any:
    """What to index the batch dimension with, for TransformerLens' slice inputs (see ``apply_slice_to_batch_dim``)."""
    if batch_slice is None:
        return slice(None)
    if isinstance(batch_slice, tuple):
        return slice(*batch_slice)
    if isinstance(batch_slice, slice):
        return batch_slice
    if isinstance(batch_slice, numbers.Integral) and not isinstance(batch_slice, bool):  # numpy's ints too
        return int(batch_slice)
    if isinstance(batch_slice, Tensor) and batch_slice.ndim == 0 and not batch_slice.is_floating_point():
        return int(batch_slice)
    if isinstance(batch_slice, (list, Tensor)) or hasattr(batch_slice, "__array__"):
        return torch.as_tensor(batch_slice, dtype=torch.long)
    raise ArgumentTypeError(
        "batch_slice must be an int, a tuple (start, stop[, step]), a slice, a list or tensor of indices, None, "
        f"or a TransformerLens Slice; got {type(batch_slice).__name__}"
    )
