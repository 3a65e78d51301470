"""SteeringVector: hook name -> tensor, with provenance, arithmetic, files, and ``apply`` as a hook context.

Made by ``model.steering_vector`` (``hookedmlp.steering.contrast``) or from tensors. The
tensors may have any shape per example: ``[512]`` after a Linear, ``[C, H, W]`` in a CNN.
"""

import weakref
from collections.abc import Iterator, Mapping
from typing import Any, Optional, Union

import torch
from torch import Tensor

from hookedmlp.checks import check_coeff, check_scale_fits
from hookedmlp.errors import CheckpointError, HookNameError, ShapeError, SteeringError, did_you_mean, warn
from hookedmlp.files.vector_file import read_vector_file, write_vector_file
from hookedmlp.hooks.context import HookContext
from hookedmlp.models import facts
from hookedmlp.models.facts import check_example_shape
from hookedmlp.steering.provenance import SteeringWarning, model_fingerprint, warn_training_mode

__all__ = ["SteeringVector"]


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
        write_vector_file(self._vectors, self.meta, path)

    @classmethod
    def load(cls, path: Any, device: Union[str, torch.device, None] = None) -> "SteeringVector":
        """Load a vector written by ``save``, checking its tensors and metadata; never unpickles code."""
        vectors, meta = read_vector_file(path, device)
        try:
            return cls(vectors, meta)
        except (ShapeError, SteeringError) as e:
            raise CheckpointError(f"{str(path)!r} holds an invalid steering vector: {e}") from None

    # -- applying ----------------------------------------------------------------------
    def check(self, model: Any, coeff: float = 1.0) -> dict[str, Tensor]:
        """The tensors on ``model``'s device and dtype, checked against its hook points; scaled by ``coeff``."""
        ref = facts.reference_tensor(model)
        device, dtype = (ref.device, ref.dtype) if ref is not None else (None, None)
        key = (weakref.ref(model), facts.structure_key(model), device, dtype, coeff)
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

    def apply(self, model: Any, coeff: float = 1.0) -> HookContext:
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

    def _source(self) -> Optional[str]:
        """Where a class contrast's exemplars came from, in words (None for inputs, sums and custom vectors)."""
        m = self.meta
        if not {"a", "b", "data", "method", "n_examples"} <= set(m):
            return None
        settings = f"method={m['method']}" + (f", exemplar={m['exemplar']}" if m.get("exemplar") else "")
        if m["method"] == "mean":
            n_a, n_b = m["n_examples"]
            which = f"the mean of {n_a} examples of {m['a']} and {n_b} of {m['b']}"
        else:
            nth = f"example {m['exemplar'] + 1}" if m.get("exemplar") else "the first example"
            which = f"{nth} of {m['a']} and of {m['b']}"
        return f"from {which} in {m['data']} ({settings})"

    def __repr__(self) -> str:
        hooks = ", ".join(f"{k} {list(v.shape)}" for k, v in self._vectors.items())
        parts = [repr(self.label), f"at {hooks}"]
        source = self._source()
        keys = ("coeff", "model") if source else ("method", "exemplar", "data", "n_examples", "coeff", "model")
        parts += ([source] if source else []) + [f"{k}={self.meta[k]}" for k in keys if k in self.meta]
        parts.append("norm=" + ", ".join(f"{v:.4g}" for v in self.meta["norm"].values()))
        return f"SteeringVector({', '.join(parts)})"

    def _repr_html_(self) -> str:
        import html

        rows = "".join(
            f"<tr><td><code>{html.escape(k)}</code></td><td>{list(v.shape)}</td>"
            f"<td>{self.meta['norm'][k]:.4g}</td></tr>"
            for k, v in self._vectors.items()
        )
        source = self._source()
        keys = ("coeff", "model") if source else ("method", "exemplar", "data", "coeff", "model")
        prov = ", ".join(
            ([html.escape(source)] if source else [])
            + [f"{k}: {html.escape(str(self.meta[k]))}" for k in keys if k in self.meta]
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
        if act.shape[1:] != self.v.shape:  # (a model that knows its shapes was checked before; this is for the rest)
            raise ShapeError(
                f"steering vector at {hook.name!r} has shape {list(self.v.shape)}, but one example's activation "
                f"there is {list(act.shape[1:])}; build the vector on this model"
            )
        return act + self.v
