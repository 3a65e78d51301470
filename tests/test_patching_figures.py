"""The patching figures (analysis.figures) on synthetic results: what each shows, titles and axes, the palette."""

import math

import numpy as np
import pytest
import torch

from hookedmlp.patching import PatchResult, compare
from hookedmlp_analysis import figures


def _result(values, kind="activation") -> PatchResult:
    return PatchResult(
        torch.tensor(values, dtype=torch.float64),
        hooks=["input", "hidden", "logits"],
        grids=[(4,), (3,), (2,)],
        per="unit",
        kind=kind,
        direction="denoise",
        metric="logit_diff",
        base=0.0,
        source=5.0,
        n=7,
    )


EXACT = [0.1, -0.2, 0.0, 0.3, 1.0, -0.5, 0.25, 4.0, 0.0]
ESTIMATE = [0.2, -0.1, 0.1, 0.3, 1.5, -0.25, 0.0, 4.0, 0.5]


def test_the_heatmap_has_a_row_per_hook_point_and_a_column_per_unit() -> None:
    fig = figures.patching_heatmap(_result(EXACT))
    z = np.array(fig.data[0].z, dtype=float)
    assert list(fig.data[0].y) == ["input", "hidden", "logits"] and z.shape == (3, 4)
    np.testing.assert_allclose(z[1, :3], [1.0, -0.5, 0.25])
    assert math.isnan(z[1, 3]) and math.isnan(z[2, 2])
    bound = float(np.nanquantile(np.abs(z), 0.99))
    assert (fig.data[0].zmin, fig.data[0].zmax) == (-bound, bound)
    assert fig.layout.title.text.startswith("Activation patching, per unit<br><sup>logit_diff on 7 pairs: corrupt run")
    assert fig.layout.xaxis.title.text.startswith("unit") and fig.layout.yaxis.title.text == "hook point"


def test_the_hook_point_chart_shows_each_hook_points_strongest_entry() -> None:
    fig = figures.patching_hooks_figure(_result(EXACT))
    assert list(fig.data[0].x) == ["input", "hidden", "logits"]
    assert list(fig.data[0].y) == [0.3, 1.0, 4.0] and list(fig.data[0].customdata) == ["(3,)", "(0,)", "(0,)"]
    assert fig.layout.shapes[0].y0 == 5.0  # the full patch: source - base
    assert fig.data[0].marker.color == figures.SAFE[0]
    assert fig.layout.yaxis.title.text == "change in logit_diff, strongest entry"


def test_the_scatter_shows_estimate_against_exact_with_the_agreement() -> None:
    exact, estimate = _result(EXACT), _result(ESTIMATE, kind="attribution")
    fig = figures.attribution_scatter(exact, estimate)
    assert [t.name for t in fig.data] == ["input", "hidden", "logits", "equal"]
    np.testing.assert_allclose(fig.data[1].x, [1.0, -0.5, 0.25])
    np.testing.assert_allclose(fig.data[1].y, [1.5, -0.25, 0.0])
    assert [t.marker.color for t in fig.data[:3]] == list(figures.SAFE[:3])
    agreement = compare(exact, estimate)
    assert f"Pearson r = {agreement.pearson:.3f}" in fig.layout.title.text
    assert fig.layout.xaxis.title.text == "exact change in logit_diff (activation patching)"


@pytest.mark.parametrize("make", [figures.patching_heatmap, figures.patching_hooks_figure])
def test_patching_figures_write_html(make, tmp_path) -> None:
    written = figures.write_figure(make(_result(EXACT)), tmp_path / "fig", ("html",))
    assert written == [tmp_path / "plotly.min.js", tmp_path / "fig.html"]  # the folder's one plotly.js, then the page
    assert written[-1].read_text().startswith("<!DOCTYPE html>")
