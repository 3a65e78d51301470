"""A model's fingerprint: 12 hex digits of the SHA-256 of its named tensors, recorded in the files it makes."""

import hashlib
from collections.abc import Iterable

import numpy as np
from torch import Tensor

__all__ = ["tensors_fingerprint"]


def tensors_fingerprint(named: Iterable[tuple[str, Tensor]]) -> str:
    """12 hex digits of the SHA-256 of the tensors' names, shapes and values (as float64, so dtype-free)."""
    h = hashlib.sha256()
    for name, p in named:
        h.update(f"{name}:{tuple(p.shape)}".encode())
        values = p.detach().cpu()
        values = values.double() if values.is_floating_point() else values
        h.update(np.ascontiguousarray(values.numpy()).tobytes())
    return h.hexdigest()[:12]
