"""Why ``torch.load(weights_only=True)`` refused a file, found by reading its pickle without running it.

torch's own message is no help to a user: for a pickle of protocol 4 or 5 it reports an
"unsupported operand" and, for anything, advises retrying with ``weights_only=False``, the
one thing a user must not do with a file from elsewhere. Here the file is opened as a zip
(torch's format) or as a bare pickle and its opcodes are listed with ``pickletools``: the
globals it would import name the objects it holds, for every pickle protocol.
"""

import pickletools
import re
import zipfile
from pathlib import Path
from typing import Optional

import torch

from hookedmlp.errors import CheckpointError, UsageError

__all__ = ["why_not_loadable"]

_OBJECT_OPS = {
    "GLOBAL",
    "STACK_GLOBAL",
    "INST",
    "OBJ",
    "REDUCE",
    "NEWOBJ",
    "NEWOBJ_EX",
    "BUILD",
    "EXT1",
    "EXT2",
    "EXT4",
}
_TORCH_PROTOCOL = 2  # what torch.save writes; its safe unpickler reads no other
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of torch.save(..., _use_new_zipfile_serialization=False)


def _pickle_bytes(p: Path) -> tuple[Optional[bytes], str]:
    """The pickle to inspect (a torch zip file's ``data.pkl``, else the file's bytes), or None and why not."""
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as z:
                name = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
                return (z.read(name), "") if name is not None else (None, "a zip file without its data.pkl")
        except (zipfile.BadZipFile, EOFError, RuntimeError, ValueError) as e:
            return None, f"a damaged zip file: {e}"
    data = p.read_bytes()
    if not data:
        return None, "the file is empty"
    if data[:2] == b"PK":
        return None, "an incomplete zip file"
    return data, ""


def _pickled_objects(payload: bytes) -> tuple[Optional[int], list[str], bool]:
    """Read a pickle's opcodes without running it: (protocol, the globals it names, whether it is complete).

    torch's legacy format shows as the name ``"torch.legacy_format"``.
    """
    protocol, names, strings = None, [], []
    try:
        for op, arg, _ in pickletools.genops(payload):
            if op.name in ("LONG1", "LONG4") and arg == _LEGACY_MAGIC:
                names.append("torch.legacy_format")
            if op.name == "PROTO":
                protocol = arg
            elif op.name in (
                "SHORT_BINUNICODE",
                "BINUNICODE",
                "BINUNICODE8",
                "UNICODE",
                "SHORT_BINSTRING",
                "BINSTRING",
            ):
                strings.append(str(arg))
            elif op.name in ("GLOBAL", "INST"):
                names.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            elif op.name in _OBJECT_OPS and not names:
                names.append(op.name.lower())
            if op.name == "STOP":
                return protocol, names, True
    except Exception:  # genops raises ValueError on a truncated or foreign stream
        return protocol, names, False
    return protocol, names, False


def why_not_loadable(p: Path, what: str, error: Optional[Exception]) -> Exception:
    """The error to raise for a file ``torch.load(weights_only=True)`` refused with ``error`` (None: not tried)."""
    text = str(error) if error is not None else ""
    if "CUDA" in text and not torch.cuda.is_available():
        return UsageError(
            f"cannot load {what} {str(p)!r}: it holds CUDA tensors and this machine has no CUDA device; "
            "load it with device='cpu'"
        )
    try:
        payload, why = _pickle_bytes(p)
    except OSError as e:
        return CheckpointError(f"cannot read {what} {str(p)!r}: {e.strerror or type(e).__name__}")
    if payload is None:
        return CheckpointError(f"{what} {str(p)!r} is truncated or corrupt ({why}); re-create it")
    found = re.search(r"GLOBAL (\S+) was not an allowed global", text)
    protocol, names, complete = _pickled_objects(payload)
    foreign = [n for n in names if n.split(".")[0] not in ("torch", "collections")]
    if found or foreign:
        shown = found.group(1) if found else ", ".join(dict.fromkeys(foreign[:3]))
        return CheckpointError(
            f"{what} {str(p)!r} contains pickled objects other than tensors and plain containers ({shown}); refusing "
            "to load it (it could run code). Re-save it with hookedmlp from code you trust."
        )
    is_zip = zipfile.is_zipfile(p)
    if "torch.legacy_format" in names and not is_zip:
        return CheckpointError(
            f"{what} {str(p)!r} was written in torch's legacy format (_use_new_zipfile_serialization=False), "
            "whose storage sizes cannot be checked before they are allocated; re-save it with torch.save's default"
        )
    if not complete and not is_zip and payload[:1] != b"\x80":
        return CheckpointError(
            f"{what} {str(p)!r} is not a file written by torch.save (it starts with {payload[:8]!r}); "
            "pass a .pt file written by hookedmlp"
        )
    if not complete:
        return CheckpointError(
            f"{what} {str(p)!r} is truncated or corrupt (its pickle ends early or is malformed); re-create it"
        )
    if not is_zip:
        return CheckpointError(
            f"{what} {str(p)!r} is a plain Python pickle (protocol {protocol}), not a file written by "
            "torch.save; refusing to unpickle it. Re-save the data with hookedmlp or torch.save."
        )
    if protocol is not None and protocol > _TORCH_PROTOCOL:
        return CheckpointError(
            f"{what} {str(p)!r} was saved with pickle protocol {protocol}, which the safe loader "
            f"cannot read; re-save it with torch.save's default protocol ({_TORCH_PROTOCOL})"
        )
    cause = text.splitlines()[0] if text and "weights_only" not in text else type(error).__name__
    return CheckpointError(f"{what} {str(p)!r} is truncated or corrupt ({type(error).__name__}: {cause}); re-create it")
