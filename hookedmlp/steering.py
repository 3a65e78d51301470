"""Steering vectors (activation additions) built from cached activations.

``model.steering_vector(a, b, hook)`` is ``coeff * (act_hook(a) - act_hook(b))``:
with digits and ``method="first"`` the activations of the first training image
of each digit (the study's method); with ``method="mean"`` the class means over
the whole training set; with tensors, the (mean) activations of those inputs.
Vectors are computed on the model without any hooks, so active steering or
other hooks never leak into a new vector.
"""

import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Optional, Union

import torch
from torch import Tensor

from hookedmlp.errors import CheckpointError, HookNameError, ShapeError, SteeringError, did_you_mean
from hookedmlp.io import atomic_save, safe_load

__all__ = ["SteeringVector", "SteeringWarning", "build_steering_vector", "class_activations", "model_fingerprint", "check_coeff"]

Contrast = Union[int, Tensor]
_METHODS = ("first", "mean")


class SteeringWarning(UserWarning):
    """Steering a model whose state may make the result misleading (e.g. dropout active).

    Issued by ``SteeringVector.apply`` (and so ``model.steer``) for a model in
    training mode, or a vector built on another model.

    Examples:
        >>> import warnings
        >>> import torch
        >>> from hookedmlp import HookedMLP, MLPConfig, SteeringVector, SteeringWarning
        >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))  # training mode
        >>> v = SteeringVector({"layer0.post": torch.ones(3)})
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     with v.apply(model):
        ...         pass
        >>> caught[0].category is SteeringWarning
        True
    """


def model_fingerprint(model: torch.nn.Module) -> str:
    """First 12 hex digits of the SHA-256 of the model's parameters (names, shapes, values).

    Recorded in a steering vector's ``meta["model"]``, so applying it to another
    model warns.

    Args:
        model: any module; its ``state_dict()`` is hashed.

    Returns:
        12 lowercase hex digits.

    Examples:
        >>> from hookedmlp import HookedMLP
        >>> from hookedmlp.steering import model_fingerprint
        >>> model_fingerprint(HookedMLP.from_pretrained("mnist-mlp"))
        '66692d5dd328'
    """
    h = hashlib.sha256()
    for name, p in model.state_dict().items():
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]


def check_coeff(coeff: Any) -> float:
    """A finite real coefficient, or ``SteeringError``.

    Args:
        coeff: an int, a float or a one-element tensor (not a bool).

    Returns:
        ``coeff`` as a Python float.

    Raises:
        SteeringError: ``coeff`` is not a real number, or is NaN or infinite.

    Examples:
        >>> import torch
        >>> from hookedmlp.steering import check_coeff
        >>> check_coeff(2), check_coeff(torch.tensor(0.5))
        (2.0, 0.5)
    """
    if isinstance(coeff, bool) or not isinstance(coeff, (int, float)) and not (isinstance(coeff, Tensor) and coeff.numel() == 1):
        raise SteeringError(f"coeff must be a real number, got {type(coeff).__name__} ({coeff!r})")
    value = float(coeff)
    if not math.isfinite(value):
        raise SteeringError(f"coeff must be finite, got {value}; use a finite number such as 1.0")
    return value


class SteeringVector(Mapping[str, Tensor]):
    """A steering vector: hook name -> tensor of that activation's width, plus provenance.

    Supports ``v1 + v2`` (hooks united, shared hooks summed), ``v1 - v2``,
    ``2.5 * v``, ``-v``, ``.to(device)``, ``save`` / ``load`` and ``apply(model)``.
    Usually built with ``HookedMLP.steering_vector``.

    Args:
        vectors: hook name -> 1-D float tensor ``[width]`` (finite); at least one.
        meta: provenance (``label``, ``method``, ``model``...); ``label`` defaults to
            ``"custom"``, and ``hooks`` and ``norm`` are filled in.

    Raises:
        SteeringError: no hooks, or NaN or infinite values.
        ShapeError: a tensor that is not 1-D floating point.

    Examples:
        >>> import torch
        >>> from hookedmlp import SteeringVector
        >>> v = SteeringVector({"layer0.post": torch.ones(3)}, {"label": "ones"})
        >>> (2 * v)["layer0.post"].tolist()
        [2.0, 2.0, 2.0]
    """

    def __init__(self, vectors: Mapping[str, Tensor], meta: Optional[Mapping[str, Any]] = None) -> None:
        if not vectors:
            raise SteeringError("a steering vector needs at least one hook; got none")
        self._vectors: dict[str, Tensor] = {}
        for name, v in vectors.items():
            if not isinstance(v, Tensor) or v.ndim != 1 or not v.is_floating_point():
                desc = f"shape {list(v.shape)}, dtype {v.dtype}" if isinstance(v, Tensor) else type(v).__name__
                raise ShapeError(f"steering vector at {name!r} must be a 1-D float tensor [d], got {desc}")
            if not bool(torch.isfinite(v).all()):
                raise SteeringError(f"steering vector at {name!r} contains NaN or infinite values")
            self._vectors[name] = v.detach()
        self.meta: dict[str, Any] = dict(meta or {})
        self.meta.setdefault("label", "custom")
        self.meta["hooks"] = list(self._vectors)
        self.meta["norm"] = {k: round(float(v.norm()), 6) for k, v in self._vectors.items()}

    # -- mapping ----------------------------------------------------------------
    def __getitem__(self, name: str) -> Tensor:
        try:
            return self._vectors[name]
        except KeyError:
            raise HookNameError(f"this steering vector has no hook {name!r}{did_you_mean(name, list(self._vectors))}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._vectors)

    def __len__(self) -> int:
        return len(self._vectors)

    @property
    def label(self) -> str:
        """A short description, e.g. ``"3 - 1"`` or ``"2.0*(3 - 1) + (4 - 9)"``.

        Returns:
            ``meta["label"]`` as a string.

        Examples:
            >>> import torch
            >>> from hookedmlp import SteeringVector
            >>> v = SteeringVector({"layer0.post": torch.ones(3)}, {"label": "ones"})
            >>> v.label, (2 * v).label
            ('ones', '2*(ones)')
        """
        return str(self.meta["label"])

    # -- arithmetic ---------------------------------------------------------------
    def _combine(self, other: "SteeringVector", sign: float, op: str) -> "SteeringVector":
        if not isinstance(other, SteeringVector):
            return NotImplemented
        out = dict(self._vectors)
        for name, v in other._vectors.items():
            if name in out:
                if out[name].shape != v.shape:
                    raise ShapeError(f"cannot combine vectors at {name!r}: shapes {list(out[name].shape)} and {list(v.shape)}")
                out[name] = out[name] + sign * v.to(out[name].device, out[name].dtype)
            else:
                out[name] = sign * v
        meta = {"label": f"({self.label}) {op} ({other.label})", "terms": [self.meta, other.meta]}
        if self.meta.get("model") == other.meta.get("model"):
            meta["model"] = self.meta.get("model")
        return SteeringVector(out, meta)

    def __add__(self, other: "SteeringVector") -> "SteeringVector":
        return self._combine(other, 1.0, "+")

    def __sub__(self, other: "SteeringVector") -> "SteeringVector":
        return self._combine(other, -1.0, "-")

    def __mul__(self, coeff: float) -> "SteeringVector":
        c = check_coeff(coeff)
        meta = {**self.meta, "label": f"{c:g}*({self.label})", "coeff": c * float(self.meta.get("coeff", 1.0))}
        return SteeringVector({k: c * v for k, v in self._vectors.items()}, meta)

    __rmul__ = __mul__

    def __neg__(self) -> "SteeringVector":
        return self * -1.0

    def to(self, device: Union[str, torch.device, torch.dtype, None] = None, dtype: Optional[torch.dtype] = None) -> "SteeringVector":
        """A copy with every tensor moved to ``device`` / ``dtype`` (``v.to(torch.float64)`` works as for tensors).

        Args:
            device: the target device, or a dtype (then taken as ``dtype``).
            dtype: the target dtype.

        Returns:
            A new ``SteeringVector`` with the same metadata.

        Examples:
            >>> import torch
            >>> from hookedmlp import SteeringVector
            >>> v = SteeringVector({"layer0.post": torch.ones(3)})
            >>> v.to(torch.float64)["layer0.post"].dtype
            torch.float64
        """
        if isinstance(device, torch.dtype):
            device, dtype = None, device
        return SteeringVector({k: v.to(device=device, dtype=dtype) for k, v in self._vectors.items()}, self.meta)

    # -- files --------------------------------------------------------------------
    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Write the tensors and JSON metadata atomically (loadable with ``weights_only=True``).

        Args:
            path: the file to write.

        Examples:
            >>> import pathlib, tempfile
            >>> import torch
            >>> from hookedmlp import SteeringVector
            >>> path = pathlib.Path(tempfile.mkdtemp()) / "ones.pt"
            >>> SteeringVector({"layer0.post": torch.ones(3)}, {"label": "ones"}).save(path)
            >>> SteeringVector.load(path).label
            'ones'
        """
        atomic_save({"format": "hookedmlp.steering_vector", "version": 1,
                     "vectors": {k: v.cpu() for k, v in self._vectors.items()},
                     "meta": json.dumps(self.meta)}, path)

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"], device: Union[str, torch.device, None] = None) -> "SteeringVector":
        """Load a vector written by ``save``; never unpickles anything but tensors.

        Args:
            path: the file written by ``save``.
            device: where to put the tensors (default: CPU).

        Returns:
            The vector, with its metadata.

        Raises:
            CheckpointError: a missing, corrupt or unsafe file, or not a steering vector.

        Examples:
            >>> import pathlib, tempfile
            >>> import torch
            >>> from hookedmlp import SteeringVector
            >>> path = pathlib.Path(tempfile.mkdtemp()) / "v.pt"
            >>> SteeringVector({"layer0.post": torch.ones(3)}).save(path)
            >>> SteeringVector.load(path)["layer0.post"].tolist()
            [1.0, 1.0, 1.0]
        """
        data = safe_load(path, what="steering vector", map_location=device or "cpu")
        if not isinstance(data, dict) or data.get("format") != "hookedmlp.steering_vector" or data.get("version") != 1:
            raise CheckpointError(f"{str(path)!r} is not a hookedmlp steering vector (version 1); save one with SteeringVector.save")
        try:
            meta = json.loads(data["meta"])
        except (KeyError, TypeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{str(path)!r} has unreadable metadata ({e}); re-save the vector") from None
        vectors = data.get("vectors")
        if not isinstance(meta, dict) or not isinstance(vectors, dict) or not all(isinstance(k, str) for k in vectors):
            raise CheckpointError(f"{str(path)!r} needs a dict of vectors and a JSON object of metadata; got "
                                  f"{type(vectors).__name__} and {type(meta).__name__}. The file is corrupt or was edited")
        try:
            return cls(vectors, meta)
        except (ShapeError, SteeringError) as e:
            raise CheckpointError(f"{str(path)!r} holds an invalid steering vector: {e}") from None

    # -- applying --------------------------------------------------------------------
    def check(self, model: Any) -> dict[str, Tensor]:
        """Validate against ``model`` and return the tensors on its device and dtype.

        Args:
            model: the model the vector is for.

        Returns:
            ``{hook: tensor}`` on the model's device and dtype.

        Raises:
            HookNameError: a hook the model lacks.
            ShapeError: a width that does not match the hook's activation.

        Examples:
            >>> import torch
            >>> from hookedmlp import HookedMLP, MLPConfig, SteeringVector
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2)).double()
            >>> SteeringVector({"layer0.post": torch.ones(3)}).check(model)["layer0.post"].dtype
            torch.float64
        """
        names = model.hook_names
        moved: dict[str, Tensor] = {}
        weight = next(model.parameters())
        for name, v in self._vectors.items():
            if name not in model.hook_dict:
                raise HookNameError(f"steering vector has hook {name!r}, which this model lacks{did_you_mean(name, names)}")
            width = model.activation_width(name)
            if v.shape != (width,):
                raise ShapeError(f"steering vector at {name!r} has shape {list(v.shape)}, but the activation there is [batch, {width}]; expected [{width}]")
            moved[name] = v.to(device=weight.device, dtype=weight.dtype)
        return moved

    @contextmanager
    def apply(self, model: Any, coeff: float = 1.0) -> Iterator[Any]:
        """Context manager: add ``coeff * self`` to the activations at its hooks.

        Leaving the context (also by an exception) removes exactly these hooks;
        the model's outputs are then bit for bit what they were before.

        Args:
            model: the model to steer (checked first, see ``check``).
            coeff: the coefficient applied to every tensor of the vector.

        Yields:
            The model, steered inside the ``with`` block.

        Raises:
            SteeringError: a non-finite ``coeff``.

        Examples:
            >>> import torch
            >>> from hookedmlp import HookedMLP, MLPConfig, SteeringVector
            >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2)).eval()
            >>> v = SteeringVector({"layer2.post": torch.tensor([1.0, -1.0])})
            >>> x = torch.zeros(1, 4)
            >>> with v.apply(model, coeff=2.0):
            ...     steered = model(x)
            >>> torch.allclose(steered - model(x), torch.tensor([[2.0, -2.0]]))
            True
        """
        c = check_coeff(coeff)
        vectors = self.check(model)
        if model.training:
            warnings.warn("steering a model in training mode: dropout is active, so outputs are random; call model.eval() first",
                          SteeringWarning, stacklevel=3)
        fp = self.meta.get("model")
        current = model_fingerprint(model) if fp is not None else None
        if fp is not None and fp != current:
            warnings.warn(f"steering vector {self.label!r} was built on model {fp}, applied to model {current}",
                          SteeringWarning, stacklevel=3)

        def adder(v: Tensor):  # a separate closure per hook
            return lambda act, hook: act + v

        with model.hooks(fwd_hooks=[(name, adder(c * v if c != 1.0 else v)) for name, v in vectors.items()]):
            yield model

    def __repr__(self) -> str:
        hooks = ", ".join(f"{k} [{v.shape[0]}]" for k, v in self._vectors.items())
        parts = [repr(self.label), f"at {hooks}"]
        for key in ("method", "n_examples", "coeff", "model"):
            if key in self.meta:
                parts.append(f"{key}={self.meta[key]}")
        norms = ", ".join(f"{v:.4g}" for v in self.meta["norm"].values())
        parts.append(f"norm={norms}")
        return f"SteeringVector({', '.join(parts)})"


def _check_digit(x: Any) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise SteeringError(f"a and b must be digits 0-9 or input tensors, got {type(x).__name__} ({x!r})")
    if not 0 <= x <= 9:
        raise SteeringError(f"digit must be in 0-9, got {x}")
    return x


def class_activations(model: Any, digits: Sequence[int], hooks: Sequence[str], method: str = "first",
                      batch_size: int = 10_000) -> tuple[dict[str, Tensor], list[int]]:
    """Activations representing MNIST digits at ``hooks``, from the model without hooks.

    Args:
        model: a model on MNIST inputs (``d_in`` 784).
        digits: labels 0-9.
        hooks: hook names.
        method: ``"first"``: the first training image of each digit (the study's
            exemplars); ``"mean"``: the class mean over the training set, computed in
            one streaming pass over batches (memory: one batch of activations).
        batch_size: images per batch for ``"mean"``.

    Returns:
        ``({hook: [len(digits), width of hook]}, examples per digit)``.

    Raises:
        SteeringError: a digit outside 0-9, an unknown ``method``, or ``d_in`` not 784.

    Examples:
        >>> from hookedmlp import HookedMLP
        >>> from hookedmlp.steering import class_activations
        >>> model = HookedMLP.from_pretrained("mnist-mlp")
        >>> acts, counts = class_activations(model, [3, 1], ["layer0.post"])
        >>> acts["layer0.post"].shape, counts
        (torch.Size([2, 512]), [1, 1])
    """
    digits = [_check_digit(d) for d in digits]
    if method not in _METHODS:
        raise SteeringError(f"method must be one of {', '.join(map(repr, _METHODS))}, got {method!r}")
    if model.d_in != 784:
        raise SteeringError(f"digit labels are resolved through MNIST, which needs d_in=784 (this model has {model.d_in}); pass input tensors instead")
    from hookedmlp.data import first_example, load_mnist

    weight = next(model.parameters())
    if method == "first":
        images = torch.cat([first_example(d)[0] for d in digits]).to(weight.device, weight.dtype)
        return model.clean_activations(images, hooks), [1] * len(digits)
    images, labels = load_mnist("train")
    wanted = torch.tensor(digits)
    idx = torch.isin(labels, wanted).nonzero().squeeze(1)
    onehot_all = (labels[idx].unsqueeze(1) == wanted).to(weight.dtype)  # [n, len(digits)]
    sums: dict[str, Tensor] = {}
    for i in range(0, len(idx), batch_size):  # streaming: one batch of activations at a time
        batch = images[idx[i:i + batch_size]].to(weight.device, weight.dtype)
        onehot = onehot_all[i:i + batch_size].to(weight.device)
        for k, v in model.clean_activations(batch, hooks).items():
            part = onehot.T @ v
            sums[k] = sums[k] + part if k in sums else part
    counts = onehot_all.sum(0)
    return {k: s / counts.to(s.device).unsqueeze(1) for k, s in sums.items()}, [int(c) for c in counts]


def _contrast_acts(model: Any, x: Contrast, hooks: Sequence[str], method: str) -> tuple[dict[str, Tensor], int, str]:
    """Mean activation at each hook for a digit (first / class mean) or an input tensor."""
    if isinstance(x, Tensor):
        batch = model.as_batch(x)
        if not bool(torch.isfinite(batch).all()):
            raise SteeringError("contrast input contains NaN or infinite values; pass finite images")
        acts = model.clean_activations(batch, hooks)
        return {k: v.mean(0) for k, v in acts.items()}, batch.shape[0], f"input(n={batch.shape[0]})"
    acts, counts = class_activations(model, [x], hooks, method)
    return {k: v[0] for k, v in acts.items()}, counts[0], str(x)


def build_steering_vector(model: Any, a: Contrast, b: Contrast, hook: Union[str, Sequence[str]], coeff: float = 1.0, method: str = "first") -> SteeringVector:
    """``coeff * (act_hook(a) - act_hook(b))`` as a ``SteeringVector`` (see module docs).

    The function behind ``HookedMLP.steering_vector``.

    Args:
        model: the model whose activations define the vector.
        a: the positive side: a digit 0-9 or input tensors (averaged).
        b: the negative side, like ``a``.
        hook: a hook name or glob, or a list of them.
        coeff: the coefficient (finite).
        method: for digits, ``"first"`` or ``"mean"`` (see ``class_activations``).

    Returns:
        The vector, with provenance in ``meta`` (``a``, ``b``, ``method``,
            ``n_examples``, ``coeff``, the model's fingerprint).

    Raises:
        SteeringError: a bad digit, ``coeff`` or ``method``, an empty hook list, or
            non-finite input tensors.

    Examples:
        >>> from hookedmlp import HookedMLP
        >>> from hookedmlp.steering import build_steering_vector
        >>> model = HookedMLP.from_pretrained("mnist-mlp")
        >>> v = build_steering_vector(model, 3, 1, "layer0.post", coeff=2.0)
        >>> v.label, v.meta["coeff"], v["layer0.post"].shape
        ('3 - 1', 2.0, torch.Size([512]))
    """
    c = check_coeff(coeff)
    if method not in _METHODS:
        raise SteeringError(f"method must be one of {', '.join(map(repr, _METHODS))}, got {method!r}")
    for x in (a, b):
        if not isinstance(x, Tensor):
            _check_digit(x)
    hooks = model.resolve_names(hook) if isinstance(hook, str) else [n for h in hook for n in model.resolve_names(h)]
    if not hooks:
        raise SteeringError("hook is an empty list; pass at least one hook name, e.g. 'layer0.post'")
    with torch.no_grad():
        acts_a, n_a, label_a = _contrast_acts(model, a, hooks, method)
        acts_b, n_b, label_b = _contrast_acts(model, b, hooks, method)
    vectors = {k: c * (acts_a[k] - acts_b[k]) for k in hooks}
    meta = {"label": f"{label_a} - {label_b}", "a": label_a, "b": label_b, "method": method,
            "n_examples": [n_a, n_b], "coeff": c, "model": model_fingerprint(model)}
    return SteeringVector(vectors, meta)
