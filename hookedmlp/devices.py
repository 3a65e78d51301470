"""Where a command runs: ``cpu``, ``cuda`` (or ``cuda:N``), or ``auto`` (CUDA when this machine has it).

One check for every command that takes ``--device``: an explicit ``cuda`` on a machine without
CUDA is refused in one line that says why (no GPU seen, or a torch built without CUDA) and the fix.
"""

from typing import Any

import torch

from hookedmlp.errors import ConfigError, DeviceError

__all__ = ["DEVICES", "resolve_device"]

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(spec: Any = "auto") -> torch.device:
    """The ``torch.device`` for ``spec``: ``auto`` is CUDA's first device when available, else the CPU.

    Examples:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    kind, colon, index = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if kind not in DEVICES or (colon and (kind != "cuda" or not index.isdigit())):
        raise ConfigError(f"device must be one of {', '.join(DEVICES)} (or cuda:N), got {spec!r}")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = "no CUDA device is visible" if torch.version.cuda else "this torch is built without CUDA"
        raise DeviceError(
            f"device {spec!r} asked for, but {why} (torch {torch.__version__}); use --device cpu, or auto to take "
            "CUDA only where there is one"
        )
    device = torch.device(spec)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"device {spec!r}: this machine has {torch.cuda.device_count()} CUDA devices (0 to N-1)")
    return device
