"""Steering vectors (activation additions): ``coeff * (act(a) - act(b))`` at one or more hook points.

A side of the contrast is a class label of some labelled data (see ``hookedmlp.data.labelled``:
the ``exemplar``-th example of the class, or its mean) or input tensors (averaged). The
tensors may have any shape per example: ``[512]`` after a Linear, ``[C, H, W]`` in a CNN.
Activations come from a pass where no hook runs, so active steering never leaks into a new
vector.
"""

import hashlib
import json
import math
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor

from hookedmlp.checks import (
    check_choice,
    check_class,
    check_coeff,
    check_int,
    check_scale_fits,
)
from hookedmlp.data.labelled import (
    METHODS,
    Labelled,
    as_labelled,
    class_activations,
    default_data,
)
from hookedmlp.errors import (
    CheckpointError,
    HookNameError,
    ShapeError,
    SteeringError,
    did_you_mean,
    warn,
)
from hookedmlp.files.atomic import atomic_save
from hookedmlp.files.safe_load import safe_load
from hookedmlp.hooks.context import HookContext
from hookedmlp.hooks.shapes import HookedModel, check_example_shape

__all__ = [
    "SteeringVector",
    "SteeringWarning",
    "METHODS",
    "build_steering_vector",
    "class_activations",
    "model_fingerprint",
    "warn_training_mode",
]

_META_TYPES: dict[str, tuple[type, ...]] = {  # what save() writes; load() accepts nothing else for these keys
    "label": (str,),
    "a": (str, int),
    "b": (str, int),
    "method": (str,),
    "coeff": (int, float),
    "model": (str,),
    "exemplar": (int,),
    "data": (str,),
    "n_examples": (list,),
    "hooks": (list,),
    "norm": (dict,),
    "terms": (list,),
}
_META_VALUES: dict[str, tuple[str, Any]] = {  # checked once the types are right
    "coeff": ("a finite number", math.isfinite),
    "exemplar": ("an int >= 0", lambda e: e >= 0),
    "n_examples": ("a list of ints", lambda ns: all(isinstance(n, int) and not isinstance(n, bool) for n in ns)),
}
_MAX_META_DEPTH = 16  # nesting of JSON objects and lists; what save() writes stays under 6


class SteeringWarning(UserWarning):
    """Steering whose result may mislead: a module that is random in training mode, or a vector from another model."""


_FINGERPRINTS: "weakref.WeakKeyDictionary[Any, tuple[tuple, str]]" = weakref.WeakKeyDictionary()


def model_fingerprint(model: HookedModel) -> str:
    """12 hex digits of the SHA-256 of the parameters' names, shapes and values (as float64, so dtype-free).

    Memoised on the tensors' identities, storages and version counters: free until a weight is
    replaced or edited in place (an optimizer step, ``with torch.no_grad(): w.add_(1)``). An edit
    through ``w.data`` bypasses the version counter and is not seen.
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


def _depth(value: Any, limit: int) -> int:
    """How deeply JSON objects and lists nest in ``value`` (stopping once past ``limit``)."""
    if limit < 0 or not isinstance(value, (dict, list)):
        return 0
    items = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(v, limit - 1) for v in items), default=0)


def _check_meta(meta: Any, source: str, top: bool = True) -> dict[str, Any]:
    if top and _depth(meta, _MAX_META_DEPTH) > _MAX_META_DEPTH:
        raise CheckpointError(f"{source} has metadata nested deeper than {_MAX_META_DEPTH} levels; the file was edited")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{source} has metadata of type {type(meta).__name__}; expected a JSON object")
    for key, types in _META_TYPES.items():
        if key in meta and (not isinstance(meta[key], types) or isinstance(meta[key], bool)):
            raise CheckpointError(
                f"{source} has metadata {key}={meta[key]!r}; expected "
                f"{' or '.join(t.__name__ for t in types)}; the file was edited"
            )
    for key, (expected, ok) in _META_VALUES.items():
        if key in meta and not ok(meta[key]):
            raise CheckpointError(
                f"{source} has metadata {key}={meta[key]!r}; expected {expected}; the file was edited"
            )
    for term in meta.get("terms", []):
        _check_meta(term, source, top=False)
    return meta


class SteeringVector(Mapping[str, Tensor]):
    """A steering vector: hook name -> tensor shaped like one example's activation there, plus provenance.

    ``v1 + v2`` unites hooks (summing shared ones), ``v1 - v2``, ``2.5 * v``, ``-v``, ``.to(...)``,
    ``save`` / ``load``, and ``apply(model)`` (or ``model.steer(v)``). Usually made with
    ``model.steering_vector``.

    Args:
        vectors: hook name -> floating-point tensor (finite) of one example's activation shape
            (``[512]``, or ``[C, H, W]`` for a feature map), at least one.
        meta: provenance (``label``, ``method``, ``model``...), JSON-serialisable; ``label``
            defaults to ``"custom"``.

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
                raise ShapeError(
                    f"steering vector at {name!r} must be a floating-point tensor shaped like one "
                    f"example's activation (e.g. [512] or [C, H, W]), got {desc}"
                )
            if not bool(torch.isfinite(v).all()):
                raise SteeringError(f"steering vector at {name!r} contains NaN or infinite values")
            self._vectors[name] = v.detach()
        self.meta: dict[str, Any] = dict(meta or {})
        self.meta.setdefault("label", "custom")
        self.meta["hooks"] = list(self._vectors)
        self.meta["norm"] = {k: round(float(v.double().norm()), 6) for k, v in self._vectors.items()}
        self._on_model: tuple[Any, ...] = ()  # (key, tensors moved to the model), for repeated apply()

    def __getitem__(self, name: str) -> Tensor:
        try:
            return self._vectors[name]
        except KeyError:
            raise HookNameError(
                f"this steering vector has no hook {name!r}{did_you_mean(name, list(self._vectors))}"
            ) from None

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
                    raise ShapeError(
                        f"cannot combine vectors at {name!r}: shapes {list(out[name].shape)} and {list(v.shape)}"
                    )
                out[name] = out[name] + sign * v.to(out[name].device, out[name].dtype)
                if not bool(torch.isfinite(out[name]).all()):
                    limit = torch.finfo(out[name].dtype).max
                    raise SteeringError(
                        f"({self.label}) {op} ({other.label}) overflows {out[name].dtype} at {name!r} "
                        f"(largest finite {limit:.4g}); use .to(torch.float64)"
                    )
            else:
                out[name] = sign * v
        # provenance stays flat: the leaf vectors' metadata, however long the sum
        terms = [t for m in (self.meta, other.meta) for t in m.get("terms", [m])]
        meta: dict[str, Any] = {"label": f"({self.label}) {op} ({other.label})", "terms": terms}
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

    def to(
        self, device: Union[str, torch.device, torch.dtype, None] = None, dtype: Optional[torch.dtype] = None
    ) -> "SteeringVector":
        """A copy on another device and/or dtype (``v.to(torch.float64)`` works as for tensors)."""
        if isinstance(device, torch.dtype):
            device, dtype = None, device
        if dtype is not None:
            check_scale_fits(1.0, list(self._vectors.values()), dtype)
        return SteeringVector({k: v.to(device=device, dtype=dtype) for k, v in self._vectors.items()}, self.meta)

    # -- files ------------------------------------------------------------------------
    def save(self, path: Any) -> None:
        """Write the tensors and JSON metadata atomically (loadable with ``weights_only=True``)."""
        try:
            meta = json.dumps(self.meta, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise SteeringError(f"steering vector metadata must be JSON (str, numbers, lists, dicts): {e}") from None
        atomic_save(
            {
                "format": "hookedmlp.steering_vector",
                "version": 1,
                "vectors": {k: v.cpu() for k, v in self._vectors.items()},
                "meta": meta,
            },
            path,
        )

    @classmethod
    def load(cls, path: Any, device: Union[str, torch.device, None] = None) -> "SteeringVector":
        """Load a vector written by ``save``, checking its tensors and metadata; never unpickles code."""
        source = repr(str(path))
        data = safe_load(path, what="steering vector", map_location=device or "cpu")
        if not isinstance(data, dict) or data.get("format") != "hookedmlp.steering_vector" or data.get("version") != 1:
            raise CheckpointError(
                f"{source} is not a hookedmlp steering vector (version 1); save one with SteeringVector.save"
            )
        try:
            meta = json.loads(data["meta"])
        except (KeyError, TypeError, ValueError, RecursionError) as e:
            raise CheckpointError(
                f"{source} has unreadable metadata ({type(e).__name__}); re-save the vector"
            ) from None
        vectors = data.get("vectors")
        if not isinstance(vectors, dict) or not all(isinstance(k, str) for k in vectors):
            raise CheckpointError(
                f"{source} needs a dict of vectors keyed by hook name, got {type(vectors).__name__}; "
                "the file is corrupt or was edited"
            )
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
                raise HookNameError(
                    f"steering vector has hook {name!r}, which this model "
                    f"lacks{did_you_mean(name, list(model.hook_dict))}"
                )
            check_example_shape(v, model, name, "steering vector")
            if dtype is not None:
                check_scale_fits(coeff, [v], dtype)
            t = v.to(device=device, dtype=dtype)
            moved[name] = t * coeff if coeff != 1.0 else t
        self._on_model = (key, moved)
        return moved

    def apply(self, model: HookedModel, coeff: float = 1.0) -> HookContext:
        """Context manager adding ``coeff * self`` at its hooks; leaving it removes exactly these hooks.

        Warns (``SteeringWarning``) on entry when a module that computes something else in
        training mode (dropout, batch norm) is in training mode, or when the vector was built on
        other weights.

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
            warn_training_mode(model, "steering")
            if fp is not None and fp != (current := model_fingerprint(model)):
                warn(
                    f"steering vector {self.label!r} was built on model {fp}, applied to model {current}",
                    SteeringWarning,
                )

        # check() has matched every name to a hook point: the pairs need no second resolution
        return HookContext.prepared(model, [(name, _Adder(v)) for name, v in vectors.items()], warnings_on_entry)

    def __repr__(self) -> str:
        hooks = ", ".join(f"{k} {list(v.shape)}" for k, v in self._vectors.items())
        parts = [repr(self.label), f"at {hooks}"]
        parts += [
            f"{k}={self.meta[k]}"
            for k in ("method", "exemplar", "data", "n_examples", "coeff", "model")
            if k in self.meta
        ]
        parts.append("norm=" + ", ".join(f"{v:.4g}" for v in self.meta["norm"].values()))
        return f"SteeringVector({', '.join(parts)})"

    def _repr_html_(self) -> str:
        import html

        rows = "".join(
            f"<tr><td><code>{html.escape(k)}</code></td><td>{list(v.shape)}</td>"
            f"<td>{self.meta['norm'][k]:.4g}</td></tr>"
            for k, v in self._vectors.items()
        )
        prov = ", ".join(
            f"{k}: {html.escape(str(self.meta[k]))}"
            for k in ("method", "exemplar", "data", "coeff", "model")
            if k in self.meta
        )
        return (
            f"<table><caption>SteeringVector {html.escape(self.label)}</caption><thead><tr><th>hook</th>"
            f"<th>shape</th><th>norm</th></tr></thead><tbody>{rows}</tbody></table><p>{prov}</p>"
        )


class _Adder:
    """The hook adding one tensor (a class, not a lambda, so each hook holds its own tensor)."""

    __slots__ = ("v",)

    def __init__(self, v: Tensor) -> None:
        self.v = v

    def __call__(self, act: Tensor, hook: Any) -> Tensor:
        return act + self.v


_TRAINING: "weakref.WeakKeyDictionary[Any, tuple[tuple, list[str]]]" = weakref.WeakKeyDictionary()


def warn_training_mode(model: HookedModel, doing: str) -> None:
    """``SteeringWarning`` if a module that computes something else in training mode is in training mode."""
    key = model.structure_key()  # changes with every module's mode: the scan below runs once per change
    memo = _TRAINING.get(model)
    if memo is None or memo[0] != key:
        memo = (key, [n for n in model.training_mode_modules() if model.get_submodule(n).training])
        _TRAINING[model] = memo
    active = memo[1]
    if active:
        kinds = sorted({type(model.get_submodule(n)).__name__ for n in active})
        warn(
            f"{doing} a model in training mode: {', '.join(active)} ({', '.join(kinds)}) compute something else "
            "there (dropout is random, batch norm uses the batch's statistics); call model.eval() first",
            SteeringWarning,
        )


def _side(
    model: HookedModel, x: Any, which: str, hooks: list[str], method: str, exemplar: int, source: Optional[Labelled]
) -> tuple[dict[str, Tensor], int, str]:
    """Mean activation at each hook for a class label (of ``source``) or inputs, with its example count and label."""
    if isinstance(x, Tensor):
        batch = model.as_batch(x)
        if not bool(torch.isfinite(batch).all()):
            raise SteeringError(f"contrast input {which} contains NaN or infinite values; pass finite inputs")
        acts = model.clean_activations(batch, hooks)
        return {k: v.mean(0) for k, v in acts.items()}, batch.shape[0], f"input(n={batch.shape[0]})"
    source = source if source is not None else default_data(model)
    check_class(x, source.n_classes, f"{which} (a class of {source.name}, or input tensors)")
    acts, counts, _ = class_activations(model, [x], hooks, method, exemplar, source)
    return {k: v[0] for k, v in acts.items()}, counts[0], str(x)


def build_steering_vector(
    model: HookedModel,
    a: Any,
    b: Any,
    hook: Union[str, Sequence[str]],
    coeff: float = 1.0,
    method: str = "first",
    exemplar: int = 0,
    data: Any = None,
) -> SteeringVector:
    """``coeff * (act(a) - act(b))`` at ``hook``: the function behind ``model.steering_vector``.

    ``a`` and ``b`` are class labels (int) or input tensors; anything else is refused with a
    message naming the side (annotated ``Any`` so that the message, not a type checker, says so).
    """
    c = check_coeff(coeff)
    method = check_choice(method, METHODS, "method")
    check_int(exemplar, "exemplar", low=0)
    names = [hook] if isinstance(hook, str) else list(hook)
    if not names:
        raise SteeringError("hook is an empty list; pass at least one hook name, e.g. 'layer0.post'")
    hooks = list(dict.fromkeys(n for h in names for n in model.resolve_names(h)))
    labels_used = not (isinstance(a, Tensor) and isinstance(b, Tensor))
    source = None
    if labels_used:
        source = as_labelled(data) if data is not None else default_data(model)
    warn_training_mode(model, "building a steering vector on")
    with torch.no_grad():
        acts_a, n_a, label_a = _side(model, a, "a", hooks, method, exemplar, source)
        acts_b, n_b, label_b = _side(model, b, "b", hooks, method, exemplar, source)
    diffs = {k: acts_a[k] - acts_b[k] for k in hooks}
    check_scale_fits(c, list(diffs.values()), next(iter(diffs.values())).dtype)
    meta: dict[str, Any] = {"label": f"{label_a} - {label_b}", "a": label_a, "b": label_b}
    if source is not None:
        meta.update(method=method, data=source.name)
        if method == "first" and exemplar:
            meta["exemplar"] = exemplar
    meta.update(n_examples=[n_a, n_b], coeff=c, model=model_fingerprint(model))
    return SteeringVector({k: c * v for k, v in diffs.items()}, meta)
