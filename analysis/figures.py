"""Plotly figures of the study, written as interactive HTML and static PNG, offline.

The only module of hookedmlp and analysis that imports plotly. Static export uses
kaleido 0.2.1, which needs no browser. HTML files load ``plotly.min.js`` from the
same directory (written once), so each file stays small and works offline.
"""

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Union

import numpy as np
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from analysis.claims import CLAIMS
from analysis.family import ModelResult
from analysis.grid import GridResult
from analysis.published import StudyTables
from analysis.spread import Run
from analysis.sweep import CoeffSweep, LayerSweep
from hookedmlp.io import atomic_write

__all__ = ["grid_heatmap", "layer_sweep_figure", "distributions_figure", "dose_response_figure", "write_figure"]

_FONT = dict(family="Helvetica, Arial, sans-serif", size=13)


def _layout(fig: go.Figure, title: str, width: int, height: int) -> go.Figure:
    fig.update_layout(title=dict(text=title, x=0.5, xanchor="center"), font=_FONT, width=width, height=height,
                      template="plotly_white", margin=dict(l=70, r=40, t=90, b=70))
    return fig


def grid_heatmap(grid: GridResult, study: Optional[StudyTables] = None, metric: str = "loss") -> go.Figure:
    """Heatmap of one grid metric (rows a, columns b), with the study's grid beside it when given.

    Args:
        grid: the grid to show.
        study: the study's tables; its grid is shown beside ours for ``metric="loss"``.
        metric: ``"loss"``, ``"flip_rate"``, ``"accuracy_other"`` or ``"kl"``.

    Returns:
        The plotly ``Figure`` (one panel, or two with the study's).
    """
    values = grid.metric(metric)
    panels = [(f"hookedmlp, {grid.hook}", values)]
    if study is not None and metric == "loss":
        panels.append(("the study, its 'layer 0'", study.grid))
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels], horizontal_spacing=0.12)
    zmax = float(max(np.nanmax(p[1]) for p in panels))
    label = {"loss": "cross-entropy (nats)", "flip_rate": "flip rate", "accuracy_other": "accuracy", "kl": "KL (nats)"}[metric]
    for i, (_, z) in enumerate(panels, start=1):
        fig.add_trace(go.Heatmap(z=z, x=[str(d) for d in grid.digits], y=[str(d) for d in grid.digits], zmin=0, zmax=zmax,
                                 colorscale="Viridis", texttemplate="%{z:.1f}", showscale=i == len(panels),
                                 colorbar=dict(title=dict(text=label, side="right")),
                                 hovertemplate="a=%{y}, b=%{x}<br>" + label + " %{z:.3f}<extra></extra>"), row=1, col=i)
        fig.update_xaxes(title_text="b (digit removed; its image subtracted)", side="bottom", row=1, col=i)
        fig.update_yaxes(title_text="a (digit whose image is added)", autorange="reversed", row=1, col=i)
    title = {"loss": "Loss on the test set without b after adding a - b"}.get(metric, label.capitalize() + " after adding a - b")
    return _layout(fig, f"{title} (coeff {grid.coeff:g}, {grid.method})", 560 * len(panels), 560)


def layer_sweep_figure(sweep: LayerSweep, study: Optional[StudyTables] = None) -> go.Figure:
    """Loss without b (and flip rate) for one vector at every hook point; the study's sweep at ``layer{i}.post``.

    Args:
        sweep: the layer sweep to show.
        study: the study's tables; its 3 - 1 sweep is overlaid when ``sweep`` is 3 - 1.

    Returns:
        The plotly ``Figure``.
    """
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=sweep.hooks, y=sweep.loss, mode="lines+markers", name="hookedmlp: loss without b"))
    fig.add_trace(go.Scatter(x=sweep.hooks, y=sweep.flip_rate, mode="lines+markers", name="hookedmlp: flip rate",
                             line=dict(dash="dot")), secondary_y=True)
    if study is not None and (sweep.a, sweep.b) == (3, 1):
        fig.add_trace(go.Scatter(x=[f"layer{i}.post" for i in study.sweep_layers], y=study.sweep_loss, mode="markers",
                                 marker=dict(symbol="x", size=12), name="the study: loss after layer i"))
    fig.add_hline(y=sweep.normal["loss"], line_dash="dash", line_color="gray", annotation_text="unsteered")
    fig.update_xaxes(title_text="hook point where a - b is added")
    fig.update_yaxes(title_text="cross-entropy without b (nats)", secondary_y=False, rangemode="tozero")
    fig.update_yaxes(title_text=f"share of {sweep.b}s classified as {sweep.a}", secondary_y=True, range=[0, 1.05])
    return _layout(fig, f"Steering with {sweep.a} - {sweep.b} at each hook point", 900, 500)


def distributions_figure(distributions: np.ndarray, pairs: Sequence[tuple[int, int]], digits: Sequence[int] = tuple(range(10))) -> go.Figure:
    """Small multiples: for each (a, b), the steered model's class probabilities (columns) for each digit (rows).

    Args:
        distributions: ``[a, b, digit, class]`` probabilities (see ``steered_distributions``).
        pairs: the ``(a, b)`` pairs to show, up to three per row.
        digits: the labels of the digit rows and class columns.

    Returns:
        The plotly ``Figure``, one heatmap per pair.
    """
    cols = min(3, len(pairs))
    rows = (len(pairs) + cols - 1) // cols
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"{a} - {b}" for a, b in pairs], horizontal_spacing=0.08, vertical_spacing=0.12)
    for n, (a, b) in enumerate(pairs):
        r, c = n // cols + 1, n % cols + 1
        fig.add_trace(go.Heatmap(z=distributions[a, b], x=[str(d) for d in digits], y=[str(d) for d in digits], zmin=0, zmax=1,
                                 colorscale="Blues", showscale=n == 0, colorbar=dict(title=dict(text="probability", side="right")),
                                 hovertemplate="images of %{y}: P(%{x}) = %{z:.3f}<extra></extra>"), row=r, col=c)
        fig.update_xaxes(title_text="predicted class", row=r, col=c)
        fig.update_yaxes(title_text="test images of digit", autorange="reversed", row=r, col=c)
    return _layout(fig, "Softmax of the steered model's mean logits, per digit", 330 * cols + 120, 330 * rows + 120)


def dose_response_figure(sweep: CoeffSweep) -> go.Figure:
    """Flip rate and loss without b against the coefficient, one line per pair.

    Args:
        sweep: the dose-response sweep to show.

    Returns:
        The plotly ``Figure`` (flip rate left, loss right).
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=["b images classified as a", "loss on the test set without b"])
    for i, (a, b) in enumerate(sweep.pairs):
        color = f"hsl({(i * 67) % 360}, 60%, 45%)"
        fig.add_trace(go.Scatter(x=sweep.coeffs, y=sweep.flip_rate[i], mode="lines+markers", name=f"{a} - {b}",
                                 line=dict(color=color), legendgroup=f"{a}-{b}"), row=1, col=1)
        fig.add_trace(go.Scatter(x=sweep.coeffs, y=sweep.loss[i], mode="lines+markers", name=f"{a} - {b}",
                                 line=dict(color=color), legendgroup=f"{a}-{b}", showlegend=False), row=1, col=2)
    fig.update_xaxes(title_text="coefficient of the a - b vector")
    fig.update_yaxes(title_text="flip rate", range=[0, 1.05], row=1, col=1)
    fig.update_yaxes(title_text="cross-entropy (nats)", rangemode="tozero", row=1, col=2)
    return _layout(fig, f"Dose-response at {sweep.hook} ({sweep.method})", 1100, 480)


def write_figure(fig: go.Figure, stem: Union[str, Path], formats: Sequence[str] = ("html", "png")) -> list[Path]:
    """Write ``stem.html`` and/or ``stem.png`` (or ``.svg``) atomically; returns the paths written.

    HTML files load ``plotly.min.js`` from their directory, written there once.
    PNG and SVG export uses kaleido offline (about a second per figure).

    Args:
        fig: the figure.
        stem: the path without extension; a dot in it stays (``grid_layer0.post.png``).
        formats: some of ``"html"``, ``"png"``, ``"svg"``.

    Returns:
        The files written, in the order of ``formats``.

    Raises:
        ValueError: an unknown or empty ``formats``.
    """
    stem = Path(stem)
    bad = [f for f in formats if f not in ("html", "png", "svg")]
    if bad or not formats:
        raise ValueError(f"unknown figure format(s) {bad or list(formats)}; expected some of 'html', 'png', 'svg'")
    written = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")  # a dot in the stem stays: grid_layer0.post.png
        if fmt == "html":
            js = stem.parent / "plotly.min.js"
            if not js.exists():
                with atomic_write(js, "w") as f:
                    f.write(get_plotlyjs())
            data = fig.to_html(include_plotlyjs="directory", full_html=True).encode()
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # kaleido 0.2.1 works offline; plotly nags about 1.x
                data = fig.to_image(format=fmt, scale=2 if fmt == "png" else 1)
        with atomic_write(path, "wb") as f:
            f.write(data)
        written.append(path)
    return written


_SAFE = ["#88CCEE", "#CC6677", "#DDCC77", "#117733", "#332288", "#AA4499", "#44AA99", "#999933", "#882255",
         "#661100", "#6699CC", "#888888", "#000000"]  # colour-blind-safe (Paul Tol's muted, plus grey and black)


def spread_figure(runs: Sequence[Run], keys: Sequence[str]) -> go.Figure:
    """Each claim's number over the spread's runs: one panel per claim, one point per run, grouped by vector source."""
    claims = [c for c in CLAIMS if c.key in keys]
    cols = 3
    rows = (len(claims) + cols - 1) // cols
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[c.number for c in claims], vertical_spacing=0.18)
    models = list(dict.fromkeys(run.model for run in runs))
    for n, claim in enumerate(claims):
        r, c = n // cols + 1, n % cols + 1
        for m, model in enumerate(models):
            mine = [run for run in runs if run.model == model]
            fig.add_trace(go.Scatter(
                x=[run.source.label for run in mine], y=[run.claims[claim.key][1] for run in mine], mode="markers",
                name=model, legendgroup=model, showlegend=n == 0, marker=dict(color=_SAFE[m % len(_SAFE)], size=8),
                customdata=[["holds" if run.claims[claim.key][0] else "fails"] for run in mine],
                hovertemplate=f"{model}<br>%{{x}}<br>{claim.number}: %{{y:.3f}} (%{{customdata[0]}})<extra></extra>"),
                row=r, col=c)
        fig.update_xaxes(tickangle=45, row=r, col=c)
    return _layout(fig, "Each claim's number over the spread's runs (one point per model and way of making vectors)",
                   1200, 420 * rows + 120)


def study_tradeoff_figure(results: Sequence[ModelResult]) -> go.Figure:
    """Flip rate against collateral damage at coefficient 1: one point per model and hook point, coloured by variant."""
    fig = go.Figure()
    variants = list(dict.fromkeys(r.variant for r in results))
    for v, name in enumerate(variants):
        mine = [r for r in results if r.variant == name]
        x = [1 - r.at_one[h]["accuracy_other"] / max(r.test_accuracy, 1e-9) for r in mine for h in r.hooks]
        y = [r.at_one[h]["flip_rate"] for r in mine for h in r.hooks]
        text = [f"seed {r.seed}, {h}" for r in mine for h in r.hooks]
        fig.add_trace(go.Scatter(x=x, y=y, mode="markers", name=name, text=text, marker=dict(color=_SAFE[v % len(_SAFE)], size=7),
                                 hovertemplate=name + ", %{text}<br>flip rate %{y:.3f}<br>accuracy lost on other digits "
                                 "%{x:.1%}<extra></extra>"))
    fig.update_xaxes(title_text="accuracy lost on the other digits (share of the unsteered accuracy)", tickformat=".0%")
    fig.update_yaxes(title_text="flip rate (share of b's images read as a)", range=[0, 1.02])
    return _layout(fig, "Activation additions at coefficient 1 (first training images): flip rate against damage", 1000, 620)


def study_layers_figure(results: Sequence[ModelResult]) -> go.Figure:
    """Selectivity per hook point: share of pairs with a selective coefficient, against relative depth, per variant."""
    fig = go.Figure()
    variants = list(dict.fromkeys(r.variant for r in results))
    for v, name in enumerate(variants):
        mine = [r for r in results if r.variant == name]
        hooks = mine[0].hooks
        depth = [i / max(1, len(hooks) - 1) for i in range(len(hooks))]
        share = [float(np.median([r.share[h] for r in mine])) for h in hooks]
        fig.add_trace(go.Scatter(x=depth, y=share, mode="lines+markers", name=name, text=hooks,
                                 line=dict(color=_SAFE[v % len(_SAFE)]),
                                 hovertemplate=name + ", %{text}<br>selective pairs %{y:.2f}<extra></extra>"))
    fig.update_xaxes(title_text="relative depth of the hook point (input 0, logits 1)")
    fig.update_yaxes(title_text="share of the 90 pairs that are selective (median over seeds)", rangemode="tozero")
    return _layout(fig, "Selectivity per hook point: some coefficient flips half of b's images and keeps 90% accuracy",
                   1000, 560)
