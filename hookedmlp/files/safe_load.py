"""Loading that never unpickles code: ``torch.load(weights_only=True)`` with errors that say why a file is refused.

A refused file is explained (``hookedmlp.files.load_errors``), never with advice to retry
with ``weights_only=False``.
"""

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from hookedmlp.errors import CheckpointError, UsageError
from hookedmlp.files.load_errors import why_not_loadable

__all__ = ["safe_load"]


def _check_device(map_location: Any, what: str, p: Path) -> None:
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


def safe_load(path: "str | os.PathLike[str]", what: str = "file", map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file, what is wrong and the fix.

    Only tensors and plain containers load; any other pickled object is refused without
    running its code. ``what`` names the file in messages (``"checkpoint"``...). Raises
    ``CheckpointError`` for a missing, unreadable, corrupt or foreign file, ``UsageError`` for a
    ``map_location`` this machine lacks.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{what} {str(p)!r} does not exist; check the path")
    if p.is_dir():
        raise CheckpointError(f"{what} {str(p)!r} is a directory; expected a file written by hookedmlp")
    _check_device(map_location, what, p)
    try:
        with warnings.catch_warnings():  # a foreign pickle protocol: the refusal below says it better
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(p, map_location=map_location, weights_only=True)
    except MemoryError:
        raise MemoryError(f"not enough memory to load {what} {str(p)!r} ({p.stat().st_size:,} bytes)") from None
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, OSError (a bad seek)...
        error = e
    try:
        with open(p, "rb") as f:  # an error of the file system, or of the bytes?
            f.read(1)
    except OSError as e:
        raise CheckpointError(
            f"cannot read {what} {str(p)!r}: {e.strerror or type(e).__name__}; check its permissions and the disk"
        ) from None
    raise why_not_loadable(p, what, error) from None
