"""Saving and loading HookedMLP checkpoints; the models shipped with the package."""

import hashlib
import json
import os
from collections.abc import Mapping
from importlib import resources
from typing import Any, Optional, Union

import torch

from hookedmlp.config import LayerSpec, MLPConfig
from hookedmlp.errors import CheckpointError, closest
from hookedmlp.io import atomic_save, safe_load

__all__ = ["save_checkpoint", "load_checkpoint", "load_pretrained", "pretrained_card", "PRETRAINED", "sha256_file"]

PRETRAINED = ("mnist-mlp",)


def save_checkpoint(model: Any, path: "str | os.PathLike[str]", meta: Optional[Mapping[str, Any]] = None) -> None:
    """Write ``model.checkpoint(meta)`` atomically to ``path``.

    Args:
        model: the ``HookedMLP`` to save.
        path: the file to write.
        meta: JSON-like metadata to store with it.

    Examples:
        >>> import pathlib, tempfile
        >>> from hookedmlp import HookedMLP, MLPConfig
        >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
        >>> from hookedmlp.checkpoint import load_checkpoint, save_checkpoint
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.pt"
        >>> save_checkpoint(model, path, {"epochs": 0})
        >>> load_checkpoint(path).meta
        {'epochs': 0}
    """
    atomic_save(model.checkpoint(meta), path)


def model_from_checkpoint(ckpt: Any, source: str, device: Union[str, torch.device, None] = None) -> Any:
    """Rebuild a HookedMLP from a loaded checkpoint dict, checking it describes the weights."""
    from hookedmlp.model import HookedMLP

    if not isinstance(ckpt, dict) or ckpt.get("format") != "hookedmlp.checkpoint":
        keys = sorted(ckpt)[:4] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{source} is not a hookedmlp checkpoint (got {keys}); for a plain state dict use "
            "HookedMLP.from_state_dict(torch.load(path, weights_only=True))"
        )
    if ckpt.get("version") != 1:
        raise CheckpointError(f"{source} has checkpoint version {ckpt.get('version')!r}; this hookedmlp reads version 1")
    missing_fields = [k for k in ("specs", "state_dict") if k not in ckpt]
    if missing_fields or not isinstance(ckpt["specs"], list) or not isinstance(ckpt["state_dict"], dict):
        raise CheckpointError(f"{source} lacks a list 'specs' and a dict 'state_dict' (missing {missing_fields}); the file is corrupt or was edited")
    specs = [LayerSpec.from_dict(d) for d in ckpt["specs"]]
    shape = ckpt.get("input_shape")
    if shape is not None and not (isinstance(shape, (list, tuple)) and all(isinstance(n, int) and n > 0 for n in shape)):
        raise CheckpointError(f"{source} has input_shape {shape!r}; expected a list of positive ints")
    meta = ckpt.get("meta", {})
    if not isinstance(meta, dict):
        raise CheckpointError(f"{source} has meta of type {type(meta).__name__}; expected a dict")
    try:
        model = HookedMLP(specs, input_shape=shape)
    except ValueError as e:
        raise CheckpointError(f"{source} describes an impossible architecture: {e}") from None
    state = ckpt["state_dict"]
    not_tensors = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(f"{source} has state_dict entries that are not tensors: {not_tensors}; the file is corrupt or was edited")
    dtypes = {v.dtype for v in state.values() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    if len(dtypes) == 1:
        model.to(dtype=dtypes.pop())
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or extra or wrong:
        raise CheckpointError(
            f"{source} does not match the architecture it describes (missing {missing}, unexpected {extra}, "
            f"shape mismatches {wrong}); the file is corrupt or was edited"
        )
    model.load_state_dict(state)
    model.meta = dict(meta)
    model.config = _config(ckpt.get("config", meta.get("config")), model.specs, source)
    if device is not None:
        model.to(device)
    return model.eval()


def _config(data: Any, specs: Any, source: str) -> Optional[MLPConfig]:
    """The ``MLPConfig`` a checkpoint records, checked against its specs (None if it records none)."""
    if data is None:
        return None
    try:
        config = MLPConfig(**{**data, "d_hidden": tuple(data.get("d_hidden", ()))})
    except (TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{source} has an unreadable config {data!r} ({e}); the file is corrupt or was edited") from None
    if tuple(config.layer_specs()) != tuple(specs):
        raise CheckpointError(f"{source} has a config that does not describe its layers ({config}); the file is corrupt or was edited")
    return config


def load_checkpoint(path: "str | os.PathLike[str]", device: Union[str, torch.device, None] = None) -> Any:
    """Load a checkpoint written by ``HookedMLP.save`` with ``torch.load(weights_only=True)``.

    The weights are checked against the architecture the file describes.

    Args:
        path: the checkpoint file.
        device: where to put the model (default: CPU).

    Returns:
        The ``HookedMLP``, in eval mode, with the checkpoint's metadata as ``model.meta``.

    Raises:
        CheckpointError: a missing, corrupt or unsafe file, another format or version,
            or weights that do not fit the described architecture.

    Examples:
        >>> import pathlib, tempfile
        >>> from hookedmlp import HookedMLP, MLPConfig
        >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
        >>> from hookedmlp.checkpoint import load_checkpoint
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.pt"
        >>> model.save(path)
        >>> load_checkpoint(path).specs == model.specs
        True
    """
    return model_from_checkpoint(safe_load(path, what="checkpoint"), repr(str(path)), device)


def sha256_file(path: "str | os.PathLike[str]") -> str:
    """Hex SHA-256 of a file's bytes.

    Args:
        path: the file to hash (read in 1 MiB blocks).

    Returns:
        64 lowercase hex digits.

    Examples:
        >>> import pathlib, tempfile
        >>> from hookedmlp.checkpoint import sha256_file
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "abc.txt"
        >>> _ = path.write_bytes(b"abc")
        >>> sha256_file(path)
        'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pretrained_files(name: str) -> tuple[Any, Any]:
    if name not in PRETRAINED:
        hint = closest(name, PRETRAINED)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        raise CheckpointError(f"unknown pretrained model {name!r}{suggestion} (available: {', '.join(PRETRAINED)})")
    root = resources.files("hookedmlp") / "pretrained"
    return root / f"{name}.pt", root / f"{name}.json"


def pretrained_card(name: str = "mnist-mlp") -> dict[str, Any]:
    """The card shipped next to a pretrained model: seed, command, test loss, accuracy, sha256.

    Args:
        name: the model's name (see ``PRETRAINED``).

    Returns:
        The card's JSON as a dict.

    Raises:
        CheckpointError: an unknown name.

    Examples:
        >>> from hookedmlp.checkpoint import pretrained_card
        >>> card = pretrained_card("mnist-mlp")
        >>> card["settings"]["seed"], card["test_accuracy"]
        (0, 0.9825)
    """
    _, card = _pretrained_files(name)
    return json.loads(card.read_text())


def load_pretrained(name: str = "mnist-mlp", device: Union[str, torch.device, None] = None) -> Any:
    """Load a shipped model after checking its sha256 against its card.

    Args:
        name: the model's name (see ``PRETRAINED``).
        device: where to put the model (default: CPU).

    Returns:
        The ``HookedMLP``, in eval mode.

    Raises:
        CheckpointError: an unknown name, or a file that fails its checksum.

    Examples:
        >>> from hookedmlp.checkpoint import load_pretrained
        >>> load_pretrained("mnist-mlp").hook_names[-1]
        'layer4.post'
    """
    weights, _ = _pretrained_files(name)
    card = pretrained_card(name)
    with resources.as_file(weights) as path:
        digest = sha256_file(path)
        if digest != card["sha256"]:
            raise CheckpointError(f"pretrained {name!r} fails its checksum: expected sha256 {card['sha256']}, got {digest}; reinstall hookedmlp")
        return load_checkpoint(path, device=device)
