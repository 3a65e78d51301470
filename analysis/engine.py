"""Evaluate many steering vectors on one labelled set, fast.

The plain way runs one full hooked forward pass per vector. Here:

1. *Folding.* Adding ``v`` just before an affine layer ``L`` equals adding
   ``L(v) - L(0) = W v`` just after it, so each vector is carried forward through
   every Linear (and eval-mode Dropout) that follows its hook, up to the next
   nonlinearity or the logits.
2. *Prefix once.* The activation at each folded hook is computed once for the whole
   set with ``forward(stop_at=...)``; only the suffix runs per vector
   (``forward(start_at=...)``, or, where nothing is attached after the hook and the
   suffix is Linear/ReLU only, the same modules into reused buffers), several vectors
   stacked into one batch, in chunks of at most ``chunk_rows`` rows. A vector folded
   onto the logits costs one add.
3. *No repeats.* Vectors that fold to the same hook with the same values (the same
   tensor seen as ``layer{i}.post`` and ``layer{i+1}.pre``, or a vector before and
   after a Linear) are evaluated once; zero vectors reuse the unsteered logits.

Only hookedmlp's public API is used.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from hookedmlp import HookedMLP

# Rows per suffix pass: bounds the preallocated buffers (16,384 x 512 floats = 32 MiB each).
# Larger chunks measured no faster on the study's grid (bench_grid).
CHUNK_ROWS = 16_384

__all__ = ["Contrast", "METRICS", "CHUNK_ROWS", "fold", "evaluate_contrasts", "evaluate_plain", "unsteered_metrics"]

METRICS = ("loss", "flip_rate", "accuracy_other", "kl")


@dataclasses.dataclass
class Contrast:
    """One intervention to evaluate: add ``vector`` at ``hook``; ``a``/``b`` label the contrast.

    Args:
        hook: the hook name where the vector is added.
        vector: the vector, ``[width of hook]``.
        a: the digit the vector pushes towards (for ``flip_rate``).
        b: the digit left out of the scores (``loss`` etc. are on the other digits).

    Examples:
        >>> import torch
        >>> from analysis.engine import Contrast
        >>> c = Contrast("layer0.post", torch.zeros(512), a=3, b=1)
        >>> c.hook, c.a, c.b
        ('layer0.post', 3, 1)
    """

    hook: str
    vector: Tensor
    a: int
    b: int


def fold(model: HookedMLP, hook: str, vectors: Float[Tensor, "k d"]) -> tuple[str, Float[Tensor, "k d_folded"]]:
    """Carry vectors added at ``hook`` forward through the affine modules that follow it.

    ``layer{i}.pre`` is first read as ``layer{i-1}.post`` (the same tensor).
    Dropout counts as the identity only in eval mode. Folding never moves a vector
    past a hook point that has forward hooks attached (a clamp, patch or ablation
    there must see the steered activation), so the result always equals adding the
    vector at ``hook`` itself.

    Args:
        model: the model.
        hook: where the vectors are added.
        vectors: ``[k, width of hook]``.

    Returns:
        ``(hook_reached, folded)``: the last hook reached before a nonlinearity (or
            the logits) and the equivalent vectors there, ``[k, width there]``.

    Examples:
        >>> import torch
        >>> from hookedmlp import HookedMLP, MLPConfig
        >>> _ = torch.manual_seed(0)
        >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2)).eval()
        >>> from analysis.engine import fold
        >>> hook, folded = fold(model, "layer1.post", torch.ones(1, 3))
        >>> hook, folded.shape
        ('layer2.post', torch.Size([1, 2]))
        >>> torch.allclose(folded, torch.ones(1, 3) @ model.layer2.module.weight.T)
        True
    """
    names = model.hook_names
    pos = names.index(hook)

    def free(p: int) -> bool:
        return not model.hook_dict[names[p]].fwd_hooks

    if pos % 2 == 0 and pos > 0 and free(pos):  # layer{i}.pre carries the tensor of layer{i-1}.post
        pos -= 1
    nxt = pos // 2 + (pos % 2)  # the next module to run after this hook point
    while nxt < model.n_layers:
        spec = model.specs[nxt]
        passed = range(pos + 1, 2 * nxt + 2)  # the hook points the vector would move past
        if not all(free(p) for p in passed):
            break
        if spec.kind == "linear":
            vectors = vectors @ getattr(model, f"layer{nxt}").module.weight.T
        elif not (spec.kind == "dropout" and not model.training):
            break
        pos = 2 * nxt + 1
        nxt += 1
    return names[pos], vectors


def _metrics(logits: Float[Tensor, "k n c"], labels: Int[Tensor, " n"], base_logp: Float[Tensor, "n c"],
             a: Int[Tensor, " k"], b: Int[Tensor, " k"], n_digits: int) -> dict[str, Tensor]:
    """The study's loss (without b) and our additions, per vector."""
    k, n, c = logits.shape
    logp = F.log_softmax(logits, dim=-1)
    ce = -logp.gather(2, labels.view(1, n, 1).expand(k, n, 1)).squeeze(2)  # [k, n]
    keep = labels.unsqueeze(0) != b.unsqueeze(1)  # [k, n]: test set cleaned of b
    is_b = ~keep
    pred = logits.argmax(-1)
    kl = (base_logp.exp() * (base_logp - logp)).sum(-1)  # KL(unsteered || steered) per image
    n_keep = keep.sum(1).clamp(min=1)
    onehot = F.one_hot(labels, n_digits).to(logits.dtype)  # [n, digits]
    mean_logits = torch.einsum("nd,knc->kdc", onehot, logits) / onehot.sum(0).clamp(min=1).view(1, -1, 1)
    return {
        "loss": (ce * keep).sum(1) / n_keep,
        "flip_rate": ((pred == a.unsqueeze(1)) & is_b).sum(1) / is_b.sum(1).clamp(min=1),
        "accuracy_other": ((pred == labels) & keep).sum(1) / n_keep,
        "kl": (kl * keep).sum(1) / n_keep,
        "distributions": F.softmax(mean_logits, dim=-1),  # [k, digit, class]
    }


def unsteered_metrics(model: HookedMLP, images: Tensor, labels: Tensor, digits: Sequence[int]) -> dict[str, np.ndarray]:
    """Metrics of the unsteered model for each ``b`` in ``digits`` (the study's "Normal" row).

    Args:
        model: the model.
        images: the scoring set's inputs.
        labels: their integer labels.
        digits: the values of ``b`` (each left out of the set in turn).

    Returns:
        ``{metric: array}`` for ``METRICS`` and ``distributions``, one entry per digit.

    Examples:
        >>> import torch
        >>> from hookedmlp import HookedMLP, MLPConfig
        >>> _ = torch.manual_seed(0)
        >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2)).eval()
        >>> from analysis.engine import unsteered_metrics
        >>> x, y = torch.rand(6, 4), torch.tensor([0, 1, 0, 1, 0, 1])
        >>> m = unsteered_metrics(model, x, y, [0, 1])
        >>> sorted(m), m["loss"].shape
        (['accuracy_other', 'distributions', 'flip_rate', 'kl', 'loss'], (2,))
    """
    with torch.no_grad():
        logits = model(images)
    k = len(digits)
    b = torch.tensor(list(digits), device=logits.device)
    m = _metrics(logits.unsqueeze(0).expand(k, -1, -1), labels, F.log_softmax(logits, -1), b, b, int(logits.shape[-1]))
    return {name: v.cpu().numpy() for name, v in m.items()}


def evaluate_contrasts(model: HookedMLP, images: Tensor, labels: Tensor, contrasts: Sequence[Contrast],
                       chunk_rows: int = CHUNK_ROWS, progress: bool = False) -> dict[str, np.ndarray]:
    """Metrics for every contrast: arrays with one entry per contrast (see ``METRICS``).

    ``distributions`` has shape ``[len(contrasts), n_classes, n_classes]``: for each
    digit, softmax of the steered model's mean logits over that digit's images.

    Args:
        model: the model (evaluated as it is: put it in eval mode first).
        images: the scoring set's inputs ``[n, d_in]``.
        labels: their integer labels ``[n]``.
        contrasts: the interventions, each evaluated on its own.
        chunk_rows: at most this many rows per suffix pass (bounds memory; at least one
            vector per pass).
        progress: show a tqdm bar.

    Returns:
        ``{metric: array}`` for ``METRICS`` (``[len(contrasts)]`` each) and
            ``distributions``.

    Raises:
        ValueError: no contrasts, or ``chunk_rows`` below 1.

    Examples:
        >>> import torch
        >>> from hookedmlp import HookedMLP, MLPConfig
        >>> _ = torch.manual_seed(0)
        >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2)).eval()
        >>> from analysis.engine import Contrast, evaluate_contrasts
        >>> x, y = torch.rand(6, 4), torch.tensor([0, 1, 0, 1, 0, 1])
        >>> contrasts = [Contrast("layer0.post", torch.ones(3), 1, 0),
        ...              Contrast("layer2.post", torch.tensor([-9.0, 9.0]), 1, 0)]
        >>> m = evaluate_contrasts(model, x, y, contrasts)
        >>> m["loss"].shape, m["distributions"].shape
        ((2,), (2, 2, 2))
        >>> float(m["flip_rate"][1])  # +9 on class 1's logit: every 0 becomes a 1
        1.0
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive int, got {chunk_rows}")
    if not contrasts:
        raise ValueError("no contrasts to evaluate; pass at least one Contrast")
    labels = labels.to(images.device).long()
    with torch.no_grad():
        base = model(images)
        base_logp = F.log_softmax(base, -1)
        n, n_classes = base.shape
        # Fold every vector; group by folded hook; drop repeats.
        unique: dict[str, list[tuple[Tensor, int, int]]] = {}
        where: list[tuple[str, int]] = []
        for c in contrasts:
            hook, v = fold(model, c.hook, c.vector.unsqueeze(0))
            group = unique.setdefault(hook, [])
            tol = 1e-5 * max(1.0, float(v.abs().max()))  # float rounding of an exact identity
            for i, (u, a, b) in enumerate(group):
                if a == c.a and b == c.b and torch.allclose(u, v[0], rtol=0, atol=tol):
                    where.append((hook, i))
                    break
            else:
                where.append((hook, len(group)))
                group.append((v[0], c.a, c.b))
        results: dict[str, list[dict[str, Tensor]]] = {}
        total = sum(len(g) for g in unique.values())
        bar = tqdm(total=total, desc="steering", unit="vector", disable=not progress)
        for hook, group in unique.items():
            vecs = torch.stack([g[0] for g in group])
            a = torch.tensor([g[1] for g in group], device=base.device)
            b = torch.tensor([g[2] for g in group], device=base.device)
            out: list[dict[str, Tensor]] = [dict() for _ in group]
            zero = (vecs == 0).all(1)
            todo = (~zero).nonzero().squeeze(1).tolist()
            at_logits = hook == model.hook_names[-1]
            acts = None if at_logits or not todo else model(images, stop_at=hook)
            per_chunk = max(1, chunk_rows // n)
            suffix = _Suffix(model, hook, per_chunk * n, images.dtype, images.device)
            batches = [[i] for i in zero.nonzero().squeeze(1).tolist()] + [todo[i:i + per_chunk] for i in range(0, len(todo), per_chunk)]
            for idx in batches:
                if zero[idx[0]]:
                    logits = base.unsqueeze(0)
                elif at_logits:
                    logits = base.unsqueeze(0) + vecs[idx].unsqueeze(1)
                else:
                    x = suffix.input(len(idx) * n).view(len(idx), n, -1)
                    torch.add(acts.unsqueeze(0), vecs[idx].unsqueeze(1), out=x)
                    logits = suffix(x.view(len(idx) * n, -1)).view(len(idx), n, n_classes)
                m = _metrics(logits, labels, base_logp, a[idx], b[idx], n_classes)
                for j, i in enumerate(idx):
                    out[i] = {name: val[j] for name, val in m.items()}
                bar.update(len(idx))
            results[hook] = out
        bar.close()
    stacked = {name: np.stack([results[h][i][name].cpu().numpy() for h, i in where]) for name in (*METRICS, "distributions")}
    return stacked


class _Suffix:
    """Runs the modules after ``hook`` on a batch of our own, reusing buffers across calls.

    Fresh 20 MB intermediates per vector would be returned to the OS and page-faulted
    again each time; preallocated outputs and in-place activations avoid that (62 -> 40
    ms per vector on the study's grid). Used only where nothing is attached to the hook
    points it skips and every module is a Linear, a ReLU or an eval-mode Dropout;
    otherwise it falls back to ``model(x, start_at=hook)``.
    """

    def __init__(self, model: HookedMLP, hook: str, rows: int, dtype: torch.dtype, device: torch.device) -> None:
        names = model.hook_names
        pos = names.index(hook)
        self.model, self.hook = model, hook
        self.modules = [getattr(model, f"layer{j}").module for j in range(pos // 2 + pos % 2, model.n_layers)]
        free = not any(model.hook_dict[n].fwd_hooks for n in names[pos + 1:])
        simple = all(isinstance(m, (torch.nn.Linear, torch.nn.ReLU)) or (isinstance(m, torch.nn.Dropout) and not model.training)
                     for m in self.modules)
        self.fast = free and simple
        width = model.activation_width(hook)
        self.buffers = [torch.empty(rows, width, dtype=dtype, device=device)]
        if self.fast:
            self.buffers += [torch.empty(rows, m.out_features, dtype=dtype, device=device)
                             for m in self.modules if isinstance(m, torch.nn.Linear)]

    def input(self, rows: int) -> Tensor:
        """A buffer for ``rows`` input rows (overwritten by the next call)."""
        return self.buffers[0][:rows]

    def __call__(self, x: Tensor) -> Tensor:
        if not self.fast:
            return self.model(x, start_at=self.hook)
        rows, k = x.shape[0], 1
        for m in self.modules:
            if isinstance(m, torch.nn.Linear):
                out = self.buffers[k][:rows]
                k += 1
                if m.bias is None:
                    torch.mm(x, m.weight.T, out=out)
                else:
                    torch.addmm(m.bias, x, m.weight.T, out=out)
                x = out
            elif isinstance(m, torch.nn.ReLU):
                x.relu_()
        return x


def evaluate_plain(model: HookedMLP, images: Tensor, labels: Tensor, contrasts: Sequence[Contrast]) -> dict[str, np.ndarray]:
    """The plain way, for reference and benchmarks: one full hooked forward pass per contrast.

    Same metrics and layout as ``evaluate_contrasts``.

    Args:
        model: the model (evaluated as it is).
        images: the scoring set's inputs ``[n, d_in]``.
        labels: their integer labels ``[n]``.
        contrasts: the interventions, each evaluated on its own.

    Returns:
        ``{metric: array}`` as from ``evaluate_contrasts``.

    Raises:
        ValueError: no contrasts.

    Examples:
        >>> import torch
        >>> from hookedmlp import HookedMLP, MLPConfig
        >>> _ = torch.manual_seed(0)
        >>> model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2)).eval()
        >>> import numpy as np
        >>> from analysis.engine import Contrast, evaluate_contrasts, evaluate_plain
        >>> x, y = torch.rand(6, 4), torch.tensor([0, 1, 0, 1, 0, 1])
        >>> contrasts = [Contrast("layer0.pre", torch.ones(4), 1, 0)]
        >>> plain = evaluate_plain(model, x, y, contrasts)
        >>> fast = evaluate_contrasts(model, x, y, contrasts)
        >>> bool(np.allclose(plain["loss"], fast["loss"], atol=1e-5))
        True
    """
    if not contrasts:
        raise ValueError("no contrasts to evaluate; pass at least one Contrast")
    labels = labels.to(images.device).long()
    out: list[dict[str, Tensor]] = []
    with torch.no_grad():
        base_logp = F.log_softmax(model(images), -1)
        for c in contrasts:
            v = c.vector.to(images.device)
            with model.hooks(fwd_hooks=[(c.hook, lambda act, hook, v=v: act + v)]):
                logits = model(images)
            a = torch.tensor([c.a], device=images.device)
            b = torch.tensor([c.b], device=images.device)
            m = _metrics(logits.unsqueeze(0), labels, base_logp, a, b, int(logits.shape[-1]))
            out.append({name: val[0] for name, val in m.items()})
    return {name: np.stack([o[name].cpu().numpy() for o in out]) for name in (*METRICS, "distributions")}
