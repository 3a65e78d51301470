"""Loading that never unpickles code: ``torch.load(weights_only=True)`` with errors that say why a file is refused.

A refused file is explained (``hookedmlp.files.load_errors``), never with advice to retry
with ``weights_only=False``. Sizes are checked twice against ``hookedmlp.sizes``' budget:
the bytes the file's records will load into, read from its zip directory before any record
is; then, before any tensor is used, the elements each tensor declares against the bytes
its file stores (an ``expand()``ed view can declare 10**12 elements over one stored number).
"""

import os
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hookedmlp.errors import CheckpointError, UsageError
from hookedmlp.files.load_errors import why_not_loadable
from hookedmlp.sizes import check_bytes, declared_bytes, file_bytes

__all__ = ["safe_load"]  # check_device is for hookedmlp.files only: hookedmlp.io re-exports __all__


def check_device(map_location: Any, what: str, p: Path) -> None:
    """Refuse a CUDA (or MPS) ``map_location`` this machine does not have, before reading anything."""
    if isinstance(map_location, (str, torch.device)):
        try:
            kind = torch.device(map_location).type
        except RuntimeError:
            raise UsageError(
                f"cannot load {what} {str(p)!r}: unknown device {map_location!r}; use 'cpu' or 'cuda'"
            ) from None
        missing = {"cuda": not torch.cuda.is_available(), "mps": not torch.backends.mps.is_available()}.get(kind, False)
        if missing:
            raise UsageError(
                f"cannot load {what} {str(p)!r} onto {str(map_location)!r}: this machine has no {kind.upper()} "
                f"device (torch.{kind}.is_available() is False); load it with device='cpu'"
            )
        index = torch.device(map_location).index
        if kind == "cuda" and index is not None and index >= torch.cuda.device_count():
            raise UsageError(
                f"cannot load {what} {str(p)!r} onto {str(map_location)!r}: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s), numbered from 0; pick one of them or 'cpu'"
            )


def _tensors(obj: Any) -> Iterator[tuple[str, Tensor]]:
    """Every tensor in a loaded structure (dicts, lists, tuples), with its path of keys, without recursion."""
    stack: list[tuple[str, Any]] = [("", obj)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, Tensor):
            yield where or "<top>", item
        elif isinstance(item, dict):
            stack.extend((f"{where}/{k}" if where else str(k), v) for k, v in reversed(item.items()))
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend((f"{where}/{i}" if where else str(i), v) for i, v in reversed(list(enumerate(item))))


def _check_declared(obj: Any, what: str, p: Path) -> None:
    """Refuse tensors that declare more elements than the file stores for them, or more bytes than the budget."""
    tensors = list(_tensors(obj))
    for where, t in tensors:
        stored = t.untyped_storage().nbytes()
        if t.numel() * t.element_size() > stored:
            raise CheckpointError(
                f"{what} {str(p)!r}: tensor {where!r} of shape {list(t.shape)} declares {t.numel():,} elements but "
                f"the file stores only {stored:,} bytes for it (a view such as expand()); the file is corrupt or "
                "was edited, re-save it with hookedmlp"
            )
    check_bytes(declared_bytes([t for _, t in tensors]), f"{what} {str(p)!r}", "it is not a file hookedmlp wrote")


def safe_load(path: "str | os.PathLike[str]", what: str = "file", map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file, what is wrong and the fix.

    Only tensors and plain containers load; any other pickled object is refused without
    running its code. ``what`` names the file in messages (``"checkpoint"``...). Raises
    ``CheckpointError`` for a missing, unreadable, corrupt or foreign file, ``UsageError`` for a
    ``map_location`` this machine lacks, ``SizeError`` for a file that would load into more
    memory than the budget.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{what} {str(p)!r} does not exist; check the path")
    if p.is_dir():
        raise CheckpointError(f"{what} {str(p)!r} is a directory; expected a file written by hookedmlp")
    if not p.is_file():  # /dev/zero would be read forever, a FIFO consumed
        raise CheckpointError(
            f"{what} {str(p)!r} is not a regular file (a device, FIFO or socket); pass a .pt file written by hookedmlp"
        )
    check_device(map_location, what, p)
    try:
        with open(p, "rb") as f:  # an error of the file system, told apart from one of the bytes
            f.read(1)
        size = file_bytes(p)
    except PermissionError as e:
        raise CheckpointError(
            f"cannot read {what} {str(p)!r}: {e.strerror or type(e).__name__}; check its permissions and the disk"
        ) from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise why_not_loadable(p, what, e) from None
    if size is None:  # torch's legacy format, a plain pickle, or no torch file at all: nothing to unpickle
        raise why_not_loadable(p, what, None)
    check_bytes(size, f"loading {what} {str(p)!r}", "it is not a file hookedmlp wrote")
    try:
        with warnings.catch_warnings():  # a foreign pickle protocol: the refusal below says it better
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            data = torch.load(p, map_location=map_location, weights_only=True)
    except MemoryError:
        raise MemoryError(f"not enough memory to load {what} {str(p)!r} ({p.stat().st_size:,} bytes)") from None
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, OSError (a bad seek)...
        error = e
    else:
        _check_declared(data, what, p)
        return data
    try:
        with open(p, "rb") as f:  # an error of the file system, or of the bytes?
            f.read(1)
    except OSError as e:
        raise CheckpointError(
            f"cannot read {what} {str(p)!r}: {e.strerror or type(e).__name__}; check its permissions and the disk"
        ) from None
    raise why_not_loadable(p, what, error) from None
