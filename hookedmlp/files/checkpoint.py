"""The checkpoint file format, and the models shipped with the package.

A checkpoint is a ``torch.save`` of plain data, loaded with ``weights_only=True``:
``{"format": "hookedmlp.checkpoint", "version": 2, "architecture": NAME, ..., "state_dict",
"meta"}``. Each architecture (``HookedMLP``'s ``"chain"``, ``ResidualMLP``'s ``"residual_mlp"``)
registers the class that writes and reads its fields. Loading builds the architecture on the
``meta`` device first and checks every tensor's name and shape against it, so a file that
describes a huge network never allocates it; the file's own tensors then become the weights.
Then one example's activations are estimated against the memory budget (``hookedmlp.sizes``),
and one example of zeros is run, so a file that loads also runs. Saving and loading check the
weights by one rule (``check_weights``): floating point where the architecture has floats,
one floating dtype, finite, no two sharing storage; ``meta`` must be JSON data, as the card is.
Version 1 files (the first hookedmlp's Linear stacks) are read too.
"""

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from hookedmlp.checks import check_json
from hookedmlp.errors import CheckpointError, UnsupportedNetworkError, capped, closest
from hookedmlp.files.atomic import atomic_save
from hookedmlp.files.safe_load import safe_load
from hookedmlp.sizes import activation_bytes, check_bytes

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "check_state",
    "check_weights",
    "register_architecture",
    "load_pretrained",
    "pretrained_card",
    "pretrained_names",
    "sha256_file",
    "FORMAT",
    "VERSION",
]

FORMAT = "hookedmlp.checkpoint"
VERSION = 2
_ARCHITECTURES: dict[str, type] = {}
Device = Union[str, torch.device, None]


def register_architecture(name: str) -> Callable[[type], type]:
    """Class decorator: ``cls.to_checkpoint`` writes ``"architecture": name``, ``cls.from_checkpoint`` reads it."""

    def register(cls: type) -> type:
        _ARCHITECTURES[name] = cls
        cls.architecture = name  # type: ignore[attr-defined]
        return cls

    return register


def save_checkpoint(model: Any, path: "str | os.PathLike[str]", meta: Optional[Mapping[str, Any]] = None) -> None:
    """Write ``model``'s checkpoint (architecture, weights, buffers, ``meta``) atomically to ``path``.

    Only a file that ``load_checkpoint`` reads back is written: ``CheckpointError`` for weights
    ``check_weights`` refuses or a ``meta`` that is not JSON data; ``path`` is then untouched.
    """
    if getattr(type(model), "architecture", None) is None:
        raise UnsupportedNetworkError(
            f"cannot save a {type(model).__name__} as a hookedmlp checkpoint: hookedmlp can rebuild only its own "
            "architectures (HookedMLP, ResidualMLP); save the network's state_dict with torch.save, and open the "
            "rebuilt network again"
        )
    meta = dict(meta if meta is not None else model.meta)
    check_json(meta, "a checkpoint's meta", CheckpointError)
    contents = model.to_checkpoint()
    check_weights(contents["state_dict"], f"cannot save {type(model).__name__} to {str(path)!r}", saving=True)
    atomic_save(
        {"format": FORMAT, "version": VERSION, "architecture": model.architecture, **contents, "meta": meta}, path
    )


def _upgrade_v1(ckpt: dict[str, Any], source: str) -> dict[str, Any]:
    """A version 1 checkpoint (``specs`` of a Linear stack) as the version 2 ``chain`` it describes."""
    specs = ckpt.get("specs")
    if not isinstance(specs, list) or not specs:
        raise CheckpointError(f"{source} lacks a list 'specs'; the file is corrupt or was edited")
    kinds = {"relu": ("ReLU", {}), "tanh": ("Tanh", {}), "sigmoid": ("Sigmoid", {})}
    layers = []
    width = None
    for i, d in enumerate(specs):
        if not isinstance(d, Mapping) or not isinstance(d.get("kind"), str):
            raise CheckpointError(f"{source}: malformed layer spec {d!r}; expected a mapping with kind, d_in, d_out")
        kind, param = d["kind"], d.get("param", 0.0)
        try:
            d_in, d_out, param = int(d["d_in"]), int(d["d_out"]), float(param)
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{source}: malformed layer spec {dict(d)!r}: {e}") from None
        if width is not None and d_in != width or kind != "linear" and d_in != d_out:
            raise CheckpointError(
                f"{source} describes an impossible architecture: layer {i} ({kind}) reads {d_in} features and writes "
                f"{d_out}, after a layer writing {width}; the file is corrupt or was edited"
            )
        width = d_out
        if kind == "linear":
            desc = ("Linear", {"in_features": d_in, "out_features": d_out, "bias": bool(d.get("bias", True))})
        elif kind == "gelu":
            desc = ("GELU", {"approximate": "tanh" if param else "none"})
        elif kind == "leaky_relu":
            desc = ("LeakyReLU", {"negative_slope": param})
        elif kind == "dropout":
            desc = ("Dropout", {"p": param})
        elif kind in kinds:
            desc = kinds[kind]
        else:
            raise CheckpointError(f"{source}: unknown layer kind {kind!r} in a version 1 file")
        layers.append({"type": desc[0], "args": desc[1], "path": str(i)})
    config = ckpt.get("config", (ckpt.get("meta") or {}).get("config"))
    first = specs[0]
    return {
        **ckpt,
        "version": VERSION,
        "architecture": "chain",
        "layers": layers,
        "first_shape": [int(first.get("d_in", 0))],
        "config": ({"kind": "mlp", **config} if isinstance(config, dict) else None),
    }


def read_checkpoint(path: "str | os.PathLike[str]", device: Device = None) -> dict[str, Any]:
    """The checked plain data of a checkpoint file (version 1 upgraded to version 2)."""
    source = repr(str(path))
    ckpt = safe_load(path, what="checkpoint", map_location=device or "cpu")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        keys = sorted(map(str, ckpt))[:4] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{source} is not a hookedmlp checkpoint (got {keys}); for a plain state dict use "
            "HookedMLP.from_state_dict(torch.load(path, weights_only=True))"
        )
    if ckpt.get("version") == 1:
        ckpt = _upgrade_v1(ckpt, source)
    if ckpt.get("version") != VERSION:
        raise CheckpointError(
            f"{source} has checkpoint version {ckpt.get('version')!r}; this hookedmlp reads versions 1 and {VERSION}"
        )
    state, meta = ckpt.get("state_dict"), ckpt.get("meta", {})
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source} lacks a state_dict of tensors; the file is corrupt or was edited")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{source} has meta of type {type(meta).__name__}; expected a dict")
    if ckpt.get("architecture") not in _ARCHITECTURES:
        raise CheckpointError(
            f"{source} holds architecture {ckpt.get('architecture')!r}; this hookedmlp reads "
            f"{', '.join(map(repr, _ARCHITECTURES))}"
        )
    return ckpt


def check_weights(state: Mapping[str, Tensor], source: str, saving: bool = False) -> None:
    """Raise unless ``state`` can be a model's weights: one floating dtype, every entry finite, no shared storage."""
    fix = "the model is not saved; fix or retrain it" if saving else "the file is corrupt or was edited"
    floats = {str(t.dtype) for t in state.values() if t.is_floating_point()}
    if len(floats) > 1:
        by_dtype = {d: [k for k, t in state.items() if str(t.dtype) == d] for d in sorted(floats)}
        listed = "; ".join(f"{d}: {capped(ks, 2)}" for d, ks in by_dtype.items())
        raise CheckpointError(
            f"{source}: its weights mix floating dtypes ({listed}); a model has one dtype, so no input could match "
            f"every layer; {fix} (or convert it with model.to(torch.float32))"
        )
    for k, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(f"{source}: tensor {k!r} has {bad} NaN or infinite entries of {t.numel()}; {fix}")
    owners: dict[tuple[int, str], str] = {}
    for k, t in state.items():
        if t.untyped_storage().nbytes() == 0:
            continue
        key = (t.untyped_storage().data_ptr(), str(t.device))
        if key in owners:
            raise CheckpointError(
                f"{source}: tensors {owners[key]!r} and {k!r} share one storage (tied or aliased weights), so "
                f"editing one would edit the other; a checkpoint holds each weight on its own; {fix}"
            )
        owners[key] = k


def check_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise unless ``state`` has exactly ``model``'s tensor names, shapes and kinds (``model`` may be on ``meta``).

    Then ``check_weights``. (``safe_load`` has already refused tensors declaring more elements than stored.)
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: {list(state[k].shape)} vs {list(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or extra or wrong:
        raise CheckpointError(
            f"{source} does not match the architecture it describes (missing {capped(missing)}, unexpected "
            f"{capped(extra)}, shape mismatches {capped(wrong)}); the file is corrupt or was edited"
        )
    kinds = [
        f"{k}: {state[k].dtype}"
        for k, v in expected.items()
        if state[k].is_floating_point() != v.is_floating_point() or state[k].is_complex()
    ]
    if kinds:
        raise CheckpointError(
            f"{source} holds tensors of the wrong kind ({capped(kinds)}): weights must be floating point and "
            "counters integers; the file is corrupt or was edited"
        )
    check_weights(state, source)


def _check_runs(model: Any, source: str) -> None:
    """One example's activations fit the memory budget, and one example of zeros runs through the model."""
    shapes = model.activation_shapes()
    ref = model.reference_tensor()
    dtype = ref.dtype if ref is not None else torch.float32
    total = sum(activation_bytes(shape, 1, dtype) for shape in shapes.values())
    check_bytes(total, f"one example's activations in {source}", "the file is corrupt or describes too big a network")
    x = torch.zeros(1, *model.accepted_input_shapes()[0], dtype=dtype, device=ref.device if ref is not None else None)
    try:
        with torch.no_grad():
            model(x)
    except (RuntimeError, IndexError, ValueError, TypeError) as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(
            f"{source} describes a network that fails on one example of shape {list(x.shape[1:])} "
            f"({type(e).__name__}: {first}); the file is corrupt or was edited"
        ) from None


def load_checkpoint(path: "str | os.PathLike[str]", device: Device = None) -> Any:
    """The model a checkpoint holds (any registered architecture), in eval mode, with ``model.meta``."""
    ckpt = read_checkpoint(path, device)
    model = _ARCHITECTURES[ckpt["architecture"]].from_checkpoint(ckpt, repr(str(path)))
    model.meta = dict(ckpt.get("meta", {}))
    if device is not None:
        model.to(device)
    model.eval()
    _check_runs(model, repr(str(path)))
    return model


def sha256_file(path: "str | os.PathLike[str]") -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pretrained_root() -> Any:
    return resources.files("hookedmlp") / "pretrained"


def pretrained_names() -> list[str]:
    """The models shipped with the package (each ``NAME.pt`` with its card ``NAME.json``)."""
    return sorted(p.name[: -len(".json")] for p in _pretrained_root().iterdir() if p.name.endswith(".json"))


def pretrained_card(name: str = "mnist-mlp") -> dict[str, Any]:
    """The card shipped beside a pretrained model: recipe, seed, command, test loss and accuracy, sha256."""
    names = pretrained_names()
    if name not in names:
        hint = closest(name, names, n=1)
        raise CheckpointError(
            f"unknown pretrained model {name!r}{f'; did you mean {hint[0]!r}?' if hint else ''} "
            f"(available: {', '.join(names)})"
        )
    return json.loads((_pretrained_root() / f"{name}.json").read_text())


def load_pretrained(name: str = "mnist-mlp", device: Device = None) -> Any:
    """A shipped model, after checking its file's sha256 against its card."""
    card = pretrained_card(name)
    with resources.as_file(_pretrained_root() / f"{name}.pt") as path:
        digest = sha256_file(path)
        if digest != card["sha256"]:
            raise CheckpointError(
                f"pretrained {name!r} fails its checksum: expected sha256 {card['sha256']}, got {digest}; "
                "reinstall hookedmlp"
            )
        return load_checkpoint(path, device=device)
