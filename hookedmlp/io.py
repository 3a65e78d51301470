"""Files that are never half-written, and loading that never unpickles code.

Every file hookedmlp writes goes through ``atomic_write``: the bytes go to a
temporary file in the same directory, are flushed to disk, and the temporary file
is renamed over the target. A reader sees the old file or the new one, never a
mix, even if the writer is killed mid-write.
"""

import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch

from hookedmlp.errors import CheckpointError, FileWriteError

__all__ = ["atomic_write", "atomic_save", "safe_load", "check_writable"]


def check_writable(path: "str | os.PathLike[str]") -> None:
    """Raise ``FileWriteError`` unless ``path`` can be written (before a long computation that ends by writing it)."""
    target = Path(path)
    if target.is_dir():
        raise FileWriteError(f"cannot write {str(target)!r}: it is a directory; pass a file path")
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise FileWriteError(f"cannot write {str(target)!r}: {str(parent)!r} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise FileWriteError(f"cannot write {str(target)!r}: the directory {str(parent)!r} is not writable; choose another path")
    if target.exists() and not os.access(target, os.W_OK):
        raise FileWriteError(f"cannot write {str(target)!r}: the file is read-only; make it writable (chmod u+w) or choose another path")


@contextlib.contextmanager
def atomic_write(path: "str | os.PathLike[str]", mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success rename it over ``path``.

    On an exception the temporary file is deleted and ``path`` is untouched.
    Missing parent directories are created.

    Args:
        path: the file to write.
        mode: ``"w"`` (text) or ``"wb"`` (bytes).

    Yields:
        The open temporary file, to write to.

    Raises:
        ValueError: a mode other than ``"w"`` and ``"wb"``.
        IsADirectoryError: ``path`` is a directory.

    Examples:
        >>> import pathlib, tempfile
        >>> from hookedmlp.io import atomic_write
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_write(target, "w") as f:
        ...     _ = f.write("hello")
        >>> target.read_text()
        'hello'
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"cannot write {str(target)!r}: it is a directory; pass a file path")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_save(obj: Any, path: "str | os.PathLike[str]") -> None:
    """``torch.save`` through ``atomic_write``.

    Args:
        obj: what to save (tensors and plain containers, to load it back with ``safe_load``).
        path: the file to write.

    Examples:
        >>> import pathlib, tempfile
        >>> import torch
        >>> from hookedmlp.io import atomic_save, safe_load
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.pt"
        >>> atomic_save({"x": torch.arange(3)}, path)
        >>> safe_load(path)["x"].tolist()
        [0, 1, 2]
    """
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def safe_load(path: "str | os.PathLike[str]", what: str = "file", map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with errors that name the file and the fix.

    Only tensors and plain containers (dict, list, tuple, str, int, float, bool,
    None) are accepted; a file carrying any other pickled object is refused
    without running its code.

    Args:
        path: the file to read.
        what: what the file is, for error messages (``"checkpoint"``...).
        map_location: where to put the tensors, as for ``torch.load``.

    Returns:
        The loaded object.

    Raises:
        CheckpointError: the file is missing, a directory, truncated or corrupt,
            or holds other pickled objects.

    Examples:
        >>> import pathlib, tempfile
        >>> import torch
        >>> from hookedmlp.io import safe_load
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.pt"
        >>> torch.save({"step": 3}, path)
        >>> safe_load(path)
        {'step': 3}
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{what} {str(p)!r} does not exist; check the path")
    if p.is_dir():
        raise CheckpointError(f"{what} {str(p)!r} is a directory; expected a file written by hookedmlp")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError...
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "Unsupported global" in str(e) or "GLOBAL" in str(e):
            found = re.search(r"GLOBAL (\S+)", str(e))
            detail = f" ({found.group(1)})" if found else ""
            raise CheckpointError(
                f"{what} {str(p)!r} contains pickled objects other than tensors and plain "
                f"containers{detail}; refusing to load it (it could run code). Re-save it with "
                "hookedmlp, or load a trusted file yourself with torch.load(weights_only=False)."
            ) from None
        raise CheckpointError(
            f"{what} {str(p)!r} is truncated or corrupt ({type(e).__name__}: {msg}); "
            "re-create it"
        ) from None




def _umask() -> int:
    """The process umask, read without changing it (Linux); else by the set-and-restore dance."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # not atomic: only where /proc is missing
    os.umask(mask)
    return mask
