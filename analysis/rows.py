"""Steered logits row by row: each row is one scoring image and one vector, at its own coefficient.

A ``Site`` is where vectors ``[k, *shape]`` are added: a hook point, the model's input (pixel
arithmetic) or its logits (a bias). It holds the unsteered value there for every scoring image
(``base``) and the rest of the network (``suffix``), so a row is ``suffix(base[i] + c v)``.
Rows are vector-major: row ``r`` is vector ``r // n`` on image ``r % n``.

- ``Site.dense(c)``: every row at one coefficient (a grid point), built by broadcasting.
- ``Site.logits(rows, coeff)``: chosen rows, each at its own coefficient (a bisection step),
  so one batched pass serves every image's own critical coefficient.

Rows run in batches of at most ``ROW_ELEMENTS`` activation entries. On a ``HookedMLP`` the
suffix runs only the modules after the hook point (``model(x, start_at=hook)``); on any other
model whose graph is known it is the graph cut's suffix (``hookedmlp.models.cut.Cut``), given
each row's image's externals (a skip connection's input), where every op after the hook point
treats examples on their own; otherwise it is the full pass with the hook's activation
replaced. At a hook point whose activation is the output, and for the bias, a row is
``logits + c v``.
"""

import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from hookedmlp import HookedMLP, HookedRoot
from hookedmlp.models.cut import Cut, graph_view
from hookedmlp_analysis.hook_classes import OUTPUT, affine_next
from hookedmlp_analysis.metrics import ScoringSet

__all__ = ["Site", "hook_site", "input_site", "output_site", "ROW_ELEMENTS"]

# Activation entries per batch of rows: 4 Mi floats (16 MiB); smaller batches pay more in per-call overhead.
ROW_ELEMENTS = 1 << 22

Suffix = Callable[[Tensor, Tensor], Tensor]  # (image rows [r], activations [r, *shape]) -> logits [r, classes]


class Site:
    """Vectors ``[k, *shape]`` added where ``base`` ``[n, *shape]`` is the unsteered value; ``suffix`` finishes."""

    def __init__(self, name: str, base: Tensor, vectors: Tensor, suffix: Suffix, width: int) -> None:
        self.name, self.base, self.vectors, self._suffix, self._width = name, base, vectors, suffix, width
        self.n, self.k = len(base), len(vectors)
        self.rows_per_batch = max(1, ROW_ELEMENTS // max(1, width))

    def with_vectors(self, vectors: Tensor) -> "Site":
        """The same place with other vectors (the unsteered values and the suffix are shared, not recomputed)."""
        return Site(self.name, self.base, vectors, self._suffix, self._width)

    def _batches(self) -> Iterator[tuple[slice, slice]]:
        per = max(1, self.rows_per_batch // self.n)
        images = min(self.n, self.rows_per_batch)
        for v in range(0, self.k, per):
            for i in range(0, self.n, images):
                yield slice(v, v + per), slice(i, i + images)

    def dense(self, coeff: float) -> Tensor:
        """``[k * n, classes]``: every row (vector-major) at coefficient ``coeff``."""
        parts = []
        for vs, im in self._batches():
            x = self.base[im].unsqueeze(0) + coeff * self.vectors[vs].unsqueeze(1)  # a fresh tensor: the suffix's
            image = torch.arange(self.n, device=self.base.device)[im].repeat(len(x))
            parts.append((vs, im, self._suffix(image, x.flatten(0, 1)).view(len(x), x.shape[1], -1)))
        first = parts[0][2]
        out = torch.empty(self.k, self.n, first.shape[-1], dtype=first.dtype, device=first.device)
        for vs, im, logits in parts:
            out[vs, im] = logits
        return out.flatten(0, 1)

    def logits(self, rows: Tensor, coeff: Tensor) -> Tensor:
        """``[len(rows), classes]``: row ``rows[j]`` at coefficient ``coeff[j]``."""
        out = []
        ones = (1,) * (self.vectors.ndim - 1)
        for s in range(0, len(rows), self.rows_per_batch):
            r, c = rows[s : s + self.rows_per_batch], coeff[s : s + self.rows_per_batch]
            image = r % self.n
            x = self.base[image] + c.to(self.vectors.dtype).view(-1, *ones) * self.vectors[r // self.n]
            out.append(self._suffix(image, x))
        return torch.cat(out)


def _width(model: HookedRoot) -> int:
    """The most activation entries one example holds at any hook point (what a row may need at once)."""
    return max(math.prod(s) for s in model.activation_shapes().values())


def hook_site(model: HookedRoot, data: ScoringSet, hook: str, vectors: Tensor) -> Site:
    """Vectors added at ``hook`` (the model evaluated as it is)."""
    if affine_next(model, hook) == OUTPUT:
        return output_site(data, vectors, hook)
    if isinstance(model, HookedMLP):
        acts = model(data.images, stop_at=hook)
        return Site(hook, acts, vectors, lambda i, x: model(x, start_at=hook), _width(model))
    view = graph_view(model)
    if view is not None:
        hooked = bool(model.attached_hooks()) or any(hp._forward_hooks for hp in model.hook_dict.values())
        cut = Cut(view, model.resolve_name(hook), hooked)
        if cut.stackable:  # rows of different images and vectors may share a suffix pass
            acts, *ext = cut.prefix(*data.inputs(model))

            def suffix(i: Tensor, x: Tensor) -> Tensor:
                return cut.suffix(x, *[e[i] if isinstance(e, Tensor) else e for e in ext])

            return Site(hook, acts, vectors, suffix, _width(model))
    acts = model.clean_activations(data.images, [hook])[hook]

    def full(i: Tensor, x: Tensor) -> Tensor:
        with model.hooks(fwd_hooks=[(hook, lambda act, hook: x)]):
            return model(data.images[i])

    return Site(hook, acts, vectors, full, _width(model))


def input_site(model: HookedRoot, data: ScoringSet, vectors: Tensor) -> Site:
    """Vectors ``[k, *input shape]`` added to the input images: pixel arithmetic."""
    return Site("input", model.prepare_input(data.images), vectors, lambda i, x: model(x), _width(model))


def output_site(data: ScoringSet, vectors: Tensor, name: str = "logits") -> Site:
    """Vectors ``[k, classes]`` added to the unsteered logits."""
    return Site(name, data.base, vectors, lambda i, x: x, data.n_classes)
