"""The steering-vector file: tensors by hook name plus JSON metadata, read without unpickling code.

``write_vector_file`` writes a safetensors file (``hookedmlp.files.safetensors_file``): one
tensor per hook name, and the metadata ``{"format": "hookedmlp.steering_vector", "version":
"1", "meta": JSON}``. ``read_vector_file`` reads that, or the torch file of earlier versions
(``{"format", "version": 1, "vectors", "meta"}``, loaded with ``weights_only=True``), telling
them apart by their first bytes; both have their sizes checked before any tensor is allocated,
and the metadata's types, values and nesting checked before anything is built from it.
"""

import json
import math
from collections.abc import Mapping
from typing import Any, Union

import torch
from torch import Tensor

from hookedmlp.checks import check_json
from hookedmlp.errors import CheckpointError, SteeringError
from hookedmlp.files.safe_load import safe_load
from hookedmlp.files.safetensors_file import (
    format_meta,
    hookedmlp_meta,
    is_safetensors,
    read_safetensors,
    write_safetensors,
)

__all__ = ["write_vector_file", "read_vector_file", "check_meta"]

FORMAT = "hookedmlp.steering_vector"
_META_TYPES: dict[str, tuple[type, ...]] = {  # what save() writes; load() accepts nothing else for these keys
    "label": (str,),
    "a": (str, int),
    "b": (str, int),
    "method": (str,),
    "coeff": (int, float),
    "model": (str,),
    "exemplar": (int,),
    "data": (str,),
    "n_examples": (list,),
    "hooks": (list,),
    "norm": (dict,),
    "terms": (list,),
}
_META_VALUES: dict[str, tuple[str, Any]] = {  # checked once the types are right
    "coeff": ("a finite number", math.isfinite),
    "exemplar": ("an int >= 0", lambda e: e >= 0),
    "n_examples": ("a list of ints", lambda ns: all(isinstance(n, int) and not isinstance(n, bool) for n in ns)),
}
_MAX_META_DEPTH = 16  # nesting of JSON objects and lists; what save() writes stays under 6


def _depth(value: Any, limit: int) -> int:
    """How deeply JSON objects and lists nest in ``value`` (stopping once past ``limit``)."""
    if limit < 0 or not isinstance(value, (dict, list)):
        return 0
    items = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(v, limit - 1) for v in items), default=0)


def check_meta(meta: Any, source: str, top: bool = True) -> dict[str, Any]:
    if top and _depth(meta, _MAX_META_DEPTH) > _MAX_META_DEPTH:
        raise CheckpointError(f"{source} has metadata nested deeper than {_MAX_META_DEPTH} levels; the file was edited")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{source} has metadata of type {type(meta).__name__}; expected a JSON object")
    for key, types in _META_TYPES.items():
        if key in meta and (not isinstance(meta[key], types) or isinstance(meta[key], bool)):
            raise CheckpointError(
                f"{source} has metadata {key}={meta[key]!r}; expected "
                f"{' or '.join(t.__name__ for t in types)}; the file was edited"
            )
    for key, (expected, ok) in _META_VALUES.items():
        if key in meta and not ok(meta[key]):
            raise CheckpointError(
                f"{source} has metadata {key}={meta[key]!r}; expected {expected}; the file was edited"
            )
    for term in meta.get("terms", []):
        check_meta(term, source, top=False)
    return meta


def write_vector_file(vectors: Mapping[str, Tensor], meta: Mapping[str, Any], path: Any) -> None:
    """Write ``vectors`` and ``meta`` (as JSON) atomically to ``path``, as a safetensors file."""
    text = check_json(dict(meta), "steering vector metadata", SteeringError)
    write_safetensors(vectors, hookedmlp_meta(FORMAT, text), path)


def read_vector_file(path: Any, device: Union[str, torch.device, None] = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(vectors, meta)`` from a file ``write_vector_file`` (or an earlier version) wrote, checked."""
    source = repr(str(path))
    if is_safetensors(path):
        vectors, header = read_safetensors(path, "steering vector", device)
        return vectors, check_meta(format_meta(header, FORMAT, f"steering vector {source}"), source)
    data = safe_load(path, what="steering vector", map_location=device or "cpu")
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != 1:
        raise CheckpointError(
            f"{source} is not a hookedmlp steering vector (version 1); save one with SteeringVector.save"
        )
    try:
        meta = json.loads(data["meta"])
    except (KeyError, TypeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{source} has unreadable metadata ({type(e).__name__}); re-save the vector") from None
    vectors = data.get("vectors")
    if not isinstance(vectors, dict) or not all(isinstance(k, str) for k in vectors):
        raise CheckpointError(
            f"{source} needs a dict of vectors keyed by hook name, got {type(vectors).__name__}; "
            "the file is corrupt or was edited"
        )
    return vectors, check_meta(meta, source)
