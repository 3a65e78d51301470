"""Files that are never half-written or wrongly replaced.

Every file hookedmlp writes goes through ``atomic_write``: a regular file is replaced
atomically (temporary file beside it, fsync, rename; its permissions kept), a symlink is
written through, ``"-"``, a FIFO or a device is written as a stream, and a directory, a
read-only file, an unwritable directory or a full disk raise ``FileWriteError`` saying what
was kept and the fix.
"""

import contextlib
import errno
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Optional

import torch

from hookedmlp.errors import ConfigError, FileWriteError

__all__ = ["atomic_write", "atomic_save", "check_writable"]

_SPACE = {
    errno.ENOSPC: "",
    errno.EDQUOT: ": disk quota exceeded",
    errno.EFBIG: ": file size limit reached (ulimit -f, or the file system's largest file)",
}


def _error(message: str, code: Optional[int] = None) -> FileWriteError:
    e = FileWriteError(message)
    e.errno = code  # type: ignore[misc]  # str(e) stays the one-line message
    return e


def _space_error(path: Path, err: OSError, existed: bool) -> FileWriteError:
    kept = "old file kept" if existed else "nothing written"
    return _error(
        f"no space left writing {path}{_SPACE[err.errno]} ({kept}); free some space or choose another path", err.errno
    )


def _os_error(path: Path, err: OSError, existed: bool, where: Optional[Path] = None) -> FileWriteError:
    """The one-line FileWriteError for an OSError met while writing ``path`` (in directory ``where``)."""
    if err.errno in _SPACE:
        return _space_error(path, err, existed)
    reason = err.strerror or str(err) or type(err).__name__
    if where is not None and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return _error(
            f"cannot write {str(path)!r}: the directory {str(where)!r} is not writable ({reason}); choose another path",
            err.errno,
        )
    kept = " (old file kept)" if existed else ""
    return _error(f"cannot write {str(path)!r}: {reason}{kept}", err.errno)


def _file_in_the_way(path: Path) -> Optional[Path]:
    """The first ancestor of ``path`` that exists and is not a directory, if any."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def _not_a_directory(path: Path) -> FileWriteError:
    blocker = _file_in_the_way(path)
    where = f"{str(blocker)!r} is a file, not a directory" if blocker else "a parent is not a directory"
    return _error(f"cannot write {str(path)!r}: {where}; choose another path", errno.ENOTDIR)


def _plan(path: Path) -> tuple[str, Path, Optional[os.stat_result]]:
    """``("stream" | "file", where to write, the existing file's stat)``, or FileWriteError.

    For a file, the path returned is the real one (symlinks resolved), whose directory gets
    the temporary file; for a stream, the path as given (the OS follows its links).
    """
    try:
        st = os.stat(path)  # follows symlinks
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise _not_a_directory(path) from None
    except OSError as e:
        raise _os_error(path, e, existed=False) from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise _error(f"cannot write {str(path)!r}: it is a directory; pass a file path", errno.EISDIR)
    if st is not None and not stat.S_ISREG(st.st_mode):
        return "stream", path, st
    real = Path(os.path.realpath(path))  # a dangling symlink: the file it names is created
    if st is not None and (stat.S_IMODE(st.st_mode) & 0o222 == 0 or not os.access(real, os.W_OK)):
        raise _error(
            f"cannot write {str(path)!r}: the file is read-only (mode {stat.S_IMODE(st.st_mode):o}); make it "
            "writable (chmod u+w) or choose another path",
            errno.EACCES,
        )
    if _file_in_the_way(real) is not None:
        raise _not_a_directory(path)
    return "file", real, st


class _Tracked:
    """The file handed to the writer: remembers the first OSError of a write, which torch.save would hide."""

    def __init__(self, f: Any) -> None:
        self._f = f
        self.error: Optional[OSError] = None

    def write(self, data: Any) -> Any:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


@contextlib.contextmanager
def _stream(path: Path, mode: str) -> Iterator[IO[Any]]:
    """Write ``-`` (standard output), a FIFO or a device in place."""
    if str(path) == "-":
        out = sys.stdout.buffer if mode == "wb" else sys.stdout
        yield out
        out.flush()
        return
    try:
        f = open(path, mode)
    except OSError as e:
        raise _os_error(path, e, existed=False) from None
    with f:
        tracked = _Tracked(f)
        try:
            yield tracked  # type: ignore[misc]
            f.flush()
        except BrokenPipeError:
            raise
        except BaseException as e:
            err = tracked.error or (e if isinstance(e, OSError) else None)
            if err is None or isinstance(err, BrokenPipeError):
                raise
            raise _os_error(path, err, existed=False) from None


@contextlib.contextmanager
def atomic_write(path: "str | os.PathLike[str]", mode: str = "wb") -> Iterator[IO[Any]]:
    """Open ``path`` (``"-"`` for stdout) for writing in ``mode`` ``"w"`` or ``"wb"``, by this module's rule.

    On success the new bytes are in place; on an exception the temporary file is deleted and
    ``path`` is untouched. Missing parent directories are created.
    """
    if mode not in ("w", "wb"):
        raise ConfigError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    given = Path(path)
    if str(path) == "-":
        kind, real, st = "stream", given, None
    else:
        kind, real, st = _plan(given)
    if kind == "stream":
        with _stream(real, mode) as f:
            yield f
        return
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
    except (FileExistsError, NotADirectoryError):
        raise _not_a_directory(given) from None
    except OSError as e:
        raise _os_error(given, e, st is not None, where=_existing_ancestor(real.parent)) from None
    try:
        os.chmod(tmp, stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask())
        tracked: Optional[_Tracked] = None
        with os.fdopen(fd, mode) as raw:
            tracked = _Tracked(raw)
            yield tracked  # type: ignore[misc]
            raw.flush()
            os.fsync(raw.fileno())
        if tracked.error is not None:  # a writer that swallowed its write error
            raise tracked.error
        os.replace(tmp, real)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        err = (tracked.error if tracked is not None else None) or (e if isinstance(e, OSError) else None)
        if err is None or isinstance(err, FileWriteError):
            raise
        raise _os_error(given, err, st is not None) from None


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(path: "str | os.PathLike[str]") -> None:
    """``FileWriteError`` unless ``atomic_write(path)`` could write; call it before a long computation.

    Creates and removes a temporary file in the nearest existing directory, so read-only
    mounts, permissions and ACLs are tested as they are.
    """
    given = Path(path)
    if str(path) == "-":
        return
    kind, real, st = _plan(given)
    if kind == "stream":
        return
    where = _existing_ancestor(real.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=where, prefix=f".{real.name}.", suffix=".tmp")
    except OSError as e:
        raise _os_error(given, e, st is not None, where=where) from None
    os.close(fd)
    os.unlink(tmp)
    vfs = os.statvfs(where)
    if (vfs.f_bfree if os.geteuid() == 0 else vfs.f_bavail) == 0:
        raise _space_error(given, OSError(errno.ENOSPC, "No space left on device"), st is not None)


def atomic_save(obj: Any, path: "str | os.PathLike[str]") -> None:
    """``torch.save(obj, path)`` through ``atomic_write``."""
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


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
