"""analysis.figures on synthetic results (no model needed); write_figure to HTML and one PNG."""

import numpy as np
import plotly.graph_objects as go
import pytest

from analysis import figures
from analysis.grid import GridResult
from analysis.published import study_tables
from analysis.sweep import CoeffSweep, LayerSweep
from hookedmlp import ConfigError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HOOKS = [f"layer{i}.{w}" for i in range(5) for w in ("pre", "post")]


@pytest.fixture(scope="module")
def grid() -> GridResult:
    rng = np.random.default_rng(0)
    loss = rng.uniform(0, 20, (10, 10))
    np.fill_diagonal(loss, 0.05)
    metrics = {"loss": loss, "flip_rate": rng.uniform(0, 1, (10, 10)), "accuracy_other": rng.uniform(0, 1, (10, 10)),
               "kl": rng.uniform(0, 10, (10, 10))}
    normal = {"loss": np.full(10, 0.05), "flip_rate": np.full(10, 0.97), "accuracy_other": np.full(10, 0.98),
              "kl": np.zeros(10)}
    return GridResult(hook="layer0.post", coeff=1.0, method="first", digits=list(range(10)), metrics=metrics,
                      normal=normal, n_test=123, model="0123456789ab")


@pytest.fixture(scope="module")
def lsweep() -> LayerSweep:
    rng = np.random.default_rng(1)
    metrics = {"loss": rng.uniform(0, 20, 10), "flip_rate": rng.uniform(0, 1, 10), "accuracy_other": rng.uniform(0, 1, 10),
               "kl": rng.uniform(0, 10, 10)}
    return LayerSweep(3, 1, 1.0, "first", HOOKS, metrics, normal={"loss": 0.05, "flip_rate": 0.97, "accuracy_other": 0.98,
                                                                   "kl": 0.0})


@pytest.fixture(scope="module")
def csweep() -> CoeffSweep:
    rng = np.random.default_rng(2)
    coeffs = [-1.0, 0.0, 0.5, 1.0, 2.0]
    shape = (2, len(coeffs))
    metrics = {"loss": rng.uniform(0, 20, shape), "flip_rate": rng.uniform(0, 1, shape),
               "accuracy_other": rng.uniform(0, 1, shape), "kl": rng.uniform(0, 10, shape)}
    return CoeffSweep("layer0.post", "first", [(3, 1), (0, 9)], coeffs, metrics, normal={"loss": np.array([0.05, 0.06])})


def heatmaps(fig: go.Figure) -> list[go.Heatmap]:
    return [t for t in fig.data if isinstance(t, go.Heatmap)]


def test_grid_heatmap_with_study(grid) -> None:
    study = study_tables()
    fig = figures.grid_heatmap(grid, study)
    assert isinstance(fig, go.Figure)
    assert fig.layout.title.text == "Loss on the test set without b after adding a - b (coeff 1, first)"
    hm = heatmaps(fig)
    assert len(hm) == 2
    np.testing.assert_array_equal(np.asarray(hm[0].z), grid.loss)
    np.testing.assert_array_equal(np.asarray(hm[1].z), study.grid)
    assert [h.showscale for h in hm] == [False, True]
    assert all(h.colorbar.title.text == "cross-entropy (nats)" for h in hm)
    assert hm[0].zmax == hm[1].zmax == pytest.approx(max(grid.loss.max(), study.grid.max()))
    assert fig.layout.xaxis.title.text == fig.layout.xaxis2.title.text == "b (digit removed; its image subtracted)"
    assert fig.layout.yaxis.title.text == "a (digit whose image is added)"
    assert fig.layout.yaxis.autorange == "reversed"
    titles = [a.text for a in fig.layout.annotations]
    assert "hookedmlp, layer0.post" in titles and "the study, its 'layer 0'" in titles


@pytest.mark.parametrize("metric, label", [("flip_rate", "flip rate"), ("accuracy_other", "accuracy"), ("kl", "KL (nats)")])
def test_grid_heatmap_other_metrics(grid, metric, label) -> None:
    fig = figures.grid_heatmap(grid, study_tables(), metric=metric)  # the study only has a loss grid: one panel
    hm = heatmaps(fig)
    assert len(hm) == 1
    np.testing.assert_array_equal(np.asarray(hm[0].z), grid.metric(metric))
    assert hm[0].colorbar.title.text == label and hm[0].showscale
    assert fig.layout.title.text.startswith(label.capitalize() + " after adding a - b")
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text


def test_grid_heatmap_bad_metric(grid) -> None:
    with pytest.raises(ConfigError, match="metric must be one of"):
        figures.grid_heatmap(grid, metric="bogus")


def test_layer_sweep_figure(lsweep) -> None:
    study = study_tables()
    fig = figures.layer_sweep_figure(lsweep, study)
    assert fig.layout.title.text == "Steering with 3 - 1 at each hook point"
    assert fig.layout.xaxis.title.text == "hook point where a - b is added"
    assert fig.layout.yaxis.title.text == "cross-entropy without b (nats)"
    assert fig.layout.yaxis2.title.text == "share of 1s classified as 3"
    names = [t.name for t in fig.data]
    assert names == ["hookedmlp: loss without b", "hookedmlp: flip rate", "the study: loss after layer i"]
    assert list(fig.data[0].x) == HOOKS
    assert list(fig.data[2].x) == [f"layer{i}.post" for i in range(5)]
    np.testing.assert_array_equal(np.asarray(fig.data[2].y), study.sweep_loss)
    other = LayerSweep(5, 6, 1.0, "first", HOOKS, lsweep.metrics, lsweep.normal)
    assert len(figures.layer_sweep_figure(other, study).data) == 2  # the study only swept 3 - 1


def test_distributions_figure() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(10, 10, 10, 10))
    dist = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    pairs = [(3, 1), (0, 9), (5, 6), (7, 2)]
    fig = figures.distributions_figure(dist, pairs)
    assert fig.layout.title.text == "Softmax of the steered model's mean logits, per digit"
    hm = heatmaps(fig)
    assert len(hm) == 4
    for h, (a, b) in zip(hm, pairs):
        np.testing.assert_array_equal(np.asarray(h.z), dist[a, b])
    assert hm[0].colorbar.title.text == "probability" and hm[0].showscale
    assert [a.text for a in fig.layout.annotations] == ["3 - 1", "0 - 9", "5 - 6", "7 - 2"]
    assert fig.layout.xaxis.title.text == "predicted class"
    assert fig.layout.yaxis.title.text == "test images of digit"


def test_dose_response_figure(csweep) -> None:
    fig = figures.dose_response_figure(csweep)
    assert fig.layout.title.text == "Dose-response at layer0.post (first)"
    assert fig.layout.xaxis.title.text == fig.layout.xaxis2.title.text == "coefficient of the a - b vector"
    assert fig.layout.yaxis.title.text == "flip rate"
    assert fig.layout.yaxis2.title.text == "cross-entropy (nats)"
    assert len(fig.data) == 4
    assert list(fig.data[0].x) == csweep.coeffs
    np.testing.assert_array_equal(np.asarray(fig.data[1].y), csweep.loss[0])


def test_write_figure_html_and_png(grid, tmp_path) -> None:
    fig = figures.grid_heatmap(grid, study_tables())
    paths = figures.write_figure(fig, tmp_path / "grid_loss")
    assert paths == [tmp_path / "grid_loss.html", tmp_path / "grid_loss.png"]
    png = (tmp_path / "grid_loss.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000
    html = (tmp_path / "grid_loss.html").read_text()
    assert "<html" in html and 'src="plotly.min.js"' in html
    assert len(html) < 500_000  # plotly.js is not inlined
    js = tmp_path / "plotly.min.js"
    assert js.exists() and js.stat().st_size > 1_000_000
    mtime = js.stat().st_mtime_ns
    zeros = CoeffSweep("layer0.post", "first", [(3, 1)], [0.0, 1.0], {m: np.zeros((1, 2)) for m in ("loss", "flip_rate")},
                       normal={"loss": np.zeros(1)})
    figures.write_figure(figures.dose_response_figure(zeros), tmp_path / "dose", formats=("html",))
    assert (tmp_path / "dose.html").exists() and not (tmp_path / "dose.png").exists()
    assert js.stat().st_mtime_ns == mtime  # written once per directory
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.parametrize("fmt", ["jpeg", "PNG", "pdf", ""])
def test_write_figure_bad_format(grid, tmp_path, fmt) -> None:
    with pytest.raises(ValueError, match="unknown figure format" if fmt else None):
        figures.write_figure(figures.grid_heatmap(grid), tmp_path / "x", formats=(fmt,))
    assert list(tmp_path.iterdir()) == []


def test_write_figure_stem_with_dot(grid, tmp_path) -> None:
    paths = figures.write_figure(figures.grid_heatmap(grid), tmp_path / "grid_layer0.post", formats=("html",))
    assert paths == [tmp_path / "grid_layer0.post.html"]
