"""PatchResult: the metric after each patch (exact or estimated), labelled by hook point and unit, and its file."""

import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple, Union

import torch
from jaxtyping import Float
from torch import Tensor

from hookedmlp.checks import check_choice, check_int, check_json
from hookedmlp.errors import CheckpointError, HookNameError, UsageError, did_you_mean
from hookedmlp.files.safetensors_file import format_meta, hookedmlp_meta, read_safetensors, write_safetensors
from hookedmlp.patching.pairs import DIRECTIONS, PER

__all__ = ["PatchResult", "Entry", "KINDS", "FORMAT"]

KINDS = ("activation", "attribution", "integrated_gradients")
FORMAT = "hookedmlp.patch_result"
_FIELDS = ("hooks", "grids", "per", "kind", "direction", "metric", "base", "source", "n", "engine", "model")


class Entry(NamedTuple):
    """One entry of a ``PatchResult``: where it patches, the metric after the patch, and its change from ``base``."""

    hook: str
    unit: tuple[int, ...]
    value: float
    effect: float


@dataclasses.dataclass
class PatchResult:
    """The metric after patching each entry (a hook point, a unit or a position of it), in one labelled tensor.

    ``values[i]`` is the metric of the ``base`` run (the corrupt inputs for
    ``direction="denoise"``) with entry ``i`` patched from the ``source`` run; ``effect`` is
    ``values - base``. Entries run hook by hook in ``hooks`` order, each hook's entries in row-major
    order of its ``grids`` shape (``()`` for ``per="hook"``, ``(units,)`` for ``per="unit"``...).
    For ``kind="attribution"`` (or ``"integrated_gradients"``) the values are estimates.

    Attributes:
        values: ``[entries]`` float64.
        hooks: the hook points, in forward order.
        grids: each hook's entries' shape.
        per, kind, direction: how it was computed.
        metric: the metric's name.
        base: the metric of the unpatched base run.
        source: the metric of the run the patched values come from.
        n: the number of clean/corrupt pairs.
        engine: how it was computed (graph cut, folding, full passes...).
        model: the fingerprint of the model's weights.
    """

    values: Tensor  # [entries] float64
    hooks: list[str]
    grids: list[tuple[int, ...]]
    per: str
    kind: str
    direction: str
    metric: str
    base: float
    source: float
    n: int
    engine: str = ""
    model: str = ""

    def __post_init__(self) -> None:
        self.grids = [tuple(int(s) for s in g) for g in self.grids]
        expected = sum(math.prod(g) for g in self.grids)
        if len(self.hooks) != len(self.grids) or self.values.shape != (expected,):
            raise UsageError(
                f"a PatchResult of {len(self.hooks)} hooks with entries {self.grids} needs values [{expected}], got "
                f"{list(self.values.shape)} values and {len(self.grids)} grids"
            )

    # -- reading it -----------------------------------------------------------------------
    @property
    def effect(self) -> Tensor:
        """``values - base`` (``[entries]``): how far each patch moves the metric."""
        return self.values - self.base

    def normalized(self) -> Float[Tensor, " entries"]:
        """``(values - base) / (source - base)``: 0 where a patch does nothing, 1 where it recovers the source run."""
        if self.source == self.base:
            raise UsageError(
                f"the clean and corrupt runs both score {self.base:g}: there is no difference to share out"
            )
        return self.effect / (self.source - self.base)

    def _span(self, hook: str) -> tuple[int, int]:
        if hook not in self.hooks:
            raise HookNameError(f"this result has no hook {hook!r}{did_you_mean(hook, self.hooks)}")
        i = self.hooks.index(hook)
        start = sum(math.prod(g) for g in self.grids[:i])
        return start, start + math.prod(self.grids[i])

    def by_hook(self, hook: str, what: str = "effect") -> Tensor:
        """The ``effect`` (or ``values``) of ``hook``'s entries, in the shape of its grid."""
        start, end = self._span(hook)
        chosen = getattr(self, check_choice(what, ("effect", "values"), "what"))
        return chosen[start:end].view(self.grids[self.hooks.index(hook)])

    def select(self, hooks: Union[str, Sequence[str]]) -> "PatchResult":
        """The result at ``hooks`` only (a hook name, or a list of them in any order)."""
        names = [hooks] if isinstance(hooks, str) else list(hooks)
        spans = [self._span(h) for h in names]
        return dataclasses.replace(
            self,
            values=torch.cat([self.values[a:b] for a, b in spans]),
            hooks=names,
            grids=[self.grids[self.hooks.index(h)] for h in names],
        )

    @property
    def index(self) -> list[tuple[str, tuple[int, ...]]]:
        """``(hook, unit)`` of every entry, in order (``unit`` is ``()`` for ``per="hook"``)."""
        return [(h, u) for h, g in zip(self.hooks, self.grids) for u in _units(g)]

    def matrix(self, what: str = "effect") -> Tensor:
        """``[hooks, most entries]``: each hook's entries in a row, NaN past its own count (for a heatmap)."""
        width = max(math.prod(g) for g in self.grids)
        out = torch.full((len(self.hooks), width), math.nan, dtype=torch.float64)
        for i, h in enumerate(self.hooks):
            row = self.by_hook(h, what).reshape(-1)
            out[i, : len(row)] = row
        return out

    def top(self, k: int = 10) -> list[Entry]:
        """The ``k`` entries whose patch moves the metric most (largest ``|effect|``), largest first."""
        check_int(k, "k", low=1)
        order = torch.argsort(self.effect.abs(), descending=True, stable=True)[:k].tolist()
        index = self.index
        return [Entry(*index[i], float(self.values[i]), float(self.effect[i])) for i in order]

    def summary(self, k: int = 10) -> str:
        """A header (what was patched, the base and source metrics, the engine) and the ``k`` largest effects."""
        what = {"activation": "activation patching", "attribution": "attribution patching (estimates)"}.get(
            self.kind, "integrated-gradients attribution (estimates)"
        )
        lines = [
            f"{what}, per {self.per}, {self.direction}, {self.n} pairs; metric {self.metric}: base run "
            f"{self.base:.4g}, source run {self.source:.4g}",
            f"  {'hook':<24} {'unit':<12} {'metric':>10} {'effect':>10}",
        ]
        for e in self.top(k):
            unit = ",".join(map(str, e.unit)) or "all"
            lines.append(f"  {e.hook:<24} {unit:<12} {e.value:>10.4g} {e.effect:>+10.4g}")
        if self.engine:
            lines.append(f"  ({self.engine})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        entries = sum(math.prod(g) for g in self.grids)
        return (
            f"PatchResult({self.kind}, per={self.per}, {self.direction}, metric={self.metric}, "
            f"{len(self.hooks)} hooks, {entries} entries, base={self.base:.4g}, source={self.source:.4g})"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data: every field, ``values`` as a list of floats."""
        return {"values": self.values.tolist(), **{f: _plain(getattr(self, f)) for f in _FIELDS}}

    # -- files --------------------------------------------------------------------------------
    def save(self, path: Any) -> None:
        """Write the result atomically as a safetensors file: ``values``, and the rest as JSON metadata."""
        text = check_json({f: _plain(getattr(self, f)) for f in _FIELDS}, "patch result metadata", UsageError)
        write_safetensors({"values": self.values.detach().double().cpu()}, hookedmlp_meta(FORMAT, text), path)

    @classmethod
    def load(cls, path: Any) -> "PatchResult":
        """A result ``save`` wrote (sizes checked before anything is read); ``CheckpointError`` for anything else."""
        source = f"patch result {str(path)!r}"
        tensors, header = read_safetensors(path, "patch result")
        fields = _checked_fields(format_meta(header, FORMAT, source), source)
        values = tensors.get("values")
        if set(tensors) != {"values"} or values.dtype != torch.float64 or values.ndim != 1:
            raise CheckpointError(
                f"{source} holds the tensors {sorted(tensors)[:4]}; expected one float64 vector 'values'; the file is "
                "corrupt or was edited"
            )
        try:
            return cls(values, **fields)
        except UsageError as e:  # the values do not fit the grids
            raise CheckpointError(
                f"{source} holds an invalid result ({e}); the file is corrupt or was edited"
            ) from None


def _units(grid: tuple[int, ...]) -> list[tuple[int, ...]]:
    return list(itertools.product(*map(range, grid)))


def _plain(value: Any) -> Any:
    return [list(g) for g in value] if isinstance(value, list) and value and isinstance(value[0], tuple) else value


def _checked_fields(meta: dict[str, Any], source: str) -> dict[str, Any]:
    """The metadata's fields, each of the type and value ``PatchResult`` takes (``CheckpointError`` naming one not)."""
    strings = ("per", "kind", "direction", "metric", "engine", "model")
    checks: dict[str, Any] = {
        "hooks": lambda v: isinstance(v, list) and all(isinstance(h, str) for h in v),
        "grids": lambda v: isinstance(v, list) and all(_is_grid(g) for g in v),
        "base": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
        "n": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        **{f: lambda v: isinstance(v, str) for f in strings},
    }
    checks["source"] = checks["base"]
    choices = {"per": PER, "kind": KINDS, "direction": DIRECTIONS}
    for f in _FIELDS:
        if f not in meta or not checks[f](meta[f]) or meta[f] not in choices.get(f, (meta[f],)):
            raise CheckpointError(
                f"{source} has metadata {f}={meta.get(f, 'missing')!r:.60}, which a patch result never has; the file "
                "is corrupt or was edited"
            )
    return {f: [tuple(g) for g in meta[f]] if f == "grids" else meta[f] for f in _FIELDS}


def _is_grid(g: Any) -> bool:
    return (
        isinstance(g, list)
        and len(g) <= 8
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in g)
    )
