"""Steerability: how well each pair's ``a - b`` vector steers at each hook class, against controls, without thresholds.

For every hook class (``analysis.hook_classes``) and pair, the vector is added over a range of
coefficients and each scoring image's prediction is traced (``analysis.paths``); the pair's
curve of flip rate against collateral gives its scores (``analysis.curves``): the pAUC up to a
small collateral level (primary), and the flip rate at a fixed collateral level with the
coefficient chosen on one half of the scoring images and read on the other. The same is
measured for the controls, at every operating point:

- the *two-logit bias* ``c (e_a - e_b)``, scaled to the norm of the logit difference of the two
  exemplar inputs, so that coefficient 1 moves the logits as far as the logit class does;
- the *logit class* (itself a hook class, marked ``role="logits"``);
- *random vectors* of the pair's norm at each class's first hook point (``draws`` seeded unit
  directions, each shared by every pair and scaled to its norm);
- *pixel arithmetic*: the input class where a hook class holds the input, else the input images
  shifted by ``x_a - x_b``.

The old binary selectivity is kept as a derived number (``Steerability.binary``), with its
sensitivity to the two thresholds (``Steerability.sensitivity``).
"""

import dataclasses
from collections.abc import Callable
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from hookedmlp import HookedMLP, HookedRoot
from hookedmlp.checks import check_class
from hookedmlp.errors import ConfigError, UsageError
from hookedmlp_analysis.additions import class_vectors, source_data
from hookedmlp_analysis.curves import heldout, mean_kl, pair_curve, split_halves
from hookedmlp_analysis.grid import scoring_set
from hookedmlp_analysis.hook_classes import HookClass, fold_between, hook_classes
from hookedmlp_analysis.metrics import METRICS, ScoringSet
from hookedmlp_analysis.paths import Paths, prediction_paths
from hookedmlp_analysis.rows import Site, hook_site, input_site, output_site
from hookedmlp_analysis.selectivity import off_diagonal_pairs
from hookedmlp_analysis.steer_result import FRONTIER, SiteResult, Steerability, SteerSettings, analysis_version

__all__ = ["steerability", "SteerSettings", "Steerability", "SiteResult"]


class _Context:
    """What every site of one model shares: the scoring set, its halves, the pairs and the settings."""

    def __init__(self, data: ScoringSet, pairs: list[tuple[int, int]], settings: SteerSettings) -> None:
        self.data, self.pairs, self.settings = data, pairs, settings
        self.labels = data.labels.cpu().numpy()
        self.tune, self.score = split_halves(self.labels)
        self.a = torch.tensor([a for a, _ in pairs], device=data.device)
        self.b = torch.tensor([b for _, b in pairs], device=data.device)
        self.rows, self.passes = 0, 0


def _scores(ctx: _Context, paths: Paths, rows_of: Callable[[int], range], scale: np.ndarray) -> tuple[dict, dict]:
    """Every score and curve of every pair, from the rows ``rows_of(p)`` of ``paths`` at ``scale[p]``."""
    st = ctx.settings
    names = ("pauc", "pauc_tune", "pauc_score", "heldout_flip", "heldout_collateral", "heldout_coeff")
    metrics = {m: np.zeros(len(ctx.pairs)) for m in names}
    curves = {k: np.zeros((len(ctx.pairs), len(st.samples))) for k in ("flip", "collateral", "kl")}
    curves["frontier"] = np.zeros((len(ctx.pairs), len(FRONTIER)))
    for p, (a, b) in enumerate(ctx.pairs):
        rows = rows_of(p)
        image = np.arange(rows.start, rows.stop) % len(ctx.labels)
        is_b = ctx.labels[image] == b
        curve = {
            half: pair_curve(paths, rows, keep, is_b, a, scale[p], st.c_max)
            for half, keep in (
                ("all", np.ones(len(rows), bool)),
                ("tune", ctx.tune[image]),
                ("score", ctx.score[image]),
            )
        }
        metrics["pauc"][p] = curve["all"].pauc(st.pauc_level)
        metrics["pauc_tune"][p] = curve["tune"].pauc(st.pauc_level)
        metrics["pauc_score"][p] = curve["score"].pauc(st.pauc_level)
        held = heldout(curve["tune"], curve["score"], st.heldout_level)
        metrics["heldout_flip"][p], metrics["heldout_collateral"][p], metrics["heldout_coeff"][p] = held
        curves["flip"][p], curves["collateral"][p] = curve["all"].at(st.samples)
        curves["kl"][p] = mean_kl(paths, np.arange(rows.start, rows.stop)[~is_b], scale[p], st.samples)
        curves["frontier"][p] = curve["all"].frontier(np.array(FRONTIER))
    return metrics, curves


def _scored_region(ctx: _Context, pred: Tensor, base: Tensor) -> Tensor:
    """``[rows, g]``: the grid intervals that may hold a point of a score (pair-major rows, every image).

    Past the grid point from which the collateral stays above both levels on both halves, no
    point enters a score: there the curve is kept exact at grid points only.
    """
    k, n, g = len(ctx.pairs), len(ctx.labels), pred.shape[1]
    other = (ctx.data.labels.unsqueeze(0) != ctx.b.unsqueeze(1)).unsqueeze(2)  # [k, n, 1]
    moved = (pred.view(k, n, g) != base.view(k, n, 1)) & other
    level = max(ctx.settings.pauc_level, ctx.settings.heldout_level)
    above = torch.ones(k, g, dtype=torch.bool, device=pred.device)
    for half in (ctx.tune, ctx.score):
        mask = torch.as_tensor(half, device=pred.device).view(1, n, 1)
        share = (moved & mask).sum(1) / (other & mask).sum(1).clamp(min=1)
        above &= share > level
    stays = above.flip(1).cumprod(1).flip(1).bool()  # above at this grid point and every later one
    first = torch.where(stays.any(1), stays.int().argmax(1), torch.full((k,), g, device=pred.device))
    keep = torch.arange(g, device=pred.device).unsqueeze(0) <= first.unsqueeze(1)  # interval j ends at grid[j]
    return keep.repeat_interleave(n, 0)


def _pair_site(ctx: _Context, site: Site, rel_scale: np.ndarray, **about: Any) -> SiteResult:
    """A site with one vector per pair: every (pair, image) row, scored with the registry at each grid point too."""
    data, n, k = ctx.data, len(ctx.labels), len(ctx.pairs)
    grid_values = {m: np.zeros((k, len(ctx.settings.grid))) for m in METRICS}

    def on_grid(g: int, logits: Tensor) -> None:
        values, _ = data.score(logits.view(k, n, -1), ctx.a.tolist(), ctx.b.tolist())
        for m, v in values.items():
            grid_values[m][:, g] = v.cpu().numpy()

    paths = prediction_paths(
        site,
        data,
        ctx.settings.grid,
        ctx.settings.steps,
        on_grid,
        lambda p, b: _scored_region(ctx, p, b),
    )
    ctx.rows, ctx.passes = ctx.rows + paths.rows_run, ctx.passes + paths.passes
    metrics, curves = _scores(ctx, paths, lambda p: range(p * n, (p + 1) * n), np.ones(k))
    return SiteResult(metrics=metrics, rel_scale=rel_scale, curves=curves, grid=grid_values, **about)


def _random_site(ctx: _Context, site: Site, norms: np.ndarray, rel_scale: np.ndarray, **about: Any) -> SiteResult:
    """A site with one unit direction shared by every pair, scaled to each pair's norm: image rows only."""
    st, n = ctx.settings, len(ctx.labels)
    positive = norms[norms > 0] if (norms > 0).any() else np.ones(1)  # (all zero: every curve is flat)
    lo, hi = st.c_min * positive.min(), st.c_max * positive.max()
    grid = lo * 2.0 ** np.arange(int(np.ceil(np.log2(hi / lo) - 1e-9)) + 1)
    paths = prediction_paths(site, ctx.data, grid, st.steps)
    ctx.rows, ctx.passes = ctx.rows + paths.rows_run, ctx.passes + paths.passes
    metrics, curves = _scores(ctx, paths, lambda p: range(n), norms)
    return SiteResult(metrics=metrics, rel_scale=rel_scale, curves=curves, grid={}, **about)


def _with_binary(steer: Steerability) -> Steerability:
    for s in steer.sites:
        if s.grid:
            s.metrics["selective"] = steer.binary(s)
    return steer


def _mean_norm(t: Tensor) -> float:
    return float(t.flatten(1).norm(dim=1).mean())


def _input_vectors(model: HookedRoot, digits: list[int], method: str, exemplar: int, source: Any) -> Tensor:
    """``[digit, *input shape]``: the inputs standing for each digit (exemplar images or class-mean images)."""
    identity = HookedMLP(modules=[nn.Identity()], input_shape=model.accepted_input_shapes()[0])
    acts = class_vectors(identity, ["layer0.pre"], digits, method, exemplar, source)["layer0.pre"]
    ref = model.reference_tensor()
    return acts.to(ref.device, ref.dtype) if ref is not None else acts


def _class_sites(
    ctx: _Context, model: HookedRoot, cls: HookClass, acts: dict[str, Tensor], index: Any
) -> list[SiteResult]:
    """The class's own site and its random controls."""
    data, st = ctx.data, ctx.settings
    ia, ib = index
    rep, last = acts[cls.representative], acts[cls.last]
    v_rep, v_last = rep[ia] - rep[ib], last[ia] - last[ib]
    scale = _mean_norm(model.clean_activations(data.images, [cls.representative])[cls.representative])
    norms = v_rep.flatten(1).norm(dim=1).cpu().numpy().astype(np.float64)
    rel = norms / scale
    about = dict(role=cls.role, hooks=list(cls.hooks), depth=cls.depth)
    site = hook_site(model, data, cls.last, v_last)
    out = [_pair_site(ctx, site, rel, name=cls.label, kind="class", draw=-1, **about)]
    shape = tuple(rep.shape[1:])
    for draw in range(st.draws):
        g = torch.Generator().manual_seed(st.seed * 1_000_003 + 1_009 * cls.index + draw)
        r = torch.randn(1, *shape, generator=g, dtype=torch.float64).to(rep.device, rep.dtype)
        unit = site.with_vectors(fold_between(model, cls.representative, cls.last, r / r.norm()))
        name = f"random {draw} @ {cls.label}"
        out.append(_random_site(ctx, unit, norms, rel, name=name, kind="random", draw=draw, **about))
    return out


def _controls(
    ctx: _Context, model: HookedRoot, ds: ScoringSet, classes: list[HookClass], index: Any, inputs: Tensor
) -> list[SiteResult]:
    """Pixel arithmetic (where no hook class holds the input) and the two-logit bias, for every pair."""
    sites = []
    x = model.prepare_input(ds.images)
    if not any(c.holds_input for c in classes):
        v = inputs[index[0]] - inputs[index[1]]
        rel = v.flatten(1).norm(dim=1).cpu().numpy().astype(np.float64) / _mean_norm(x)
        about = dict(name="pixel", kind="pixel", role="input", hooks=[], depth=0.0, draw=-1)
        sites.append(_pair_site(ctx, input_site(model, ds, v), rel, **about))
    z = model(inputs)
    diff = z[index[0]] - z[index[1]]
    unit = torch.zeros_like(diff)
    unit[torch.arange(len(ctx.pairs)), ctx.a] = 1.0
    unit[torch.arange(len(ctx.pairs)), ctx.b] = -1.0
    u = unit * (diff.norm(dim=1, keepdim=True) / 2**0.5)
    rel = u.norm(dim=1).cpu().numpy().astype(np.float64) / _mean_norm(ds.base)
    about = dict(name="bias", kind="bias", role="logits", hooks=[], depth=1.0, draw=-1)
    sites.append(_pair_site(ctx, output_site(ds, u), rel, **about))
    return sites


def steerability(
    model: HookedRoot,
    test: Any = None,
    pairs: Any = None,
    method: str = "first",
    exemplar: int = 0,
    data: Any = None,
    settings: Optional[SteerSettings] = None,
    progress: bool = False,
    only_internal: bool = False,
) -> Steerability:
    """Score every pair's vector at every hook class of ``model``, with the controls, on ``test``.

    Args:
        model: the model, evaluated as it is (put it in eval mode first; no hooks attached).
        test: the scoring set, ``(images, labels)`` or a labelled ``Dataset`` (default: MNIST test).
            It is split into two halves, alternating within each class: the tuning half chooses,
            the scoring half reports.
        pairs: ``(a, b)`` pairs, ``a != b`` (default: every ordered pair of the data's classes).
        method: ``"first"`` (the ``exemplar``-th training image of each digit) or ``"mean"``.
        exemplar: which training image ``"first"`` takes.
        data: where exemplars come from (default: MNIST's training set).
        settings: the coefficient range, bisection steps, random draws and score levels
            (default: ``SteerSettings()``).
        progress: show a progress bar over the sites.
        only_internal: score the internal hook classes alone, with no random vector (``draws`` 0) and no other
            control: what comparing vector sources at the same sites needs.

    Returns:
        A ``Steerability``: one ``SiteResult`` per hook class and control, each with every score of
        ``SCORES`` per pair, the curves, and (but for random vectors) the registry's metrics at the grid.

    Examples:
        >>> test = (images[:200], labels[:200])
        >>> st = steerability(model, test, pairs=[(3, 1)], settings=SteerSettings(draws=1))
        >>> [s.name for s in st.sites][:3]
        ['layer0.pre..layer1.pre', 'random 0 @ layer0.pre..layer1.pre', 'layer1.post..layer3.pre']
        >>> st.logit_class.name, st.pixel.name
        ('layer3.post..layer4.post', 'layer0.pre..layer1.pre')
        >>> round(float(st.bias.metrics["pauc"][0]), 3) >= 0
        True
    """
    settings = SteerSettings() if settings is None else settings
    if not isinstance(settings, SteerSettings):
        raise ConfigError(f"settings must be a SteerSettings, got {type(settings).__name__}")
    if only_internal:
        settings = dataclasses.replace(settings, draws=0)
    classes = [c for c in hook_classes(model) if c.role == "internal" or not only_internal]
    images, labels = scoring_set(test)
    source = source_data(model, data)
    pairs = off_diagonal_pairs(range(source.n_classes)) if pairs is None else [tuple(p) for p in pairs]
    if not pairs:
        raise ConfigError("pairs is empty; pass at least one (a, b) pair, or None for every pair")
    for a, b in pairs:
        check_class(a, source.n_classes, f"class (of {source.name})"), check_class(b, source.n_classes, "class")
        if a == b:
            raise ConfigError(f"pair ({a}, {b}) steers a class towards itself; pairs need a != b")
    with torch.no_grad():
        ds = ScoringSet(model, images, labels)
        ctx = _Context(ds, pairs, settings)
        for half, mask in (("tuning", ctx.tune), ("scoring", ctx.score)):
            missing = sorted({b for _, b in pairs if not (ctx.labels[mask] == b).any()})
            if missing:
                raise UsageError(
                    f"the scoring set's {half} half has no image of class(es) {missing}; score on a set with "
                    "at least 2 images of every class b"
                )
        digits = sorted({c for p in pairs for c in p})
        pos = {d: i for i, d in enumerate(digits)}
        index = (torch.tensor([pos[a] for a, _ in pairs]), torch.tensor([pos[b] for _, b in pairs]))
        hooks = list(dict.fromkeys(h for c in classes for h in (c.representative, c.last)))
        acts = class_vectors(model, hooks, digits, method, exemplar, source) if hooks else {}
        sites: list[SiteResult] = []
        bar = tqdm(classes, desc="steerability", unit="class", disable=not progress)
        for cls in bar:
            sites += _class_sites(ctx, model, cls, acts, index)
        base, _ = ds.score(ds.base.unsqueeze(0).expand(len(pairs), -1, -1), ctx.a.tolist(), ctx.b.tolist())
        if not only_internal:
            sites += _controls(ctx, model, ds, classes, index, _input_vectors(model, digits, method, exemplar, source))
    engine = f"{len(sites)} sites, {ctx.passes} batched passes over {ctx.rows} rows in all"
    return _with_binary(
        Steerability(
            list(pairs),
            dataclasses.asdict(settings),
            len(labels),
            base["accuracy_other"].cpu().numpy().astype(np.float64),
            sites,
            analysis_version(),
            engine,
        )
    )
