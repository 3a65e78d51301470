"""Real file-system failures for tests, made in a temporary directory (never a real /dev path).

* ``readonly_dir(path)``: a directory nobody may write to. ``chmod 555`` for a normal user;
  root ignores permission bits, so as root it is a read-only tmpfs mounted there.
* ``full_dir(path)``: a directory on a tiny tmpfs (root only), where writes fail with ENOSPC.
* ``file_size_limit(n)``: a ``preexec_fn`` setting RLIMIT_FSIZE, so a child's writes past ``n``
  bytes fail with EFBIG (Python ignores SIGXFSZ).

The mounts are removed when the context ends; a test that cannot make one is skipped.
"""

import contextlib
import os
import resource
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

IS_ROOT = os.geteuid() == 0


def _mount(path: Path, options: str) -> None:
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()})")


def _unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=True)


@contextlib.contextmanager
def readonly_dir(path: Path) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if not IS_ROOT:
        mode = stat.S_IMODE(path.stat().st_mode)
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(mode)
        return
    _mount(path, "ro,size=64k")
    try:
        yield path
    finally:
        _unmount(path)


@contextlib.contextmanager
def full_dir(path: Path, size: str = "64k", fill: bool = True) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``path``; with ``fill``, filled to the last byte."""
    if not IS_ROOT:
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    _mount(path, f"size={size}")
    try:
        if fill:
            with open(path / ".filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 4096)
        yield path
    finally:
        _unmount(path)


def file_size_limit(n: int) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, resource.RLIM_INFINITY))

    return limit
