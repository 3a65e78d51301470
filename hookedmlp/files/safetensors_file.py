"""safetensors files: tensors by name and string metadata, with the header checked before anything is allocated.

The format (https://huggingface.co/docs/safetensors) is an 8-byte little-endian header length,
a JSON header naming each tensor's dtype, shape and byte range, then the bytes. Nothing in it
can run code. ``write_safetensors`` writes it through ``atomic_write``, streaming each tensor's
bytes (no second copy of the data in memory). ``read_safetensors`` first reads and checks the
header alone: its declared length against the file's size, each entry's dtype, shape and byte
range against the others and the data that follows (so a tiny file cannot declare 10**12
elements), and the total against the size budget (``hookedmlp.sizes``); only then does the
safetensors library read the tensors. Each kind of hookedmlp file stores ``format`` and
``version`` in the metadata, and its own JSON in ``meta``.
"""

import json
import math
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from hookedmlp.errors import CheckpointError, UsageError
from hookedmlp.files.atomic import atomic_write
from hookedmlp.files.safe_load import check_device
from hookedmlp.sizes import check_bytes, human

__all__ = [
    "DTYPES",
    "MAX_HEADER",
    "write_safetensors",
    "read_header",
    "read_safetensors",
    "is_safetensors",
    "format_meta",
    "hookedmlp_meta",
]

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_CODES = {v: k for k, v in DTYPES.items()}
MAX_HEADER = 100_000_000  # the safetensors library's own limit on the JSON header
_META = "__metadata__"


def _bytes_of(t: Tensor) -> memoryview:
    """The tensor's bytes in C order, little-endian (a view where the tensor is already contiguous on the CPU)."""
    flat = t.detach().cpu().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


def write_safetensors(tensors: Mapping[str, Tensor], meta: Mapping[str, str], path: Any) -> None:
    """Write ``tensors`` and the string metadata ``meta`` to ``path`` atomically, as a safetensors file."""
    header: dict[str, Any] = {_META: dict(meta)}
    offset = 0
    for name, t in tensors.items():
        if name == _META:
            raise UsageError(f"{_META!r} is the safetensors header's own key; name the tensor otherwise")
        if t.dtype not in _CODES:
            raise UsageError(
                f"tensor {name!r} has dtype {t.dtype}, which hookedmlp's safetensors files do not store; "
                f"convert it to one of {', '.join(str(d) for d in DTYPES.values())}"
            )
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _CODES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as the library writes it
    with atomic_write(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for t in tensors.values():
            f.write(_bytes_of(t))


def is_safetensors(path: Any) -> bool:
    """Whether ``path`` starts like a safetensors file (a plausible header length, then ``{``), even if truncated."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] <= MAX_HEADER


def _refuse(source: str, what: str) -> CheckpointError:
    return CheckpointError(
        f"{source}: {what}; the file is truncated or corrupt, was edited, or was not written by hookedmlp"
    )


def _nat(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entry(name: str, entry: Any, data: int, source: str) -> tuple[int, int, int]:
    """``(start, end, bytes declared)`` of one tensor's entry, each field checked."""
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise _refuse(source, f"tensor {name!r} needs exactly dtype, shape and data_offsets, got {entry!r:.120}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPES:
        raise _refuse(source, f"tensor {name!r} has dtype {dtype!r:.40}; expected one of {', '.join(DTYPES)}")
    if not isinstance(shape, list) or len(shape) > 64 or not all(_nat(s) for s in shape):
        raise _refuse(source, f"tensor {name!r} has shape {shape!r:.120}; expected a list of integers >= 0")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_nat(o) for o in offsets)):
        raise _refuse(source, f"tensor {name!r} has data_offsets {offsets!r:.80}; expected [start, end]")
    start, end = offsets
    declared = math.prod(shape) * torch.empty((), dtype=DTYPES[dtype]).element_size()
    if end < start or end > data or end - start != declared:
        raise _refuse(
            source,
            f"tensor {name!r} of shape {shape} ({dtype}) declares {declared:,} bytes at [{start}, {end}) "
            f"but the file holds {data:,} bytes of data",
        )
    return start, end, declared


def read_header(path: Any, what: str = "file") -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """``(entries, metadata)`` of a safetensors file, every size checked; no tensor is read.

    ``CheckpointError`` for a missing or malformed file or header, ``SizeError`` for tensors
    above the memory budget.
    """
    p, source = Path(path), f"{what} {str(path)!r}"
    if not p.is_file():
        raise CheckpointError(f"{source} {'is not a regular file' if p.exists() else 'does not exist'}; check the path")
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise _refuse(source, f"the file has {size} bytes, fewer than a safetensors header's 8-byte length")
            n = struct.unpack("<Q", head)[0]
            if n > size - 8 or n > MAX_HEADER:
                raise _refuse(
                    source,
                    f"the header declares {n:,} bytes but the file has {size - 8:,} after its length "
                    f"(and headers stop at {human(MAX_HEADER)})",
                )
            text = f.read(n)
    except PermissionError as e:
        raise CheckpointError(f"cannot read {source}: {e.strerror}; check its permissions") from None
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _refuse(source, f"the header is not JSON ({type(e).__name__})") from None
    if not isinstance(header, dict):
        raise _refuse(source, f"the header is a JSON {type(header).__name__}, not an object")
    meta = header.pop(_META, {})
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise _refuse(source, "its __metadata__ is not an object of strings")
    data = size - 8 - n
    spans = sorted(_entry(name, e, data, source) for name, e in header.items())
    covered = 0
    for start, end, _ in spans:  # the byte ranges tile the data exactly: no overlap, no gap, no trailing bytes
        if start != covered:
            raise _refuse(source, f"the tensors' byte ranges overlap or leave a gap at byte {min(start, covered):,}")
        covered = end
    if covered != data:
        raise _refuse(source, f"the tensors declare {covered:,} bytes of data but the file holds {data:,}")
    check_bytes(sum(s[2] for s in spans), f"loading {source}", "it is not a file hookedmlp wrote")
    return header, meta


def read_safetensors(
    path: Any, what: str = "file", device: Union[str, torch.device, None] = None
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file, read only after ``read_header``'s checks passed."""
    entries, meta = read_header(path, what)
    check_device(device or "cpu", what, Path(path))
    try:
        with safe_open(str(path), framework="pt", device=str(device or "cpu")) as f:
            tensors = {name: f.get_tensor(name) for name in entries}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise _refuse(f"{what} {str(path)!r}", f"safetensors could not read it ({type(e).__name__}: {e})") from None
    return tensors, meta


def format_meta(meta: Mapping[str, str], fmt: str, source: str) -> dict[str, Any]:
    """The JSON object under ``meta`` of a hookedmlp file of format ``fmt`` (version 1), else ``CheckpointError``."""
    if meta.get("format") != fmt or meta.get("version") != "1":
        found = f"format {meta.get('format')!r:.60}" if "format" in meta else "no hookedmlp metadata"
        raise CheckpointError(
            f"{source} is a safetensors file with {found}, not a {fmt} file (version 1); write one with hookedmlp"
        )
    try:
        value = json.loads(meta.get("meta", ""))
    except (ValueError, RecursionError) as e:
        raise _refuse(source, f"its metadata is not JSON ({type(e).__name__})") from None
    if not isinstance(value, dict):
        raise _refuse(source, f"its metadata is a JSON {type(value).__name__}, not an object")
    return value


def hookedmlp_meta(fmt: str, meta: str) -> dict[str, str]:
    """The safetensors metadata of a hookedmlp file of format ``fmt``: its format, version and JSON ``meta``."""
    return {"format": fmt, "version": "1", "meta": meta}
