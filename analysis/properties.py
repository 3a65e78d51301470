"""Properties of a representation that may predict steerability, per hook class and pair, measured without steering.

For a model, a hook class (``analysis.hook_classes``) and a pair ``(a, b)`` with vector ``v`` (the
difference of the two classes' exemplar activations, as ``analysis.steerability`` adds it), on a
labelled property set (its images of every class; never the scoring set):

- ``d_prime``: the separation of a's and b's images along ``v``, ``(m_a - m_b) / sqrt((s_a^2 + s_b^2) / 2)``
  of their projections on ``v`` (means ``m``, variances ``s^2`` with ``n - 1``);
- ``typicality``: the cosine of ``v`` with the class-mean difference ``mu_a - mu_b``;
- ``coherence``: the mean pairwise cosine of per-example differences ``h(a_i) - h(b_i)`` (the i-th
  image of a with the i-th of b);
- ``probe``: the cross-validated accuracy of a linear probe telling a from b (``hookedmlp.linear_probe``);
- ``jacobian_share``: the cosine of ``J v`` (the logits' first-order change, centred over the
  classes, since a shift of every logit changes nothing) with ``e_a - e_b``, averaged over b's images;
- ``linearity``: how well ``J v`` predicts the actual logit change at coefficient 1 on b's images,
  ``1 - sum ||dz - J v||^2 / sum ||dz||^2`` of the centred changes (1: exactly linear);
- ``rel_size``: ``||v|| / E||h||`` over the property set;
- ``eff_dim``: the participation ratio ``tr(C)^2 / tr(C^2)`` of the covariance ``C`` of all the
  property set's activations (one per hook class);
- ``depth``: the class's relative depth (0 first, 1 last);
- ``test_loss`` and ``margin`` (the mean of the true logit minus the largest other), per model,
  on its test set: covariates.

Statistics are taken at the class's first hook point (where ``analysis.steerability`` takes norms);
the Jacobian at its last (where vectors are added): the same map for every member of a class.
"""

import dataclasses
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hookedmlp import HookedRoot, linear_probe
from hookedmlp.checks import check_class, check_int
from hookedmlp.data.labelled import check_examples
from hookedmlp.errors import ConfigError, UsageError
from hookedmlp.stats import ClassStatistics
from hookedmlp_analysis.additions import class_vectors, source_data
from hookedmlp_analysis.hook_classes import HookClass, hook_classes
from hookedmlp_analysis.metrics import ScoringSet
from hookedmlp_analysis.rows import hook_site
from hookedmlp_analysis.selectivity import off_diagonal_pairs

__all__ = [
    "PROPERTIES",
    "PAIR_PROPERTIES",
    "DESCRIPTIONS",
    "ModelProperties",
    "model_properties",
    "participation_ratio",
]

# every property and what it measures, in one line each (the study's table prints these)
DESCRIPTIONS = {
    "d_prime": "d' of a's and b's images along v",
    "typicality": "cosine of v with the class-mean difference",
    "coherence": "mean pairwise cosine of per-example differences",
    "probe": "cross-validated accuracy of a linear probe, a vs b",
    "jacobian_share": "cosine of J v with e_a - e_b",
    "linearity": "how well J v predicts the logit change at c = 1",
    "rel_size": "||v|| / E||h||",
    "eff_dim": "participation ratio of the activations' covariance",
    "depth": "relative depth of the hook class",
    "test_loss": "the model's test loss (a covariate)",
    "margin": "the model's mean test margin (a covariate)",
}
PAIR_PROPERTIES = ("d_prime", "typicality", "coherence", "probe", "jacobian_share", "linearity", "rel_size")
PROPERTIES = tuple(DESCRIPTIONS)


@dataclasses.dataclass
class ModelProperties:
    """Every property of one model: ``values[class label][property]`` ``[pair]`` (per class and model ones repeated)."""

    pairs: list[tuple[int, int]]
    classes: list[dict[str, Any]]  # label, role, depth, hooks
    values: dict[str, dict[str, np.ndarray]]
    test_loss: float
    margin: float

    def table(self) -> list[dict[str, Any]]:
        """One row per (hook class, pair): ``site`` (the class's label, as ``Steerability.table()`` names it),
        ``role``, ``a``, ``b`` and every property of ``PROPERTIES``."""
        return [
            {
                "site": c["label"],
                "role": c["role"],
                "a": a,
                "b": b,
                **{k: float(v[p]) for k, v in self.values[c["label"]].items()},
            }
            for c in self.classes
            for p, (a, b) in enumerate(self.pairs)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "pairs": [list(p) for p in self.pairs],
            "classes": self.classes,
            "values": {c: {k: v.tolist() for k, v in d.items()} for c, d in self.values.items()},
            "test_loss": self.test_loss,
            "margin": self.margin,
        }

    @classmethod
    def from_dict(cls, data: Any) -> "ModelProperties":
        if not isinstance(data, dict) or "values" not in data:
            raise UsageError("not saved ModelProperties: expected the keys pairs, classes, values, test_loss, margin")
        values = {c: {k: np.asarray(v, dtype=np.float64) for k, v in d.items()} for c, d in data["values"].items()}
        return cls([tuple(p) for p in data["pairs"]], data["classes"], values, data["test_loss"], data["margin"])


def participation_ratio(x: Tensor) -> float:
    """``tr(C)^2 / tr(C^2)`` of the covariance ``C`` of the rows of ``x`` ``[n, d]`` (from the smaller Gram matrix)."""
    xc = x - x.mean(0)
    gram = xc.T @ xc if xc.shape[1] <= xc.shape[0] else xc @ xc.T  # the same nonzero spectrum
    total = float(torch.diagonal(gram).sum())
    return total**2 / float((gram * gram).sum()) if total > 0 else 0.0


def _cos(u: Tensor, v: Tensor) -> Tensor:
    """Row-wise cosine; 0 where either row is zero."""
    norms = u.norm(dim=-1) * v.norm(dim=-1)
    return torch.where(norms > 0, (u * v).sum(-1) / norms.clamp(min=1e-300), torch.zeros_like(norms))


def _statistics(
    x: Tensor, labels: Tensor, v: Tensor, stats: ClassStatistics, pairs: list[tuple[int, int]]
) -> dict[str, np.ndarray]:
    """``d_prime``, ``typicality``, ``coherence`` and ``rel_size`` of each pair, from activations ``x`` ``[n, d]``."""
    proj = x @ v.T  # [n, pair]
    out = {k: np.zeros(len(pairs)) for k in ("d_prime", "typicality", "coherence", "rel_size")}
    mean_norm = float(x.norm(dim=1).mean())
    for p, (a, b) in enumerate(pairs):
        ra, rb = (labels == a).nonzero().squeeze(1), (labels == b).nonzero().squeeze(1)
        pa, pb = proj[ra, p], proj[rb, p]
        spread = float(((pa.var() + pb.var()) / 2).sqrt())
        gap = float(pa.mean() - pb.mean())
        out["d_prime"][p] = gap / spread if spread > 0 else 0.0
        out["typicality"][p] = float(_cos(v[p], stats.of(a)[1] - stats.of(b)[1]))
        m = min(len(ra), len(rb))
        diffs = x[ra[:m]] - x[rb[:m]]
        units = diffs / diffs.norm(dim=1, keepdim=True).clamp(min=1e-300)
        out["coherence"][p] = float((units.sum(0).pow(2).sum() - (units.norm(dim=1) ** 2).sum()) / (m * (m - 1)))
        out["rel_size"][p] = float(v[p].norm()) / mean_norm if mean_norm > 0 else 0.0
    return out


def _first_order(
    model: HookedRoot, data: ScoringSet, hook: str, v: Tensor, pairs: list[tuple[int, int]]
) -> dict[str, np.ndarray]:
    """``jacobian_share`` and ``linearity`` of each pair on b's images of ``data``: ``J v`` by forward-mode AD."""
    site = hook_site(model, data, hook, v)
    n, labels = data.n, data.labels
    rows = torch.cat([p * n + (labels == b).nonzero().squeeze(1) for p, (_, b) in enumerate(pairs)])
    pair = rows // n
    zero = torch.zeros(len(rows), dtype=data.dtype, device=data.device)
    with torch.enable_grad():
        base, jv = torch.func.jvp(lambda c: site.logits(rows, c), (zero,), (torch.ones_like(zero),))
    dz = site.logits(rows, zero + 1) - base
    jv, dz = (t.double() - t.double().mean(1, keepdim=True) for t in (jv.detach(), dz.detach()))
    jv, dz, pair = jv.cpu(), dz.cpu(), pair.cpu()
    target = torch.zeros_like(jv)
    target[torch.arange(len(rows)), torch.tensor([a for a, _ in pairs])[pair]] = 1.0
    target[torch.arange(len(rows)), torch.tensor([b for _, b in pairs])[pair]] = -1.0
    cos = _cos(jv, target)
    err, size = ((dz - jv) ** 2).sum(1), (dz**2).sum(1)
    k = len(pairs)
    count = torch.bincount(pair, minlength=k).double()
    share = torch.zeros(k, dtype=torch.float64).index_add_(0, pair, cos) / count
    err_sum = torch.zeros(k, dtype=torch.float64).index_add_(0, pair, err)
    size_sum = torch.zeros(k, dtype=torch.float64).index_add_(0, pair, size)
    linearity = torch.where(size_sum > 0, 1 - err_sum / size_sum.clamp(min=1e-300), torch.ones_like(size_sum))
    return {"jacobian_share": share.numpy(), "linearity": linearity.numpy()}


def _class_values(
    model: HookedRoot,
    cls: HookClass,
    ds: ScoringSet,
    vectors: dict[str, Tensor],
    index: tuple[Tensor, Tensor],
    pairs: list[tuple[int, int]],
    digits: list[int],
    folds: int,
) -> dict[str, np.ndarray]:
    """Every property of one hook class, per pair."""
    rep, last = cls.representative, cls.last
    acts = model.clean_activations(ds.images, [rep])[rep]
    x = acts.reshape(len(acts), -1).double().cpu()
    labels = ds.labels.cpu()
    v = (vectors[rep][index[0]] - vectors[rep][index[1]]).reshape(len(pairs), -1).double().cpu()
    stats = ClassStatistics(digits, tuple(acts.shape[1:]), covariance=False)
    stats.add(acts, labels)
    out = _statistics(x, labels, v, stats, pairs)
    out["probe"] = linear_probe(acts, labels, pairs=pairs, folds=folds).accuracy.numpy()
    v_last = vectors[last][index[0]] - vectors[last][index[1]]
    out.update(_first_order(model, ds, last, v_last, pairs))
    out["eff_dim"] = np.full(len(pairs), participation_ratio(x))
    out["depth"] = np.full(len(pairs), cls.depth)
    return out


def model_properties(
    model: HookedRoot,
    data: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    pairs: Optional[list[tuple[int, int]]] = None,
    method: str = "first",
    exemplar: int = 0,
    source: Any = None,
    folds: int = 5,
) -> ModelProperties:
    """Every property of ``PROPERTIES`` for every hook class of ``model`` and pair, without steering.

    Args:
        model: the model, in eval mode, with no hooks attached.
        data: the property set ``(images, labels)``, with at least ``folds`` images of every class of
            the pairs (use images the steering scores are not read on: e.g. training images).
        test: ``(images, labels)`` for the covariates (test loss and margin).
        pairs: ``(a, b)`` pairs (default: every ordered pair of ``data``'s classes).
        method, exemplar, source: the vectors, as ``analysis.steerability`` builds them.
        folds: the probe's cross-validation folds.

    Returns:
        A ``ModelProperties``; ``table()`` joins ``Steerability.table()`` on ``(site, a, b)``.

    Examples:
        >>> props = model_properties(
        ...     model, (images[:300], labels[:300]), (images[300:400], labels[300:400]), pairs=[(3, 1)]
        ... )
        >>> [row["site"] for row in props.table()]
        ['layer0.pre..layer1.pre', 'layer1.post..layer3.pre', 'layer3.post..layer4.post']
        >>> round(float(props.values["layer3.post..layer4.post"]["linearity"][0]), 9)  # the logit class is affine
        1.0
    """
    images, labels = check_examples(data[0], data[1], "the property set")
    check_int(folds, "folds", low=2)
    src = source_data(model, source)
    pairs = off_diagonal_pairs(sorted(set(labels.tolist()))) if pairs is None else [tuple(p) for p in pairs]
    if not pairs:
        raise ConfigError("pairs is empty; pass at least one (a, b) pair, or None for every pair of the data's classes")
    for a, b in pairs:
        check_class(a, src.n_classes, "class"), check_class(b, src.n_classes, "class")
        if a == b:
            raise ConfigError(f"pair ({a}, {b}) compares a class with itself; pairs need a != b")
    digits = sorted({c for p in pairs for c in p})
    few = [c for c in digits if int((labels == c).sum()) < folds]
    if few:
        raise UsageError(f"the property set has fewer than {folds} images of class(es) {few}; give it more")
    classes = hook_classes(model)
    pos = {d: i for i, d in enumerate(digits)}
    index = (torch.tensor([pos[a] for a, _ in pairs]), torch.tensor([pos[b] for _, b in pairs]))
    hooks = list(dict.fromkeys(h for c in classes for h in (c.representative, c.last)))
    keep = torch.isin(labels, torch.tensor(digits))
    with torch.no_grad():
        vectors = class_vectors(model, hooks, digits, method, exemplar, src)
        ds = ScoringSet(model, images[keep], labels[keep])
        values = {c.label: _class_values(model, c, ds, vectors, index, pairs, digits, folds) for c in classes}
        t = ScoringSet(model, *test)
        loss = float(F.cross_entropy(t.base.double(), t.labels))
        true = t.base.gather(1, t.labels[:, None]).squeeze(1)
        other = t.base.masked_fill(t.onehot.bool(), float("-inf")).max(1).values
        margin = float((true - other).double().mean())
    for v in values.values():
        v["test_loss"], v["margin"] = np.full(len(pairs), loss), np.full(len(pairs), margin)
    about = [dict(label=c.label, role=c.role, depth=c.depth, hooks=list(c.hooks)) for c in classes]
    return ModelProperties(list(pairs), about, values, loss, margin)
