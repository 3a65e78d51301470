"""Memory estimates made before anything is allocated, checked against one budget.

Every path that allocates from numbers a user or a file gives (a recipe's widths, a
checkpoint's declared tensors, the bytes a file will load into, an activation's shape)
estimates the bytes first and calls ``check_bytes``. Above the budget it raises
``SizeError`` (a ``MemoryError``) with one line: what needs how much, the budget, and the fix,
instead of the allocator's traceback, or the kernel killing the process half way.

The budget is ``HOOKEDMLP_MAX_BYTES`` when set (bytes, or with a K, M, G or T suffix in powers
of 1024: ``HOOKEDMLP_MAX_BYTES=64G``), else half of this machine's physical memory (8 GiB
where that cannot be read); ``memory_budget(n)`` overrides both inside a ``with`` block.
The estimates are lower bounds (the weights, and for training their gradients and AdamW's two
moments, plus the activations of a batch), so a refusal is never a false alarm by more than
the budget's margin.
"""

import contextlib
import contextvars
import math
import os
import re
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

import torch

from hookedmlp.errors import ConfigError, SizeError

__all__ = [
    "ENV",
    "budget",
    "memory_budget",
    "check_bytes",
    "tensor_bytes",
    "activation_bytes",
    "recipe_bytes",
    "file_bytes",
    "declared_bytes",
    "human",
]

ENV = "HOOKEDMLP_MAX_BYTES"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_OVERRIDE: contextvars.ContextVar[Optional[int]] = contextvars.ContextVar("hookedmlp_memory_budget", default=None)
_FALLBACK = 8 << 30


def human(n: int) -> str:
    """``n`` bytes in words: ``"1.5 GiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover


def _parse(text: str) -> int:
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, flags=re.IGNORECASE)
    if found is None or float(found.group(1)) <= 0:
        raise ConfigError(f"{ENV} must be a size such as 16G, 512M or 17179869184 (bytes), got {text!r}")
    return int(float(found.group(1)) * _UNITS[found.group(2).upper()])


def _half_of_memory() -> tuple[int, str]:
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX, or the value is unknown
        return _FALLBACK, "hookedmlp's default"
    return (total // 2, "half of this machine's memory") if total > 0 else (_FALLBACK, "hookedmlp's default")


def _budget() -> tuple[int, str]:
    override = _OVERRIDE.get()
    if override is not None:
        return override, "set by memory_budget()"
    text = os.environ.get(ENV)
    if text:
        return _parse(text), f"{ENV}={text}"
    return _half_of_memory()


def budget() -> int:
    """The memory budget in bytes (see the module's docs for where it comes from)."""
    return _budget()[0]


@contextlib.contextmanager
def memory_budget(nbytes: int) -> Iterator[int]:
    """Use ``nbytes`` as the budget inside the block (this thread or task only)."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes <= 0:
        raise ConfigError(f"memory_budget needs a positive int of bytes, got {nbytes!r}")
    token = _OVERRIDE.set(nbytes)
    try:
        yield nbytes
    finally:
        _OVERRIDE.reset(token)


def check_bytes(nbytes: int, what: str, fix: str) -> int:
    """``nbytes`` if it is within the budget, else ``SizeError``: "``what`` needs N, above the budget; ``fix``"."""
    limit, source = _budget()
    if nbytes > limit:
        raise_it = (
            "pass a larger memory_budget()"
            if _OVERRIDE.get() is not None
            else f"raise the budget with {ENV} (e.g. {ENV}={math.ceil(nbytes / 2**30)}G)"
        )
        raise SizeError(
            f"{what} needs {human(nbytes)} ({nbytes:,} bytes), above hookedmlp's memory budget of {human(limit)} "
            f"({source}); {fix}, or {raise_it}"
        )
    return nbytes


def tensor_bytes(shape: Sequence[int], dtype: torch.dtype = torch.float32) -> int:
    """Bytes of a tensor of ``shape`` and ``dtype`` (exact integers, however large)."""
    item = torch.empty((), dtype=dtype).element_size()
    return math.prod(int(s) for s in shape) * item


def activation_bytes(shape: Sequence[int], batch: int = 1, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of ``batch`` examples of an activation whose one-example shape is ``shape``."""
    return tensor_bytes((batch, *shape), dtype)


def recipe_bytes(recipe: Any, batch_size: int = 1, training: bool = False) -> int:
    """A recipe's float32 weights and buffers, plus every hook point's activation for ``batch_size`` examples.

    ``recipe`` needs ``state_elements`` and ``activation_elements`` (``hookedmlp.models.configs``' recipes).

    ``training`` adds the gradients and AdamW's two moments (three more copies of the weights) and
    the activations' gradients (a second copy of the activations).
    """
    copies, act_copies = (4, 2) if training else (1, 1)
    return 4 * (copies * recipe.state_elements + act_copies * batch_size * recipe.activation_elements)


def file_bytes(path: "str | os.PathLike[str]") -> Optional[int]:
    """What loading a torch file reads into memory: its records' uncompressed sizes (None: not a zip file).

    Read from the zip's central directory, before any record is: a few kilobytes of deflated
    zeros can declare gigabytes. ``zipfile.BadZipFile`` for a damaged zip.
    """
    p = Path(path)
    if not zipfile.is_zipfile(p):
        return None
    with zipfile.ZipFile(p) as z:
        return sum(info.file_size for info in z.infolist())


def declared_bytes(tensors: Sequence[Any]) -> int:
    """The bytes ``tensors`` claim (elements times element size), whatever storage backs them."""
    return sum(t.numel() * t.element_size() for t in tensors)
