"""analysis.figures on synthetic results (no model needed); write_figure to HTML and one PNG."""

import dataclasses
from pathlib import Path

import numpy as np
import plotly
import plotly.graph_objects as go
import pytest
from plotly.offline import get_plotlyjs

from hookedmlp import ConfigError, UsageError
from hookedmlp_analysis import figures
from hookedmlp_analysis.grid import GridResult
from hookedmlp_analysis.metrics import METRICS
from hookedmlp_analysis.published import study_tables
from hookedmlp_analysis.sweep import CoeffSweep, LayerSweep

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HOOKS = [f"layer{i}.{w}" for i in range(5) for w in ("pre", "post")]


@pytest.fixture(scope="module")
def grid() -> GridResult:
    rng = np.random.default_rng(0)
    loss = rng.uniform(0, 20, (10, 10))
    np.fill_diagonal(loss, 0.05)
    metrics = {
        "loss": loss,
        "flip_rate": rng.uniform(0, 1, (10, 10)),
        "accuracy_other": rng.uniform(0, 1, (10, 10)),
        "kl": rng.uniform(0, 10, (10, 10)),
    }
    normal = {
        "loss": np.full(10, 0.05),
        "flip_rate": np.full(10, 0.97),
        "accuracy_other": np.full(10, 0.98),
        "kl": np.zeros(10),
    }
    return GridResult(
        hook="layer0.post",
        coeff=1.0,
        method="first",
        digits=list(range(10)),
        metrics=metrics,
        normal=normal,
        n_test=123,
        model="0123456789ab",
    )


@pytest.fixture(scope="module")
def lsweep() -> LayerSweep:
    rng = np.random.default_rng(1)
    metrics = {
        "loss": rng.uniform(0, 20, 10),
        "flip_rate": rng.uniform(0, 1, 10),
        "accuracy_other": rng.uniform(0, 1, 10),
        "kl": rng.uniform(0, 10, 10),
    }
    return LayerSweep(
        3, 1, 1.0, "first", HOOKS, metrics, normal={"loss": 0.05, "flip_rate": 0.97, "accuracy_other": 0.98, "kl": 0.0}
    )


@pytest.fixture(scope="module")
def csweep() -> CoeffSweep:
    rng = np.random.default_rng(2)
    coeffs = [-1.0, 0.0, 0.5, 1.0, 2.0]
    shape = (2, len(coeffs))
    metrics = {
        "loss": rng.uniform(0, 20, shape),
        "flip_rate": rng.uniform(0, 1, shape),
        "accuracy_other": rng.uniform(0, 1, shape),
        "kl": rng.uniform(0, 10, shape),
    }
    return CoeffSweep(
        "layer0.post", "first", [(3, 1), (0, 9)], coeffs, metrics, normal={"loss": np.array([0.05, 0.06])}
    )


def heatmaps(fig: go.Figure) -> list[go.Heatmap]:
    return [t for t in fig.data if isinstance(t, go.Heatmap)]


def test_grid_heatmap_with_study(grid) -> None:
    study = study_tables()
    fig = figures.grid_heatmap(grid, study)
    assert isinstance(fig, go.Figure)
    assert fig.layout.title.text == (
        "Mean cross-entropy on the test set without digit b after adding a - b<br><sup>at layer0.post, coefficient 1, "
        "vectors from the first training image of each digit<br>the diagonal (a = b, a zero vector) is left blank</sup>"
    )
    hm = heatmaps(fig)
    assert len(hm) == 2
    off = ~np.eye(10, dtype=bool)
    for h, want in zip(hm, (grid.loss, study.grid)):
        z = np.asarray(h.z, dtype=float)
        assert np.isnan(np.diag(z)).all()  # a = b is a zero vector, not a result
        np.testing.assert_array_equal(z[off], want[off])
    assert [h.showscale for h in hm] == [False, True]
    assert hm[1].colorbar.title.text == "cross-entropy (nats)"
    assert hm[0].zmax == hm[1].zmax == pytest.approx(max(grid.loss[off].max(), study.grid[off].max()))
    assert (
        fig.layout.xaxis.title.text
        == fig.layout.xaxis2.title.text
        == ("b: the digit whose image is subtracted (its test images are left out of the score)")
    )
    assert fig.layout.yaxis.title.text == "a: the digit whose image is added"
    assert fig.layout.yaxis.autorange == "reversed"
    assert hm[0].hovertemplate == (
        "a = %{y} (added), b = %{x} (subtracted)<br>cross-entropy (nats): %{z:.3f}<extra></extra>"
    )
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["hookedmlp, layer0.post", 'the study, its "layer 0"']


@pytest.mark.parametrize(
    "metric, label, xaxis",
    [
        ("flip_rate", "flip rate (share of b's images read as a)", "its test images are the ones scored"),
        ("accuracy_other", "accuracy on the other digits", "its test images are left out of the score"),
        ("kl", "KL from the unsteered model (nats)", "its test images are left out of the score"),
    ],
)
def test_grid_heatmap_other_metrics(grid, metric, label, xaxis) -> None:
    fig = figures.grid_heatmap(grid, study_tables(), metric=metric)  # the study only has a loss grid: one panel
    hm = heatmaps(fig)
    assert len(hm) == 1 and hm[0].showscale
    z = np.asarray(hm[0].z, dtype=float)
    off = ~np.eye(10, dtype=bool)
    np.testing.assert_array_equal(z[off], grid.metric(metric)[off])
    assert hm[0].colorbar.title.text == label
    assert fig.layout.title.text.startswith(
        METRICS[metric].title[0].upper() + METRICS[metric].title[1:] + " after adding a - b<br>"
    )
    assert fig.layout.xaxis.title.text == f"b: the digit whose image is subtracted ({xaxis})"
    shares = metric in ("flip_rate", "accuracy_other")
    assert (hm[0].zmin, hm[0].zmax) == ((0, 1.0) if shares else (0, pytest.approx(grid.metric(metric)[off].max())))
    assert hm[0].colorbar.tickformat == (".0%" if shares else "")


def test_grid_heatmap_bad_metric(grid) -> None:
    with pytest.raises(ConfigError, match="metric must be one of"):
        figures.grid_heatmap(grid, metric="bogus")


def test_layer_sweep_figure(lsweep) -> None:
    study = study_tables()
    fig = figures.layer_sweep_figure(lsweep, study)
    assert fig.layout.title.text == (
        "Steering with 3 - 1 at each hook point<br><sup>coefficient 1, vectors from the "
        "first training image of each digit</sup>"
    )
    assert fig.layout.xaxis2.title.text == "hook point where a - b is added"  # the shared axis, under the lower panel
    assert fig.layout.yaxis.title.text == "cross-entropy without 1 (nats)"
    assert fig.layout.yaxis2.title.text == "flip rate" and list(fig.layout.yaxis2.range) == [0, 1.02]
    assert fig.layout.yaxis2.overlaying is None  # two panels, not two y-axes on one
    names = [t.name for t in fig.data]
    assert names == [
        "hookedmlp: loss without 1",
        "the study: loss after its layer i",
        "unsteered",
        "hookedmlp: share of 1s read as 3",
    ]
    assert [t.yaxis for t in fig.data] == ["y", "y", "y", "y2"]
    assert list(fig.data[0].x) == HOOKS
    assert list(fig.data[1].x) == [f"layer{i}.post" for i in range(5)]
    np.testing.assert_array_equal(np.asarray(fig.data[1].y), study.sweep_loss)
    np.testing.assert_array_equal(np.asarray(fig.data[3].y), lsweep.flip_rate)
    assert list(fig.data[2].y) == [0.05] * len(HOOKS)
    other = LayerSweep(5, 6, 1.0, "first", HOOKS, lsweep.metrics, lsweep.normal)
    assert len(figures.layer_sweep_figure(other, study).data) == 3  # the study only swept 3 - 1


@pytest.fixture(scope="module")
def dist_grid(grid) -> GridResult:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(10, 10, 10, 10))
    return dataclasses.replace(grid, distributions=np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))


def test_distributions_figure(dist_grid) -> None:
    pairs = [
        ((3, 1), "the study's example"),
        ((0, 9), "the strongest flip"),
        ((5, 6), "a median flip"),
        ((7, 2), "the most damage"),
    ]
    fig = figures.distributions_figure(dist_grid, pairs)
    assert fig.layout.title.text.startswith("Softmax of the steered model's mean logits on each digit's test images")
    assert "at layer0.post, coefficient 1" in fig.layout.title.text
    hm = heatmaps(fig)
    assert len(hm) == 4
    for h, ((a, b), _) in zip(hm, pairs):
        np.testing.assert_array_equal(np.asarray(h.z), dist_grid.distributions[a, b])
        assert (h.zmin, h.zmax) == (0, 1)
    assert hm[0].colorbar.title.text == "probability" and [h.showscale for h in hm] == [True, False, False, False]
    assert [a.text for a in fig.layout.annotations] == [
        "3 - 1: the study's example",
        "0 - 9: the strongest flip",
        "5 - 6: a median flip",
        "7 - 2: the most damage",
    ]
    assert fig.layout.xaxis.title.text == "predicted class"
    assert fig.layout.yaxis.title.text == "test images of digit"


def test_distributions_explorer_has_every_pair(dist_grid) -> None:
    fig = figures.distributions_explorer(dist_grid)
    (menu,) = fig.layout.updatemenus
    assert len(menu.buttons) == 100 and menu.buttons[menu.active].label == "3 - 1"
    assert menu.buttons[0].label == "0 - 0 (unsteered)"
    np.testing.assert_array_equal(np.asarray(fig.data[0].z), dist_grid.distributions[3, 1])
    (z,) = menu.buttons[94].args[0]["z"]  # 9 - 4
    assert menu.buttons[94].label == "9 - 4"
    np.testing.assert_array_equal(np.asarray(z), dist_grid.distributions[9, 4])


def test_distribution_figures_need_distributions(grid) -> None:
    for make in (
        lambda: figures.distributions_figure(grid, [((3, 1), "x")]),
        lambda: figures.distributions_explorer(grid),
    ):
        with pytest.raises(
            UsageError,
            match=r"no distributions; compute it with steering_grid\(\.\.\., "
            r"keep_distributions=True\)",
        ):
            make()


def test_figures_use_the_colour_blind_safe_palette(lsweep, csweep) -> None:
    colours = [t.line.color for t in figures.dose_response_figure(csweep).data]
    assert colours == [figures.SAFE[0], figures.SAFE[0], figures.SAFE[1], figures.SAFE[1]]
    assert {t.line.color or t.marker.color for t in figures.layer_sweep_figure(lsweep).data} <= set(figures.SAFE)


def test_dose_response_figure(csweep) -> None:
    fig = figures.dose_response_figure(csweep)
    assert fig.layout.title.text == (
        "Dose-response at layer0.post<br><sup>vectors from the first training image of "
        "each digit, scaled by each coefficient</sup>"
    )
    assert fig.layout.xaxis.title.text == fig.layout.xaxis2.title.text == "coefficient of the a - b vector"
    assert fig.layout.yaxis.title.text == "flip rate"
    assert fig.layout.yaxis2.title.text == "cross-entropy (nats)"
    assert len(fig.data) == 4
    assert list(fig.data[0].x) == csweep.coeffs
    np.testing.assert_array_equal(np.asarray(fig.data[1].y), csweep.loss[0])


def test_write_figure_html_and_png(grid, tmp_path) -> None:
    fig = figures.grid_heatmap(grid, study_tables())
    paths = figures.write_figure(fig, tmp_path / "grid_loss")
    assert paths == [tmp_path / "plotly.min.js", tmp_path / "grid_loss.html", tmp_path / "grid_loss.png"]
    png = (tmp_path / "grid_loss.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000
    page = (tmp_path / "grid_loss.html").read_text()
    assert page.startswith(
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<title>Mean cross-entropy on the test set '
        "without digit b after adding a - b</title>"
    )
    assert '<script charset="utf-8" src="plotly.min.js"></script>' in page and len(page) < 100_000
    assert "* plotly.js v" not in page  # plotly.js once per folder, from the installed plotly: offline
    assert (tmp_path / "plotly.min.js").read_bytes() == (
        Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    ).read_bytes()
    call = page[page.rindex("Plotly.newPlot(") :]
    assert (
        '"responsive": true' in call and '"autosize":true' in call and '"width":1200' not in call
    )  # resizes with its window
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid_loss.html", "grid_loss.png", "plotly.min.js"]
    zeros = CoeffSweep(
        "layer0.post",
        "first",
        [(3, 1)],
        [0.0, 1.0],
        {m: np.zeros((1, 2)) for m in ("loss", "flip_rate")},
        normal={"loss": np.zeros(1)},
    )
    assert figures.write_figure(figures.dose_response_figure(zeros), tmp_path / "dose", formats=("html",)) == [
        tmp_path / "dose.html"
    ]
    assert not (tmp_path / "dose.png").exists()


def test_a_folder_gets_one_plotly_js_replaced_only_when_it_is_another_plotlys(grid, tmp_path) -> None:
    js = tmp_path / "plotly.min.js"
    figures.write_figure(figures.grid_heatmap(grid), tmp_path / "a", formats=("html",))
    first = js.stat().st_mtime_ns
    assert figures.write_figure(figures.grid_heatmap(grid), tmp_path / "b", formats=("html",)) == [tmp_path / "b.html"]
    assert js.stat().st_mtime_ns == first and sorted(p.name for p in tmp_path.iterdir()) == [
        "a.html",
        "b.html",
        "plotly.min.js",
    ]
    js.write_text("/* plotly.js v1.0.0 */")  # another plotly's copy: the pages would break
    assert figures.write_figure(figures.grid_heatmap(grid), tmp_path / "a", formats=("html",)) == [
        js,
        tmp_path / "a.html",
    ]
    assert js.read_text() == get_plotlyjs()


@pytest.mark.parametrize("fmt", ["jpeg", "PNG", "pdf", ""])
def test_write_figure_bad_format(grid, tmp_path, fmt) -> None:
    with pytest.raises(ConfigError, match=rf"unknown figure format\(s\) \['{fmt}'\]; expected some of html, png, svg"):
        figures.write_figure(figures.grid_heatmap(grid), tmp_path / "x", formats=(fmt,))
    assert list(tmp_path.iterdir()) == []


def test_write_figure_stem_with_dot(grid, tmp_path) -> None:
    paths = figures.write_figure(figures.grid_heatmap(grid), tmp_path / "grid_layer0.post", formats=("html",))
    assert paths == [tmp_path / "plotly.min.js", tmp_path / "grid_layer0.post.html"]


def _runs(n_models: int = 2) -> list:
    from hookedmlp_analysis.claims import CLAIMS
    from hookedmlp_analysis.spread import Run, vector_sources

    rng = np.random.default_rng(0)
    return [
        Run(f"m{m}", source, {c.key: (bool(rng.random() < 0.5), float(rng.random())) for c in CLAIMS}, 1.0, 0.0)
        for m in range(n_models)
        for source in vector_sources(3)
    ]


def test_spread_figure_titles_fit_their_panels_and_never_overlap() -> None:
    """A title line is at most half an em per character wide (Helvetica's lower case is narrower)."""
    from hookedmlp_analysis.claims import CLAIMS

    fig = figures.spread_figure(_runs(), [c.key for c in CLAIMS], study_tables())
    plot_width = fig.layout.width - fig.layout.margin.l - fig.layout.margin.r
    titles = [a for a in fig.layout.annotations if a.yref == "paper" and a.text[:2] in {f"{i}." for i in range(1, 7)}]
    assert len(titles) == len(CLAIMS)
    spans = []
    for title in titles:
        axis = fig.layout[f"xaxis{titles.index(title) + 1 if titles.index(title) else ''}"]
        width = max(len(line) for line in title.text.split("<br>")) * 0.5 * title.font.size
        panel = (axis.domain[1] - axis.domain[0]) * plot_width
        assert width <= panel, (title.text, width, panel)
        spans.append((round(title.y, 6), title.x * plot_width - width / 2, title.x * plot_width + width / 2))
    for row in {y for y, *_ in spans}:
        edges = sorted((left, right) for y, left, right in spans if y == row)
        assert all(a[1] < b[0] for a, b in zip(edges, edges[1:])), edges


def test_spread_figure_marks_verdicts_and_thresholds() -> None:
    from hookedmlp_analysis.claims import CLAIMS, rank_threshold

    runs = _runs()
    fig = figures.spread_figure(runs, [c.key for c in CLAIMS], study_tables())
    points = [t for t in fig.data if t.showlegend is False]
    first = points[0]  # model m0, claim 1
    holds = [run.claims["flip"][0] for run in runs if run.model == "m0"]
    assert list(first.marker.symbol) == ["circle" if h else "circle-open" for h in holds]
    assert list(first.x) == ["1", "2", "3", "mean"]
    lines = sorted(round(s.y0, 6) for s in fig.layout.shapes)
    assert lines == sorted([1.0, 0.9, round(rank_threshold(study_tables()), 6)])
    assert [t.name for t in fig.data if t.showlegend is not False] == ["m0", "m1", "holds", "fails"]


def test_study_frontier_figure_draws_the_network_in_colour_and_the_controls_in_grey() -> None:
    from study_fakes import result

    results = [
        result("baseline", 0, 0.2, 0.3, 0.25),
        result("baseline", 1, 0.4, 0.5, 0.1),
        result("LN", 0, 0.6, 0.7, 0.6),
    ]
    fig = figures.study_frontier_figure(results)
    first = {t.name: t for t in fig.data if t.xaxis == "x"}  # the baseline's panel
    assert list(first) == ["two-logit bias", "logit class", "pixel arithmetic", "random vector", "best internal class"]
    # the median over the two seeds of each site's (constant) frontier; the random draws averaged first
    expected = {"best internal class": 0.3, "two-logit bias": 0.4, "logit class": 0.175, "random vector": 0.02}
    for label, value in expected.items():
        np.testing.assert_allclose(first[label].y, value)
    assert first["best internal class"].line.color == figures.SAFE[0]
    assert all(
        t.line.color in ("#555555", "#999999", "#BBBBBB") for n, t in first.items() if n != "best internal class"
    )
    assert [t.showlegend for t in fig.data] == [True] * 5 + [False] * 5  # one legend entry per curve kind
    assert [a.text for a in fig.layout.annotations] == ["baseline", "LN"]


def test_study_layers_figure_marks_the_controls_open() -> None:
    from study_fakes import result

    fig = figures.study_layers_figure([result("baseline", 0, 0.2, 0.3, 0.25), result("baseline", 1, 0.4, 0.3, 0.15)])
    (trace,) = fig.data
    assert list(trace.x) == [0.0, 0.5, 1.0]
    np.testing.assert_allclose(trace.y, [0.05, 0.3, 0.2])  # the median over seeds of each class's pAUC
    assert list(trace.marker.symbol) == ["circle-open", "circle", "circle-open"]


def test_study_predicted_figure_keeps_the_variants_colours() -> None:
    points = [
        {"variant": "b", "seed": 0, "site": "s", "observed": 0.2, "predicted": 0.1},
        {"variant": "c", "seed": 0, "site": "s", "observed": 0.3, "predicted": 0.4},
    ]
    fig = figures.study_predicted_figure(points, 0.5, ["a", "b", "c"])
    assert [t.name for t in fig.data] == ["b", "c", "observed = predicted"]
    assert [t.marker.color for t in fig.data[:2]] == [figures.SAFE[1], figures.SAFE[2]]  # "a" has no point
    assert list(fig.data[2].x) == [0.1, 0.4] and "R² = 0.50" in fig.layout.title.text
