"""Steering vectors (activation additions): ``coeff * (act(a) - act(b))`` at one or more hook points.

For class labels, ``method="first"`` takes the ``exemplar``-th example of each class (the
study's first training image for exemplar 0) and ``method="mean"`` the class mean, streamed
over the data in batches; inputs given as tensors are averaged. Activations come from a pass
where no hook runs, so active steering never leaks into a new vector.
"""

import hashlib
import json
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor

from hookedmlp.checks import check_choice, check_class, check_coeff, check_int, check_scale_fits
from hookedmlp.context import HookContext
from hookedmlp.errors import CheckpointError, HookNameError, ShapeError, SteeringError, UsageError, did_you_mean, warn
from hookedmlp.interface import HookedModel
from hookedmlp.io import atomic_save, safe_load
from hookedmlp.labelled import Labelled, as_labelled, default_data

__all__ = ["SteeringVector", "SteeringWarning", "METHODS", "build_steering_vector", "class_activations",
           "model_fingerprint"]

METHODS = ("first", "mean")
Side = Union[int, Tensor]
_META_TYPES: dict[str, tuple[type, ...]] = {  # what save() writes; load() accepts nothing else for these keys
    "label": (str,), "a": (str, int), "b": (str, int), "method": (str,), "coeff": (int, float), "model": (str,),
    "exemplar": (int,), "data": (str,), "n_examples": (list,), "hooks": (list,), "norm": (dict,), "terms": (list,),
}
_MAX_META_DEPTH = 16


class SteeringWarning(UserWarning):
    """Steering whose result may mislead: a module that is random in training mode, or a vector from another model."""


_FINGERPRINTS: "weakref.WeakKeyDictionary[Any, tuple[tuple, str]]" = weakref.WeakKeyDictionary()


def model_fingerprint(model: HookedModel) -> str:
    """12 hex digits of the SHA-256 of the parameters' names, shapes and values (as float64, so dtype-free).

    Memoised on the parameters' identities, storages and version counters: free until a
    weight changes.
    """
    key = model.state_version()
    memo = _FINGERPRINTS.get(model)
    if memo is not None and memo[0] == key:
        return memo[1]
    h = hashlib.sha256()
    for name, p in model.state_tensors():
        h.update(f"{name}:{tuple(p.shape)}".encode())
        values = p.detach().cpu()
        values = values.double() if values.is_floating_point() else values
        h.update(np.ascontiguousarray(values.numpy()).tobytes())
    fp = h.hexdigest()[:12]
    _FINGERPRINTS[model] = (key, fp)
    return fp


def _check_meta(meta: Any, source: str, depth: int = 0) -> dict[str, Any]:
    if depth > _MAX_META_DEPTH:
        raise CheckpointError(f"{source} has metadata nested deeper than {_MAX_META_DEPTH} levels; the file was edited")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{source} has metadata of type {type(meta).__name__}; expected a JSON object")
    for key, types in _META_TYPES.items():
        if key in meta and (not isinstance(meta[key], types) or isinstance(meta[key], bool)):
            raise CheckpointError(f"{source} has metadata {key}={meta[key]!r}; expected {' or '.join(t.__name__ for t in types)}")
    for term in meta.get("terms", []):
        _check_meta(term, source, depth + 1)
    return meta


class SteeringVector(Mapping[str, Tensor]):
    """A steering vector: hook name -> tensor shaped like one example's activation there, plus provenance.

    ``v1 + v2`` unites hooks (summing shared ones), ``v1 - v2``, ``2.5 * v``, ``-v``, ``.to(...)``,
    ``save`` / ``load``, and ``apply(model)`` (or ``model.steer(v)``). Usually made with
    ``model.steering_vector``.

    Args:
        vectors: hook name -> floating-point tensor (finite), at least one.
        meta: provenance (``label``, ``method``, ``model``...); ``label`` defaults to ``"custom"``.

    Examples:
        >>> v = SteeringVector({"layer0.post": torch.ones(3)}, {"label": "ones"})
        >>> (2 * v)["layer0.post"].tolist()
        [2.0, 2.0, 2.0]
    """

    def __init__(self, vectors: Mapping[str, Tensor], meta: Optional[Mapping[str, Any]] = None) -> None:
        if not vectors:
            raise SteeringError("a steering vector needs at least one hook; got none")
        self._vectors: dict[str, Tensor] = {}
        for name, v in vectors.items():
            if not isinstance(v, Tensor) or v.ndim == 0 or not v.is_floating_point():
                desc = f"shape {list(v.shape)}, dtype {v.dtype}" if isinstance(v, Tensor) else type(v).__name__
                raise ShapeError(f"steering vector at {name!r} must be a floating-point tensor shaped like one "
                                 f"example's activation, got {desc}")
            if not bool(torch.isfinite(v).all()):
                raise SteeringError(f"steering vector at {name!r} contains NaN or infinite values")
            self._vectors[name] = v.detach()
        self.meta: dict[str, Any] = dict(meta or {})
        self.meta.setdefault("label", "custom")
        self.meta["hooks"] = list(self._vectors)
        self.meta["norm"] = {k: round(float(v.double().norm()), 6) for k, v in self._vectors.items()}
        self._on_model: tuple[Any, ...] = ()  # (model, key, tensors moved to it), for repeated apply()

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
        return str(self.meta["label"])

    # -- arithmetic -----------------------------------------------------------------
    def _combine(self, other: Any, sign: float, op: str) -> "SteeringVector":
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
        meta: dict[str, Any] = {"label": f"({self.label}) {op} ({other.label})", "terms": [self.meta, other.meta]}
        if self.meta.get("model") == other.meta.get("model") and "model" in self.meta:
            meta["model"] = self.meta["model"]
        return SteeringVector(out, meta)

    def __add__(self, other: "SteeringVector") -> "SteeringVector":
        return self._combine(other, 1.0, "+")

    def __sub__(self, other: "SteeringVector") -> "SteeringVector":
        return self._combine(other, -1.0, "-")

    def __mul__(self, coeff: Any) -> "SteeringVector":
        c = check_coeff(coeff)
        for v in self._vectors.values():
            check_scale_fits(c, [v], v.dtype)
        meta = {**self.meta, "label": f"{c:g}*({self.label})", "coeff": c * float(self.meta.get("coeff", 1.0))}
        return SteeringVector({k: c * v for k, v in self._vectors.items()}, meta)

    __rmul__ = __mul__

    def __neg__(self) -> "SteeringVector":
        return self * -1.0

    def to(self, device: Union[str, torch.device, torch.dtype, None] = None,
           dtype: Optional[torch.dtype] = None) -> "SteeringVector":
        """A copy on another device and/or dtype (``v.to(torch.float64)`` works as for tensors)."""
        if isinstance(device, torch.dtype):
            device, dtype = None, device
        return SteeringVector({k: v.to(device=device, dtype=dtype) for k, v in self._vectors.items()}, self.meta)

    # -- files ------------------------------------------------------------------------
    def save(self, path: Any) -> None:
        """Write the tensors and JSON metadata atomically (loadable with ``weights_only=True``)."""
        atomic_save({"format": "hookedmlp.steering_vector", "version": 1,
                     "vectors": {k: v.cpu() for k, v in self._vectors.items()}, "meta": json.dumps(self.meta)}, path)

    @classmethod
    def load(cls, path: Any, device: Union[str, torch.device, None] = None) -> "SteeringVector":
        """Load a vector written by ``save``, checking its tensors and metadata; never unpickles code."""
        source = repr(str(path))
        data = safe_load(path, what="steering vector", map_location=device or "cpu")
        if not isinstance(data, dict) or data.get("format") != "hookedmlp.steering_vector" or data.get("version") != 1:
            raise CheckpointError(f"{source} is not a hookedmlp steering vector (version 1); save one with SteeringVector.save")
        try:
            meta = json.loads(data["meta"])
        except (KeyError, TypeError, ValueError, RecursionError) as e:
            raise CheckpointError(f"{source} has unreadable metadata ({type(e).__name__}); re-save the vector") from None
        vectors = data.get("vectors")
        if not isinstance(vectors, dict) or not all(isinstance(k, str) for k in vectors):
            raise CheckpointError(f"{source} needs a dict of vectors keyed by hook name, got {type(vectors).__name__}; "
                                  "the file is corrupt or was edited")
        try:
            return cls(vectors, _check_meta(meta, source))
        except (ShapeError, SteeringError) as e:
            raise CheckpointError(f"{source} holds an invalid steering vector: {e}") from None

    # -- applying ----------------------------------------------------------------------
    def check(self, model: HookedModel, coeff: float = 1.0) -> dict[str, Tensor]:
        """The tensors on ``model``'s device and dtype, checked against its hook points; scaled by ``coeff``."""
        ref = model.reference_tensor()
        device, dtype = (ref.device, ref.dtype) if ref is not None else (None, None)
        key = (weakref.ref(model), model.structure_key(), device, dtype, coeff)
        if self._on_model and self._on_model[0] == key:
            return self._on_model[1]
        moved: dict[str, Tensor] = {}
        for name, v in self._vectors.items():
            if name not in model.hook_dict:
                raise HookNameError(f"steering vector has hook {name!r}, which this model lacks{did_you_mean(name, list(model.hook_dict))}")
            shape = model.activation_shape(name)
            if tuple(v.shape) != shape:
                raise ShapeError(f"steering vector at {name!r} has shape {list(v.shape)}, but one example's activation "
                                 f"there is {list(shape)}; expected a vector of shape {list(shape)}")
            if dtype is not None:
                check_scale_fits(coeff, [v], dtype)
            t = v.to(device=device, dtype=dtype)
            moved[name] = t * coeff if coeff != 1.0 else t
        self._on_model = (key, moved)
        return moved

    def apply(self, model: HookedModel, coeff: float = 1.0) -> HookContext:
        """Context manager adding ``coeff * self`` at its hooks; leaving it removes exactly these hooks.

        Warns (``SteeringWarning``) on entry when the model is in training mode with a module
        that behaves randomly there (dropout), or when the vector was built on other weights.

        Examples:
            >>> v = SteeringVector({"layer4.post": torch.tensor([1.0, -1.0, 0.0])})
            >>> with v.apply(tiny, coeff=2.0):
            ...     steered = tiny(tiny_x)
            >>> (steered - tiny(tiny_x))[0].tolist()
            [2.0, -2.0, 0.0]
        """
        c = check_coeff(coeff)
        vectors = self.check(model, c)
        fp = self.meta.get("model")

        def warnings_on_entry() -> None:
            differ = [n for n in model.training_mode_modules() if model.get_submodule(n).training] if model.training else []
            if differ:
                warn(f"steering a model in training mode: {', '.join(differ)} compute something else there "
                     "(dropout is random, batch norm uses batch statistics); call model.eval() first", SteeringWarning)
            if fp is not None and fp != (current := model_fingerprint(model)):
                warn(f"steering vector {self.label!r} was built on model {fp}, applied to model {current}", SteeringWarning)

        # check() has matched every name to a hook point: the pairs need no second resolution
        return HookContext.prepared(model, [(name, _Adder(v)) for name, v in vectors.items()], warnings_on_entry)

    def __repr__(self) -> str:
        hooks = ", ".join(f"{k} {list(v.shape)}" for k, v in self._vectors.items())
        parts = [repr(self.label), f"at {hooks}"]
        parts += [f"{k}={self.meta[k]}" for k in ("method", "exemplar", "data", "n_examples", "coeff", "model") if k in self.meta]
        parts.append("norm=" + ", ".join(f"{v:.4g}" for v in self.meta["norm"].values()))
        return f"SteeringVector({', '.join(parts)})"

    def _repr_html_(self) -> str:
        import html

        rows = "".join(f"<tr><td><code>{html.escape(k)}</code></td><td>{list(v.shape)}</td>"
                       f"<td>{self.meta['norm'][k]:.4g}</td></tr>" for k, v in self._vectors.items())
        prov = ", ".join(f"{k}: {html.escape(str(self.meta[k]))}" for k in ("method", "exemplar", "data", "coeff", "model")
                         if k in self.meta)
        return (f"<table><caption>SteeringVector {html.escape(self.label)}</caption><thead><tr><th>hook</th>"
                f"<th>shape</th><th>norm</th></tr></thead><tbody>{rows}</tbody></table><p>{prov}</p>")


class _Adder:
    """The hook adding one tensor (a class, not a lambda, so each hook holds its own tensor)."""

    __slots__ = ("v",)

    def __init__(self, v: Tensor) -> None:
        self.v = v

    def __call__(self, act: Tensor, hook: Any) -> Tensor:
        return act + self.v


def class_activations(model: HookedModel, classes: Sequence[int], hooks: Sequence[str], method: str = "first",
                      exemplar: int = 0, data: Any = None, batch_size: int = 10_000) -> tuple[dict[str, Tensor], list[int], str]:
    """Activations standing for each class at ``hooks``, from passes where no hook runs.

    Returns ``({hook: [len(classes), *shape]}, examples per class, the data's name)``:
    ``"first"`` takes each class's ``exemplar``-th example, ``"mean"`` its mean, streamed in
    batches (memory: one batch of activations).
    """
    method = check_choice(method, METHODS, "method")
    source = as_labelled(data) if data is not None else default_data(model)
    classes = [check_class(c, source.n_classes, "class") for c in classes]
    ref = model.reference_tensor()
    on_model = (lambda t: t.to(ref.device, ref.dtype)) if ref is not None else (lambda t: t)
    if method == "first":
        images = torch.cat([source.exemplar(c, exemplar)[0] for c in classes])
        return model.clean_activations(model.prepare_input(on_model(images)), hooks), [1] * len(classes), source.name
    wanted = torch.tensor(classes)
    sums: dict[str, Tensor] = {}
    counts = torch.zeros(len(classes))
    for images, labels in source.batches(classes, batch_size):
        onehot = (labels.unsqueeze(1) == wanted).to(ref.dtype if ref is not None else torch.float32)
        counts += onehot.sum(0).cpu()
        onehot = on_model(onehot)
        for k, v in model.clean_activations(model.prepare_input(on_model(images)), hooks).items():
            part = torch.einsum("nc,n...->c...", onehot, v)
            sums[k] = sums[k] + part if k in sums else part
    empty = [c for c, n in zip(classes, counts.tolist()) if n == 0]
    if empty:
        raise UsageError(f"{source.name} has no example of class(es) {empty}; the class mean is undefined")
    return ({k: s / counts.to(s.device, s.dtype).view(-1, *[1] * (s.ndim - 1)) for k, s in sums.items()},
            [int(c) for c in counts], source.name)


def _side(model: HookedModel, x: Side, hooks: list[str], method: str, exemplar: int, data: Any) -> tuple[dict[str, Tensor], int, str]:
    """Mean activation at each hook for a class label or input tensors, with its example count and label."""
    if isinstance(x, Tensor):
        batch = model.as_batch(x)
        if not bool(torch.isfinite(batch).all()):
            raise SteeringError("contrast input contains NaN or infinite values; pass finite inputs")
        acts = model.clean_activations(batch, hooks)
        return {k: v.mean(0) for k, v in acts.items()}, batch.shape[0], f"input(n={batch.shape[0]})"
    acts, counts, _ = class_activations(model, [x], hooks, method, exemplar, data)
    return {k: v[0] for k, v in acts.items()}, counts[0], str(x)


def build_steering_vector(model: HookedModel, a: Side, b: Side, hook: Union[str, Sequence[str]], coeff: float = 1.0,
                          method: str = "first", exemplar: int = 0, data: Any = None) -> SteeringVector:
    """``coeff * (act(a) - act(b))`` at ``hook``: the function behind ``model.steering_vector``."""
    c = check_coeff(coeff)
    method = check_choice(method, METHODS, "method")
    check_int(exemplar, "exemplar", low=0)
    hooks = model.resolve_names(hook) if isinstance(hook, str) else [n for h in hook for n in model.resolve_names(h)]
    if not hooks:
        raise SteeringError("hook is an empty list; pass at least one hook name, e.g. 'layer0.post'")
    if data is not None and not isinstance(data, Labelled):
        data = as_labelled(data)
    with torch.no_grad():
        acts_a, n_a, label_a = _side(model, a, hooks, method, exemplar, data)
        acts_b, n_b, label_b = _side(model, b, hooks, method, exemplar, data)
    diffs = {k: acts_a[k] - acts_b[k] for k in hooks}
    check_scale_fits(c, list(diffs.values()), next(iter(diffs.values())).dtype)
    meta: dict[str, Any] = {"label": f"{label_a} - {label_b}", "a": label_a, "b": label_b, "method": method,
                            "n_examples": [n_a, n_b], "coeff": c, "model": model_fingerprint(model)}
    if method == "first" and exemplar:
        meta["exemplar"] = exemplar
    if not (isinstance(a, Tensor) and isinstance(b, Tensor)):
        meta["data"] = data.name if data is not None else "MNIST train"
    return SteeringVector({k: c * v for k, v in diffs.items()}, meta)
