"""Plotly figures of the study, written as standalone interactive HTML and static PNG, offline.

The only module of hookedmlp and analysis that imports plotly. Static export uses kaleido 0.2.1,
which needs no browser. Each HTML file has a doctype and a title, resizes with its window, and
loads plotly.js from ``plotly.min.js`` beside it: one copy per folder (4.6 MB), written from the
installed plotly package, so the pages work offline. Every figure names its hook point,
coefficient and how the vectors were made; categorical colours are colour-blind safe (Paul Tol's
muted palette).
"""

import hashlib
import html
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Union

import numpy as np
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from hookedmlp import ConfigError
from hookedmlp.checks import check_choice
from hookedmlp.files.atomic import atomic_write
from hookedmlp.patching import PatchResult, compare
from hookedmlp_analysis.claims import CLAIMS
from hookedmlp_analysis.family import ModelResult
from hookedmlp_analysis.grid import GridResult
from hookedmlp_analysis.metrics import METRICS
from hookedmlp_analysis.published import StudyTables
from hookedmlp_analysis.spread import Run
from hookedmlp_analysis.steer_report import compared_sites
from hookedmlp_analysis.steer_result import FRONTIER
from hookedmlp_analysis.sweep import CoeffSweep, LayerSweep

__all__ = [
    "grid_heatmap",
    "layer_sweep_figure",
    "distributions_figure",
    "distributions_explorer",
    "dose_response_figure",
    "spread_figure",
    "study_frontier_figure",
    "study_layers_figure",
    "study_predicted_figure",
    "patching_heatmap",
    "patching_hooks_figure",
    "attribution_scatter",
    "write_figure",
    "code_version",
    "FORMATS",
    "SAFE",
    "PLOTLY_JS",
]

FORMATS = ("html", "png", "svg")
PLOTLY_JS = "plotly.min.js"  # beside the HTML figures, one per folder
SAFE = (
    "#332288",
    "#88CCEE",
    "#44AA99",
    "#117733",
    "#999933",
    "#DDCC77",
    "#CC6677",
    "#882255",
    "#AA4499",
    "#DDDDDD",
    "#000000",
    "#777777",
    "#661100",
)  # Paul Tol's muted palette, then black, grey and brown
_FONT = dict(family="Helvetica, Arial, sans-serif", size=13)
_B_AXIS = {
    "b": "b: the digit whose image is subtracted (its test images are the ones scored)",
    "other": "b: the digit whose image is subtracted (its test images are left out of the score)",
}


def code_version() -> str:
    """12 hex digits of this module's source: the version of the drawing code, for ``Outputs(code=...)``."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


def _layout(fig: go.Figure, title: str, width: int, height: int, top: int = 110) -> go.Figure:
    fig.update_layout(
        title=dict(text=title, x=0.5, xanchor="center"),
        font=_FONT,
        width=width,
        height=height,
        template="plotly_white",
        margin=dict(l=80, r=40, t=top, b=80),
    )
    return fig


def _setting(hook: str, coeff: float, vectors: str) -> str:
    return f"at {hook}, coefficient {coeff:g}, vectors from the {vectors}"


def grid_heatmap(grid: GridResult, study: Optional[StudyTables] = None, metric: str = "loss") -> go.Figure:
    """Heatmap of one grid metric (rows a, columns b; the diagonal a = b left blank), the study's grid beside it.

    Args:
        grid: the grid to show.
        study: the study's tables; its grid is shown beside ours for ``metric="loss"``.
        metric: a name of ``analysis.metrics.METRICS``.
    """
    m = METRICS[check_choice(metric, tuple(METRICS), "metric")]
    off = ~np.eye(len(grid.digits), dtype=bool)
    panels = [(f"hookedmlp, {grid.hook}", np.where(off, grid.metric(metric), np.nan))]
    if study is not None and metric == "loss":
        panels.append(('the study, its "layer 0"', np.where(off, study.grid, np.nan)))
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels], horizontal_spacing=0.14)
    share = metric in ("flip_rate", "accuracy_other")
    zmax = 1.0 if share else float(max(np.nanmax(p[1]) for p in panels))
    labels = [str(d) for d in grid.digits]
    value = ".1%" if share else ".3f"
    for i, (_, z) in enumerate(panels, start=1):
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=labels,
                y=labels,
                zmin=0,
                zmax=zmax,
                colorscale="Viridis",
                texttemplate="%{z:.2f}" if share else "%{z:.1f}",
                showscale=i == len(panels),
                colorbar=dict(title=dict(text=m.axis, side="right"), tickformat=".0%" if share else ""),
                hovertemplate=f"a = %{{y}} (added), b = %{{x}} (subtracted)<br>{m.axis}: %{{z:{value}}}<extra></extra>",
            ),
            row=1,
            col=i,
        )
        fig.update_xaxes(title_text=_B_AXIS[m.scope], side="bottom", row=1, col=i)
        fig.update_yaxes(title_text="a: the digit whose image is added", autorange="reversed", row=1, col=i)
    title = (
        f"{m.title[0].upper()}{m.title[1:]} after adding a - b<br><sup>{_setting(grid.hook, grid.coeff, grid.vectors)}"
        "<br>the diagonal (a = b, a zero vector) is left blank</sup>"
    )
    return _layout(fig, title, 600 * len(panels), 640, top=140)


def layer_sweep_figure(sweep: LayerSweep, study: Optional[StudyTables] = None) -> go.Figure:
    """One ``a - b`` vector at every hook point: loss without b above, flip rate below; the study's sweep overlaid."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.6, 0.4])
    fig.add_trace(
        go.Scatter(
            x=sweep.hooks,
            y=sweep.loss,
            mode="lines+markers",
            name=f"hookedmlp: loss without {sweep.b}",
            line=dict(color=SAFE[0]),
            hovertemplate="%{x}: %{y:.2f} nats<extra></extra>",
        ),
        row=1,
        col=1,
    )
    if study is not None and (sweep.a, sweep.b) == (3, 1):
        fig.add_trace(
            go.Scatter(
                x=[f"layer{i}.post" for i in study.sweep_layers],
                y=study.sweep_loss,
                mode="markers",
                marker=dict(symbol="x", size=12, color=SAFE[6]),
                name="the study: loss after its layer i",
                hovertemplate="the study, %{x}: %{y:.2f} nats<extra></extra>",
            ),
            row=1,
            col=1,
        )
    fig.add_trace(
        go.Scatter(
            x=sweep.hooks,
            y=[sweep.normal["loss"]] * len(sweep.hooks),
            mode="lines",
            line=dict(color=SAFE[11], dash="dash"),
            name="unsteered",
            hovertemplate="unsteered: %{y:.3f} nats<extra></extra>",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=sweep.hooks,
            y=sweep.flip_rate,
            mode="lines+markers",
            name=f"hookedmlp: share of {sweep.b}s read as {sweep.a}",
            line=dict(color=SAFE[2]),
            hovertemplate="%{x}: %{y:.1%}<extra></extra>",
        ),
        row=2,
        col=1,
    )
    fig.update_yaxes(title_text=f"cross-entropy without {sweep.b} (nats)", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="flip rate", range=[0, 1.02], tickformat=".0%", row=2, col=1)
    fig.update_xaxes(title_text="hook point where a - b is added", row=2, col=1)
    fig.update_layout(legend=dict(orientation="h", y=-0.22, x=0.5, xanchor="center"))
    vectors = (
        "class mean"
        if sweep.method == "mean"
        else ("first training image" if not sweep.exemplar else f"training image {sweep.exemplar + 1}")
    )
    return _layout(
        fig,
        f"Steering with {sweep.a} - {sweep.b} at each hook point<br><sup>coefficient {sweep.coeff:g}, "
        f"vectors from the {vectors} of each digit</sup>",
        950,
        650,
    )


def _dist_heatmap(z: np.ndarray, digits: Sequence[int], showscale: bool) -> go.Heatmap:
    labels = [str(d) for d in digits]
    return go.Heatmap(
        z=z,
        x=labels,
        y=labels,
        zmin=0,
        zmax=1,
        colorscale="Blues",
        showscale=showscale,
        colorbar=dict(title=dict(text="probability", side="right")),
        hovertemplate="test images of %{y}: P(class %{x}) = %{z:.3f}<extra></extra>",
    )


def distributions_figure(grid: GridResult, pairs: Sequence[tuple[tuple[int, int], str]]) -> go.Figure:
    """Small multiples: for each chosen (a, b), the steered model's class probabilities (columns) on each digit (rows).

    ``pairs`` gives each pair with why it was chosen; the title says so.
    """
    d = grid.kept_distributions()
    cols = min(3, len(pairs))
    rows = (len(pairs) + cols - 1) // cols
    index = {c: i for i, c in enumerate(grid.digits)}
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[f"{a} - {b}: {why}" for (a, b), why in pairs],
        horizontal_spacing=0.08,
        vertical_spacing=0.16,
    )
    for n, ((a, b), _) in enumerate(pairs):
        r, c = n // cols + 1, n % cols + 1
        fig.add_trace(_dist_heatmap(d[index[a], index[b]], grid.digits, n == 0), row=r, col=c)
        fig.update_xaxes(title_text="predicted class", row=r, col=c)
        fig.update_yaxes(title_text="test images of digit", autorange="reversed", row=r, col=c)
    return _layout(
        fig,
        "Softmax of the steered model's mean logits on each digit's test images (the study's plots)<br>"
        f"<sup>{_setting(grid.hook, grid.coeff, grid.vectors)}; six pairs, each chosen for the reason in "
        "its title; every pair is in the interactive figure</sup>",
        360 * cols + 140,
        370 * rows + 150,
    )


def pixel_arithmetic_figure(panels: dict[str, Sequence[Sequence[float]]]) -> go.Figure:
    """Steering at ``layer0.post`` as images: ``x_a``, ``x_b``, ``x_a - x_b``, and a test image plus the difference.

    ``panels`` maps each panel's title to its image (rows of pixels), in that order.
    """
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=list(panels), horizontal_spacing=0.03)
    for i, image in enumerate(panels.values()):
        signed = i >= 2  # the difference and the composite have negative pixels
        fig.add_trace(
            go.Heatmap(
                z=np.asarray(image),
                zmin=-1 if signed else 0,
                zmax=1,
                colorscale="RdBu_r" if signed else "Greys",
                showscale=i == 2,
                colorbar=dict(title=dict(text="pixel", side="right")),
                hovertemplate="row %{y}, column %{x}: %{z:.2f}<extra></extra>",
            ),
            row=1,
            col=i + 1,
        )
        fig.update_xaxes(visible=False, scaleanchor=f"y{i + 1 if i else ''}", row=1, col=i + 1)
        fig.update_yaxes(visible=False, autorange="reversed", row=1, col=i + 1)
    return _layout(
        fig,
        "Steering at layer0.post adds an image: the first training images' difference, added to every input<br>"
        "<sup>layer0.post is W x + b, so act(x_a) - act(x_b) = W (x_a - x_b): the bias cancels</sup>",
        260 * len(panels) + 120,
        400,
    )


def distributions_explorer(grid: GridResult) -> go.Figure:
    """Every (a, b) pair's distributions, one at a time, chosen from a dropdown (interactive HTML)."""
    d = grid.kept_distributions()
    pairs = [(i, j) for i in range(len(grid.digits)) for j in range(len(grid.digits))]
    name = lambda i, j: (
        f"{grid.digits[i]} - {grid.digits[j]}"
        if i != j
        else f"{grid.digits[i]} - {grid.digits[j]} "  # noqa: E731
        "(unsteered)"
    )
    start = pairs.index((grid.digits.index(3), grid.digits.index(1))) if {3, 1} <= set(grid.digits) else 1
    fig = go.Figure(_dist_heatmap(d[pairs[start]], grid.digits, True))
    buttons = [dict(label=name(i, j), method="restyle", args=[{"z": [d[i, j]]}]) for i, j in pairs]
    fig.update_layout(
        updatemenus=[
            dict(
                buttons=buttons,
                active=start,
                x=0.0,
                xanchor="left",
                y=1.12,
                yanchor="bottom",
                direction="down",
                showactive=True,
            )
        ],
        annotations=[
            dict(text="pair a - b:", x=0.0, xref="paper", xanchor="right", y=1.15, yref="paper", showarrow=False)
        ],
    )
    fig.update_xaxes(title_text="predicted class")
    fig.update_yaxes(title_text="test images of digit", autorange="reversed")
    return _layout(
        fig,
        "Softmax of the steered model's mean logits on each digit's test images<br>"
        f"<sup>{_setting(grid.hook, grid.coeff, grid.vectors)}; choose any pair</sup>",
        720,
        720,
    )


def dose_response_figure(sweep: CoeffSweep) -> go.Figure:
    """Flip rate and loss without b against the coefficient, one colour per pair."""
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=["share of b's test images classified as a", "loss on the test set without b"],
        horizontal_spacing=0.1,
    )
    for i, (a, b) in enumerate(sweep.pairs):
        color = SAFE[i % len(SAFE)]
        fig.add_trace(
            go.Scatter(
                x=sweep.coeffs,
                y=sweep.flip_rate[i],
                mode="lines+markers",
                name=f"{a} - {b}",
                line=dict(color=color),
                legendgroup=f"{a}-{b}",
                hovertemplate=f"{a} - {b}, coefficient %{{x:g}}: %{{y:.1%}} of the {b}s read as {a}<extra></extra>",
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=sweep.coeffs,
                y=sweep.loss[i],
                mode="lines+markers",
                name=f"{a} - {b}",
                line=dict(color=color),
                legendgroup=f"{a}-{b}",
                showlegend=False,
                hovertemplate=f"{a} - {b}, coefficient %{{x:g}}: %{{y:.2f}} nats without {b}<extra></extra>",
            ),
            row=1,
            col=2,
        )
    fig.update_xaxes(title_text="coefficient of the a - b vector")
    fig.update_yaxes(title_text="flip rate", range=[0, 1.02], tickformat=".0%", row=1, col=1)
    fig.update_yaxes(title_text="cross-entropy (nats)", rangemode="tozero", row=1, col=2)
    vectors = "class mean" if sweep.method == "mean" else "first training image"
    return _layout(
        fig,
        f"Dose-response at {sweep.hook}<br><sup>vectors from the {vectors} of each digit, scaled by each "
        "coefficient</sup>",
        1150,
        520,
    )


def _wrap(text: str, width: int) -> str:
    """``text`` broken at spaces into lines of at most ``width`` characters, joined by ``<br>``."""
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "<br>".join(lines)


def _short_source(label: str) -> str:
    """A vector source's tick label: ``1`` for the first training image, ``k``, ``mean``."""
    if label == "class mean":
        return "mean"
    return "1" if label == "first training image" else label.rsplit(" ", 1)[-1]


SPREAD_COLUMNS = 2
SPREAD_TITLE_CHARS = 44  # a subplot title's line, in characters, at SPREAD_TITLE_SIZE px: it fits a panel
SPREAD_TITLE_SIZE = 14


def spread_figure(runs: Sequence[Run], keys: Sequence[str], study: Optional[StudyTables] = None) -> go.Figure:
    """Each claim's number over the spread's runs: one panel per claim, one point per run, grouped by vector source.

    A filled point is a run where the claim holds, an open one where it fails; a dashed line marks
    the threshold of claims decided by their number (given ``study``, for the rank claim's).
    """
    claims = [c for c in CLAIMS if c.key in keys]
    cols = SPREAD_COLUMNS
    rows = (len(claims) + cols - 1) // cols
    titles = [_wrap(f"{CLAIMS.index(c) + 1}. {c.number}", SPREAD_TITLE_CHARS) for c in claims]
    fig = make_subplots(
        rows=rows, cols=cols, subplot_titles=titles, vertical_spacing=0.32 / rows, horizontal_spacing=0.12
    )
    fig.update_annotations(font_size=SPREAD_TITLE_SIZE)  # the titles: SPREAD_TITLE_CHARS of them fit a panel
    models = list(dict.fromkeys(run.model for run in runs))
    legend = [(model, SAFE[m % len(SAFE)], "circle") for m, model in enumerate(models)]
    legend += [("holds", SAFE[11], "circle"), ("fails", SAFE[11], "circle-open")]
    for name, colour, symbol in legend:  # models by colour, verdicts by symbol
        marker = dict(color=colour, symbol=symbol, size=8, line=dict(width=1.5, color=colour))
        entry = go.Scatter(x=[None], y=[None], mode="markers", name=name, legendgroup=name, marker=marker)
        fig.add_trace(entry, row=1, col=1)  # clicking a model's entry hides its points in every panel
    for n, claim in enumerate(claims):
        r, c = n // cols + 1, n % cols + 1
        values = [run.claims[claim.key][1] for run in runs]
        for m, model in enumerate(models):
            mine = [run for run in runs if run.model == model]
            fig.add_trace(
                go.Scatter(
                    x=[_short_source(run.source.label) for run in mine],
                    y=[run.claims[claim.key][1] for run in mine],
                    mode="markers",
                    name=model,
                    legendgroup=model,
                    showlegend=False,
                    marker=dict(
                        color=SAFE[m % len(SAFE)],
                        size=8,
                        symbol=["circle" if run.claims[claim.key][0] else "circle-open" for run in mine],
                        line=dict(width=1.5, color=SAFE[m % len(SAFE)]),
                    ),
                    customdata=[[run.source.label, "holds" if run.claims[claim.key][0] else "fails"] for run in mine],
                    hovertemplate=f"{model}<br>%{{customdata[0]}}<br>{claim.number}: %{{y:.3f}} (%{{customdata[1]}})"
                    "<extra></extra>",
                ),
                row=r,
                col=c,
            )
        line = claim.line(study) if study is not None or claim.key != "ranks" else None
        low, high = min(values + [line] * (line is not None)), max(values + [line] * (line is not None))
        pad = 0.08 * (high - low or 1.0)
        fig.update_yaxes(range=[low - pad, high + pad], row=r, col=c)
        if line is not None:
            fig.add_hline(
                y=line,
                line=dict(color=SAFE[11], dash="dash", width=1.5),
                annotation=dict(text=f"holds {'at' if line == 1.0 else 'above'} {line:.2g}", font=dict(size=11)),
                annotation_position="bottom right",
                row=r,
                col=c,
            )
        fig.update_xaxes(type="category", row=r, col=c)
    fig.add_annotation(
        text="vectors from training image k of each digit (k = 1 ... 10), or the class mean",
        xref="paper",
        yref="paper",
        x=0.5,
        y=-0.2 / rows,
        yanchor="top",
        showarrow=False,
        font=dict(size=14),
    )
    legend = dict(orientation="h", traceorder="normal", y=-0.3 / rows, x=0.5, xanchor="center", yanchor="top")
    fig.update_layout(legend=legend)
    return _layout(
        fig,
        "Each claim's number over the spread's runs<br><sup>one point per model and way of making the vectors; "
        "filled: the claim holds in that run, open: it fails<br>dashed: the threshold, for claims decided by "
        "their number</sup>",
        860,
        290 * rows + 260,
        top=175,
    )


def study_frontier_figure(results: Sequence[ModelResult]) -> go.Figure:
    """Flip rate against collateral per variant: the best internal hook class in colour, the controls in grey.

    Each curve is the median over seeds of the mean frontier over pairs (the best flip rate reachable
    at each collateral level); the best class is each model's, chosen on the tuning half.
    """
    names = list(dict.fromkeys(r.variant for r in results))
    cols = 4
    rows = -(-len(names) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names, shared_yaxes=True, vertical_spacing=0.09)
    x = list(FRONTIER)
    grey = {
        "two-logit bias": dict(dash="dash", color="#555555"),
        "logit class": dict(dash="dot", color="#555555"),
        "pixel arithmetic": dict(dash="dashdot", color="#999999"),
        "random vector": dict(dash="solid", color="#BBBBBB"),
    }
    for v, name in enumerate(names):
        curves: dict[str, list[np.ndarray]] = {}
        for r in results:
            if r.variant == name:
                for label, sites in compared_sites(r.steer).items():
                    if sites:  # random draws averaged
                        curves.setdefault(label, []).append(np.mean([s["frontier"] for s in sites], axis=0))
        for label in (*grey, "best internal class"):
            if label not in curves:
                continue
            line = grey.get(label, dict(color=SAFE[0], width=3))  # one colour: the network; grey: the controls
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=np.median(curves[label], axis=0),
                    mode="lines",
                    name=label,
                    legendgroup=label,
                    legendrank=1 if label not in grey else 2 + list(grey).index(label),
                    showlegend=v == 0,
                    line=line,
                    hovertemplate=f"{name}, {label}<br>collateral %{{x:.0%}}<br>flip rate %{{y:.1%}}<extra></extra>",
                ),
                row=v // cols + 1,
                col=v % cols + 1,
            )
    fig.update_xaxes(tickformat=".0%", range=[0, x[-1]])
    fig.update_yaxes(tickformat=".0%", range=[0, 1.02])
    for v in range(max(0, len(names) - cols), len(names)):
        fig.update_xaxes(title_text="collateral", row=v // cols + 1, col=v % cols + 1)
    for r in range(1, rows + 1):
        fig.update_yaxes(title_text="flip rate", row=r, col=1)
    return _layout(
        fig,
        "Flip rate against collateral, per variant: the best internal hook class, and the controls in grey"
        "<br><sup>collateral: share of the other digits' images whose prediction changes; median over seeds of the "
        f"mean over the {results[0].steer['pairs'] if results else 0} pairs; vectors from the first training image of "
        "each digit</sup>",
        1200,
        260 * rows + 160,
        top=140,
    )


def study_layers_figure(results: Sequence[ModelResult]) -> go.Figure:
    """pAUC per hook class against its relative depth, per variant; open markers for the input and logit classes."""
    fig = go.Figure()
    for v, name in enumerate(dict.fromkeys(r.variant for r in results)):
        by_site: dict[str, list[dict]] = {}
        for r in results:
            if r.variant == name:
                for s in r.steer["sites"]:
                    if s["kind"] == "class":
                        by_site.setdefault(s["name"], []).append(s)
        sites = sorted(by_site.items(), key=lambda item: item[1][0]["depth"])
        fig.add_trace(
            go.Scatter(
                x=[same[0]["depth"] for _, same in sites],
                y=[float(np.median([s["pauc"] for s in same])) for _, same in sites],
                mode="lines+markers",
                name=name,
                text=[f"{site} ({same[0]['role']})" for site, same in sites],
                line=dict(color=SAFE[v % len(SAFE)]),
                marker=dict(
                    size=9,
                    symbol=["circle" if same[0]["role"] == "internal" else "circle-open" for _, same in sites],
                ),
                hovertemplate=name + ", %{text}<br>pAUC %{y:.3f}<extra></extra>",
            )
        )
    fig.update_xaxes(title_text="relative depth of the hook class (input 0, logits 1)")
    pairs = results[0].steer["pairs"] if results else 0
    fig.update_yaxes(title_text=f"pAUC, mean over the {pairs} pairs (median over seeds)", rangemode="tozero")
    return _layout(
        fig,
        "Steerability per hook class<br><sup>open markers: the input class (pixel arithmetic) and the logit class "
        "(a bias on the logits), controls; vectors from the first training image of each digit</sup>",
        1000,
        580,
    )


def study_predicted_figure(points: Sequence[dict], r2: float, variants: Sequence[str] = ()) -> go.Figure:
    """Observed pAUC against the properties model's prediction for a variant it never saw: one point per model and
    internal hook class (``prediction_report.predicted_points``); each variant coloured by its place in ``variants``
    (the other study figures' colours), else in ``points``."""
    fig = go.Figure()
    order = list(dict.fromkeys([*variants, *(p["variant"] for p in points)]))
    for v, name in enumerate(order):
        mine = [p for p in points if p["variant"] == name]
        if not mine:
            continue
        fig.add_trace(
            go.Scatter(
                x=[p["predicted"] for p in mine],
                y=[p["observed"] for p in mine],
                mode="markers",
                name=name,
                text=[f"seed {p['seed']}, {p['site']}" for p in mine],
                marker=dict(color=SAFE[v % len(SAFE)], size=8),
                hovertemplate=name + ", %{text}<br>predicted %{x:.3f}<br>observed %{y:.3f}<extra></extra>",
            )
        )
    values = [p[k] for p in points for k in ("observed", "predicted")] or [0.0, 1.0]
    lo, hi = min(values), max(values)
    fig.add_trace(
        go.Scatter(
            x=[lo, hi], y=[lo, hi], mode="lines", name="observed = predicted", line=dict(color="#000000", dash="dash")
        )
    )
    fig.update_xaxes(title_text="predicted pAUC (a linear model of the properties, fitted without this variant)")
    fig.update_yaxes(title_text="observed pAUC (mean over the pairs)")
    return _layout(
        fig,
        f"Predicted against observed steerability (held-out R² = {r2:.2f} over the rows)"
        "<br><sup>one point per model and internal hook class; the fit never saw the variant it predicts</sup>",
        1000,
        640,
    )


def _patched(r: PatchResult) -> str:
    how = {"activation": "Activation patching", "attribution": "Attribution patching (estimate)"}
    run = "corrupt run, clean values patched in" if r.direction == "denoise" else "clean run, corrupt values patched in"
    return (
        f"{how.get(r.kind, 'Integrated gradients (estimate)')}, per {r.per}<br><sup>{r.metric} on {r.n} pairs: {run}; "
    )


def patching_heatmap(result: PatchResult) -> go.Figure:
    """Hook points x entries: how far patching each entry moves the metric (blue up, red down; blank: no entry)."""
    z = result.matrix().numpy()
    # the 99th percentile: a few logits' effects would wash out the rest
    bound = float(np.nanquantile(np.abs(z), 0.99)) or float(np.nanmax(np.abs(z))) or 1.0
    fig = go.Figure(
        go.Heatmap(
            z=z,
            y=result.hooks,
            colorscale="RdBu",
            zmin=-bound,
            zmax=bound,
            colorbar=dict(title=dict(text=f"change in {result.metric}", side="right")),
            hovertemplate=f"%{{y}}, {result.per} %{{x}}: %{{z:+.4g}}<extra></extra>",
        )
    )
    fig.update_xaxes(title_text=f"{result.per} (index within the hook point's activation, row-major)")
    fig.update_yaxes(title_text="hook point", autorange="reversed", type="category")
    title = _patched(result) + f"unpatched {result.base:.3g}, fully patched {result.source:.3g}"
    title += f"<br>colours stop at ±{bound:.2g} (99th percentile)</sup>"
    return _layout(fig, title, 1000, 240 + 26 * len(result.hooks), top=120)


def patching_hooks_figure(result: PatchResult) -> go.Figure:
    """Per hook point: the effect of its strongest entry (of the whole hook point, for ``per="hook"``)."""
    best = [result.by_hook(h).reshape(-1) for h in result.hooks]
    at = [int(b.abs().argmax()) for b in best]
    units = [str(result.index[sum(len(b) for b in best[:i]) + j][1]) for i, j in enumerate(at)]
    fig = go.Figure(
        go.Bar(
            x=result.hooks,
            y=[float(b[j]) for b, j in zip(best, at)],
            marker_color=SAFE[0],
            customdata=units,
            hovertemplate="%{x}, " + result.per + " %{customdata}: %{y:+.4g}<extra></extra>",
        )
    )
    fig.add_hline(y=result.source - result.base, line=dict(color=SAFE[6], dash="dash"), annotation_text="full patch")
    fig.update_xaxes(title_text="hook point", type="category")
    fig.update_yaxes(title_text=f"change in {result.metric}" + ("" if result.per == "hook" else ", strongest entry"))
    return _layout(fig, _patched(result) + "the dashed line is the change when every value is patched</sup>", 900, 520)


def attribution_scatter(exact: PatchResult, estimate: PatchResult) -> go.Figure:
    """Each entry's estimated effect against its exact one, one colour per hook point; the diagonal is agreement."""
    agreement = compare(exact, estimate)
    fig = go.Figure()
    for i, h in enumerate(exact.hooks):
        fig.add_trace(
            go.Scattergl(
                x=exact.by_hook(h).reshape(-1).numpy(),
                y=estimate.by_hook(h).reshape(-1).numpy(),
                mode="markers",
                name=h,
                marker=dict(color=SAFE[i % len(SAFE)], size=5, opacity=0.7),
                hovertemplate=f"{h}: exact %{{x:+.4g}}, estimate %{{y:+.4g}}<extra></extra>",
            )
        )
    lo, hi = (
        float(min(exact.effect.min(), estimate.effect.min())),
        float(max(exact.effect.max(), estimate.effect.max())),
    )
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(color=SAFE[11], dash="dot"), name="equal"))
    fig.update_xaxes(title_text=f"exact change in {exact.metric} (activation patching)")
    fig.update_yaxes(title_text=f"estimated change ({estimate.kind.replace('_', ' ')})")
    title = (
        f"Attribution estimate against exact patching, per {exact.per}<br><sup>Pearson r = {agreement.pearson:.3f}, "
        f"Spearman rho = {agreement.spearman:.3f}, top-{agreement.k} agreement {agreement.top_k:.0%}; "
        f"{exact.n} pairs</sup>"
    )
    return _layout(fig, title, 860, 680)


def _standalone_html(fig: go.Figure) -> bytes:
    """A page with a doctype and a title, resizing with the window, drawn by the ``plotly.min.js`` beside it."""
    title = html.escape((fig.layout.title.text or "hookedmlp figure").split("<br>")[0])
    sized = go.Figure(fig).update_layout(width=None, height=None, autosize=True)
    page = sized.to_html(
        include_plotlyjs="directory",
        full_html=True,
        config={"responsive": True},
        default_width="100%",
        default_height="100vh",
    )
    page = page.replace("<html>", '<!DOCTYPE html>\n<html lang="en">', 1).replace(
        "<head>", f"<head>\n<title>{title}</title>", 1
    )
    return page.encode()


def _plotly_js(folder: Path) -> list[Path]:
    """Write ``folder/plotly.min.js`` unless it is already this plotly's; returns it if written."""
    target = folder / PLOTLY_JS
    script = get_plotlyjs().encode()
    if target.is_file() and target.read_bytes() == script:
        return []
    with atomic_write(target, "wb") as f:
        f.write(script)
    return [target]


def write_figure(fig: go.Figure, stem: Union[str, Path], formats: Sequence[str] = ("html", "png")) -> list[Path]:
    """Write ``stem.html`` and/or ``stem.png`` (or ``.svg``) atomically; returns the paths written.

    A dot in the stem stays (``grid_layer0.post.png``). PNG and SVG use kaleido offline (about
    a second per figure). HTML also writes ``plotly.min.js`` into its folder when that folder
    has none (or another plotly's).
    """
    stem = Path(stem)
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ConfigError(f"unknown figure format(s) {bad or list(formats)}; expected some of {', '.join(FORMATS)}")
    written = []
    for fmt in formats:
        target = stem.with_name(f"{stem.name}.{fmt}")
        if fmt == "html":
            data = _standalone_html(fig)
            written += _plotly_js(target.parent)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter(
                    "ignore", DeprecationWarning
                )  # kaleido 0.2.1 works offline; plotly nags about 1.x
                data = fig.to_image(format=fmt, scale=2 if fmt == "png" else 1)
        with atomic_write(target, "wb") as f:
            f.write(data)
        written.append(target)
    return written
