"""The activation-cache file: a cache's tensors as a safetensors file, each tensor stored once.

``layer{i}.post`` and ``layer{i+1}.pre`` are one tensor in a cache; the file stores it once and
names the other key an alias, so a loaded cache shares it again. The metadata (JSON under
``meta``) holds every name in order, the aliases, whether entries have a batch dimension, the
fingerprint of the model the cache came from, and the caller's own metadata.
"""

from collections.abc import Mapping
from typing import Any, Union

import torch
from torch import Tensor

from hookedmlp.checks import check_json
from hookedmlp.errors import CheckpointError, UsageError
from hookedmlp.files.safetensors_file import format_meta, hookedmlp_meta, read_safetensors, write_safetensors

__all__ = ["FORMAT", "write_cache_file", "read_cache_file"]

FORMAT = "hookedmlp.activation_cache"


def write_cache_file(entries: Mapping[str, Tensor], info: Mapping[str, Any], path: Any) -> None:
    """Write ``entries`` (each distinct tensor once) and ``info`` (JSON data) atomically to ``path``."""
    stored: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    first: dict[int, str] = {}
    for name, t in entries.items():
        if not isinstance(t, Tensor):
            raise UsageError(f"cache entry {name!r} is a {type(t).__name__}; only tensors can be saved")
        if id(t) in first:
            aliases[name] = first[id(t)]
        else:
            first[id(t)] = stored_name = name
            stored[stored_name] = t
    text = check_json({**info, "names": list(entries), "aliases": aliases}, "activation cache metadata", UsageError)
    write_safetensors(stored, hookedmlp_meta(FORMAT, text), path)


def _is_names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(n, str) for n in value)


def read_cache_file(
    path: Any, device: Union[str, torch.device, None] = None
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(entries, info)`` from a file ``write_cache_file`` wrote; ``CheckpointError`` for anything else."""
    source = f"activation cache {str(path)!r}"
    tensors, header = read_safetensors(path, "activation cache", device)
    info = format_meta(header, FORMAT, source)
    names, aliases = info.get("names"), info.get("aliases")
    if not _is_names(names) or not isinstance(aliases, dict) or not _is_names(list(aliases.values())):
        raise CheckpointError(f"{source} lacks its list of names and its aliases; the file is corrupt or was edited")
    stored = [n for n in names if n not in aliases]
    if sorted(stored) != sorted(tensors) or any(a not in names or t not in tensors for a, t in aliases.items()):
        raise CheckpointError(
            f"{source} names {len(names)} entries ({len(stored)} stored, {len(aliases)} aliases) but holds the "
            f"tensors {sorted(tensors)[:4]}; the file is corrupt or was edited"
        )
    if not isinstance(info.get("has_batch_dim"), bool) or not isinstance(info.get("model", ""), str):
        raise CheckpointError(f"{source} has malformed metadata (has_batch_dim, model); the file was edited")
    return {n: tensors[aliases.get(n, n)] for n in names}, info
