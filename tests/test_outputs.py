"""Tracked outputs change only where a number changes beyond its printed precision."""

from pathlib import Path

import pytest

from hookedmlp_analysis.outputs import Outputs, same_to_precision


@pytest.mark.parametrize(
    "old, new, same",
    [
        ("loss 6.79 at layer0.post", "loss 6.80 at layer0.post", True),  # one unit in the last digit
        ("loss 6.79", "loss 6.81", False),
        ("layer0.post", "layer1.post", False),  # digits in names are text
        ("66 of 90 pairs", "67 of 90 pairs", False),  # integers exactly
        ("rate 65.4%", "rate 65.5%", True),
        ("a 1e-05", "a 1.1e-05", True),
        ("x 0.5", "x 0.5 y", False),
        ("| 0.06 | 7.71 |", "| 0.06 | 7.72 |", True),
    ],
)
def test_same_to_precision(old, new, same):
    assert same_to_precision(old, new) is same


def test_text_is_kept_when_only_noise_differs(tmp_path: Path):
    out = Outputs(tmp_path)
    path = out.text("r.md", "loss 6.79\n")
    assert out.written == [path]
    mtime = path.stat().st_mtime_ns
    again = Outputs(tmp_path)
    again.text("r.md", "loss 6.80\n")
    assert again.kept == [path] and again.written == [] and path.read_text() == "loss 6.79\n"
    assert path.stat().st_mtime_ns == mtime
    Outputs(tmp_path).text("r.md", "loss 6.90\n")
    assert path.read_text() == "loss 6.90\n"


def test_figure_png_only_when_its_numbers_change(tmp_path: Path):
    calls = []

    def writer(stem, formats):
        calls.append(list(formats))
        paths = [stem.with_name(f"{stem.name}.{f}") for f in formats]
        for p in paths:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("x")
        return paths

    out = Outputs(tmp_path)
    out.figure("figures/f", [1.23456, 2.0], writer)
    assert out.close() is not None
    second = Outputs(tmp_path)
    second.figure("figures/f", [1.23457, 2.0], writer)  # beyond 4 significant digits: noise
    assert second.close() is None
    third = Outputs(tmp_path)
    third.figure("figures/f", [1.3, 2.0], writer)
    assert third.close() is not None
    assert calls == [["html", "png"], ["html"], ["html", "png"]]
    redrawn = Outputs(tmp_path, code="v2")
    redrawn.figure("figures/f", [1.3, 2.0], writer)  # the drawing code changed: redraw
    assert redrawn.close() is not None
    again = Outputs(tmp_path, code="v2")
    again.figure("figures/f", [1.3, 2.0], writer)
    assert again.close() is None and calls[3:] == [["html", "png"], ["html"]]
