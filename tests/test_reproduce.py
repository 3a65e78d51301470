"""The study's tables, spearman, ``reproduce`` end to end (quick) and the ``hookedmlp`` CLI."""

import io
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hookedmlp import HookedMLP, ShapeError
from hookedmlp.data import load_mnist
from hookedmlp.progress import JobProgress
from hookedmlp_analysis.claims import CLAIMS, summarise
from hookedmlp_analysis.grid import GridResult
from hookedmlp_analysis.outputs import same_to_precision
from hookedmlp_analysis.published import StudyTables, spearman, study_tables
from hookedmlp_analysis.report import Reproduction, report_text
from hookedmlp_analysis.reproduce import distribution_pairs, reproduce
from hookedmlp_cli.commands import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = (
    "grid_loss",
    "grid_flip_rate",
    "layer_sweep_3_1",
    "distributions",
    "dose_response",
    "spread",
    "pixel_arithmetic",
)


# -- study tables and spearman ------------------------------------------------------------


def hand_ranks(x) -> list[float]:
    """1-based ranks, ties get the average of the ranks they span."""
    x = [float(v) for v in np.ravel(x)]
    order = sorted(range(len(x)), key=lambda i: x[i])
    ranks = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def hand_pearson(x: list[float], y: list[float]) -> float:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy)


def hand_spearman(x, y) -> float:
    return hand_pearson(hand_ranks(x), hand_ranks(y))


def test_hand_ranks_average_ties() -> None:
    assert hand_ranks([10, 20, 20, 5, 20]) == [2.0, 4.0, 4.0, 1.0, 4.0]


def test_study_tables() -> None:
    st = study_tables()
    assert isinstance(st, StudyTables)
    assert st.grid.shape == (10, 10) and st.normal.shape == (10,)
    assert st.grid[3, 1] == 12.7
    assert st.grid[0, 9] == 19.4 and st.grid[9, 0] == 4.9
    assert np.all(np.diag(st.grid) == 0.1)
    assert st.sweep_layers == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(st.sweep_loss, [7.8, 12.69, 12.69, 17.01, 17.01])
    assert st.normal.mean() == pytest.approx(0.0887, abs=1e-12)
    assert st.grid.sum() == pytest.approx(741.7, abs=1e-9)  # mean 7.417: the study's "~7.4"


def test_spearman_known_values() -> None:
    assert spearman(np.array([1, 2, 3]), np.array([10, 30, 20])) == pytest.approx(0.5)
    assert spearman(np.arange(7), np.arange(7) ** 3) == pytest.approx(1.0)
    assert spearman(np.arange(7), -np.exp(np.arange(7))) == pytest.approx(-1.0)


def test_spearman_matches_hand_computation_with_ties() -> None:
    st = study_tables()
    rng = np.random.default_rng(0)
    other = np.round(rng.uniform(0, 5, (10, 10)), 0)  # many ties on both sides
    assert spearman(st.grid, other) == pytest.approx(hand_spearman(st.grid, other), abs=1e-12)
    off = ~np.eye(10, dtype=bool)
    assert spearman(st.grid[off], other[off]) == pytest.approx(hand_spearman(st.grid[off], other[off]), abs=1e-12)
    x, y = np.array([1.0, 1.0, 2.0, 3.0, 3.0, 3.0]), np.array([6.0, 5.0, 5.0, 1.0, 2.0, 2.0])
    assert spearman(x, y) == pytest.approx(hand_spearman(x, y), abs=1e-12)
    assert spearman(x.reshape(2, 3), y.reshape(3, 2)) == pytest.approx(hand_spearman(x, y), abs=1e-12)  # raveled


@pytest.mark.parametrize("x, y", [(np.arange(3), np.arange(4)), (np.array([1.0]), np.array([2.0]))])
def test_spearman_rejects_bad_lengths(x, y) -> None:
    with pytest.raises(
        ShapeError, match=re.escape(f"spearman needs two arrays of one length >= 2, got {x.shape} and {y.shape}")
    ):
        spearman(x, y)


# -- reproduce end to end -------------------------------------------------------------


@pytest.fixture
def small_test_set(monkeypatch):
    """Make ``reproduce`` see a 200-image test set (quick then scores 200 images, 10 per digit)."""
    real = load_mnist

    def small(split="train", *args, **kwargs):
        images, labels = real(split, *args, **kwargs)
        return (images[:200], labels[:200]) if split == "test" else (images, labels)

    monkeypatch.setattr("hookedmlp_analysis.reproduce.load_mnist", small)


@pytest.fixture(scope="module")
def repro(tmp_path_factory) -> tuple[Reproduction, Path, list[str], str]:
    """A quick run: its result, folder, log lines and progress lines (every update, as without a terminal)."""
    out = tmp_path_factory.mktemp("repro")
    lines: list[str] = []
    status = io.StringIO()
    r = reproduce(out_dir=out, quick=True, progress=JobProgress("reproduce", stream=status, every=0), log=lines.append)
    return r, out, lines, status.getvalue()


def test_reproduce_shows_one_progress_over_the_whole_job(repro) -> None:
    """One display from 0% to 100%, never going back, naming each step; the ETA is there once work is done."""
    updates = repro[3].splitlines()
    shares = [int(re.match(r"reproduce: (\d+)% after ", u)[1]) for u in updates]
    assert shares[0] == 0 and shares[-1] == 100 and shares == sorted(shares)
    assert updates[0].endswith("about ? left: headline: all pairs at every hook point")
    assert all(re.search(r"about \d\d:\d\d left", u) for u, share in zip(updates, shares) if share > 0)
    steps = [u.split(" left: ")[1] for u in updates]
    assert "spread: run 1" in steps and "spread: run 4 of 4" in steps and "control: run 2 of 2" in steps
    assert steps[-2:] == ["figures", "done"]


def test_reproduce_writes_report_figures_and_data(repro) -> None:
    r, out, lines, _ = repro
    figs = out / "figures"
    for stem in FIGURES:
        assert (figs / f"{stem}.png").read_bytes().startswith(PNG_MAGIC), stem
        html = (figs / f"{stem}.html").read_text()
        assert html.startswith("<!DOCTYPE html>") and 'src="plotly.min.js"' in html and "* plotly.js v" not in html
    explorer = (figs / "distributions_all.html").read_text()
    assert explorer.count('"method":"restyle"') == 100  # a menu entry per pair
    assert [p.name for p in figs.glob("*.js")] == ["plotly.min.js"] and not (figs / "distributions_all.png").exists()
    text = (out / "reproduction.md").read_text()
    for stem in FIGURES:
        assert f"(figures/{stem}.png)" in text
    assert "(figures/distributions_all.html)" in text
    assert lines[-1] == f"report: {out / 'reproduction.md'}"  # the last line, where a glance finds it
    assert [line.split(":")[0].strip() for line in lines[-len(CLAIMS) - 1 : -1]] == [c.key for c in CLAIMS]
    assert any(line.startswith("spread: 2 models x 2 vector sources") for line in lines)
    bias = next(s for s in r.steer["sites"] if s["kind"] == "bias")
    assert r.steer_n_test == 100 and f"| bias | bias | 1.00 | {bias['pauc']:.3f} |" in text
    assert "| `layer1.post..layer3.pre` | class (internal) | 0.50 |" in text  # a hook class, reported once
    e = r.explained
    assert list(e["panels"]) == [
        "x_a: the first 3",
        "x_b: the first 1",
        "x_a - x_b: what layer0.post adds",
        "a test 7 + (x_a - x_b)",
    ]
    assert e["pairs"] == 90 and e["n_test"] == 100 and f"Spearman's rho = {e['pixel']['rho_template']:.2f}" in text
    assert e["linear"]["layer3.post"]["explained"]["median"] == pytest.approx(1.0)  # the logit class: affine after it
    assert f"{e['windows']['with_window']} of 90 pairs have a window at all" in text
    back = Reproduction.from_dict(json.loads((figs / "reproduction.json").read_text()))
    assert same_to_precision(text, report_text(back)), "the saved data must render the same report"


def test_reproduce_report_numbers(repro) -> None:
    r, out, *_ = repro
    text = (out / "reproduction.md").read_text()
    st = study_tables()
    off = ~np.eye(10, dtype=bool)
    assert "Quick run: the headline scored only 1000 test images." in text
    summaries = summarise([run.claims for run in r.runs])
    for i, (claim, s) in enumerate(zip(CLAIMS, summaries)):
        assert f"| {i + 1}. {claim.statement} |" in text
        assert f"| **{s.verdict}** | {s.median:.3f} [{s.low:.3f}, {s.high:.3f}] |" in text
    rho_all, rho_off = hand_spearman(r.grid.loss, st.grid), hand_spearman(r.grid.loss[off], st.grid[off])
    assert f"{rho_all:.3f} over all 100 cells and {rho_off:.3f} over the 90 off-diagonal cells" in text
    for h in ("layer0.post", "layer1.post", "layer3.post"):
        rho = hand_spearman(r.grids[h].loss[off], st.grid[off])
        assert f"| `{h}` | {rho:.3f} | {r.grids[h].loss[3, 1]:.2f} |" in text
    assert "reads 12.7, but its layer sweep for 3 - 1 reads 7.80 at layer 0 and 12.69 at layers 1 and 2" in text
    assert f"goes from {r.grid.normal['loss'].mean():.3f} unsteered (the study: 0.089)" in text
    assert "| 3 | " + " | ".join(f"{v:.2f}" for v in r.grid.loss[3]) + " |" in text
    assert "| 3 | 19.0 | 12.7 | 15.9 |" in text  # the study's table, as printed
    assert f"reaches {r.control_test_loss:.3f}" in text and "## A control model at the study's test loss" in text


def test_reproduce_results_are_consistent(repro) -> None:
    r, out, *_ = repro
    model = HookedMLP.from_pretrained("mnist-mlp").eval()
    assert r.n_test == 1000 and r.grid.n_test == 1000 and list(r.grids) == model.hook_names
    assert (
        len(r.runs) == 4
        and {run.model for run in r.runs} == {"mnist-mlp", "mnist-mlp-seed1"}
        and len(r.control_runs) == 2
    )
    images, labels = load_mnist("test")
    with torch.no_grad():
        logits = model.to_sequential()(images)
    assert r.test_loss == pytest.approx(float(F.cross_entropy(logits, labels)), abs=1e-5)  # all 10,000 images
    seq = model.to_sequential()
    train_x, train_y = load_mnist("train")
    first = {d: train_x[int((train_y == d).nonzero()[0, 0])] for d in (3, 1)}
    x, y = images[:1000], labels[:1000]
    with torch.no_grad():
        steered = seq[2:](seq[:2](x) + seq[1](first[3]) - seq[1](first[1]))
    keep = y != 1
    assert r.grid.loss[3, 1] == pytest.approx(float(F.cross_entropy(steered[keep], y[keep])), rel=1e-5, abs=1e-5)
    back = GridResult.load(out / "figures" / "grid_layer0_post.json")
    np.testing.assert_allclose(back.loss, r.grid.loss, rtol=0, atol=5e-7)


def test_a_second_run_leaves_every_tracked_file_alone(repro, tmp_path) -> None:
    """The main job on a clean checkout leaves it clean: only untracked HTML is rewritten."""
    shutil.copytree(repro[1], tmp_path, dirs_exist_ok=True, copy_function=shutil.copy2)
    before = {
        p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".html"
    }
    assert any(p.suffix == ".png" for p in before)
    reproduce(out_dir=tmp_path, quick=True, progress=False, log=lambda s: None)
    after = {
        p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".html"
    }
    assert after == before


# -- CLI ------------------------------------------------------------------------------------


def one_line(err: str) -> str:
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    return lines[0]


def test_cli_reproduce_quick_no_figures(tmp_path, capsys, small_test_set) -> None:
    assert main(["reproduce", "--quick", "--out", str(tmp_path), "--no-figures"]) == 0
    text = (tmp_path / "reproduction.md").read_text()
    assert "## Claims checked" in text and "the headline scored only 200 test images" in text
    assert "![" not in text and ".png" not in text
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["grid_layer0_post.json", "reproduction.json"]
    assert "headline run on 200 test images" in capsys.readouterr().out


def test_cli_grid_unknown_hook(capsys) -> None:
    assert main(["grid", "--hook", "layer0.pst"]) == 2
    cap = capsys.readouterr()
    line = one_line(cap.err)
    assert line.startswith("hookedmlp grid: error:")
    assert "did you mean 'layer0.post'" in line
    assert cap.out == ""


def test_cli_sweep_same_digits(capsys) -> None:
    assert main(["sweep", "--a", "3", "--b", "3"]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("hookedmlp sweep: error:") and "--a and --b are both 3" in line


def test_cli_reproduce_train_and_checkpoint_exclude(tmp_path, capsys) -> None:
    assert main(["reproduce", "--train", "--checkpoint", str(tmp_path / "x.pt"), "--out", str(tmp_path)]) == 2
    assert "exclude each other" in one_line(capsys.readouterr().err)


def test_cli_missing_checkpoint(tmp_path, capsys) -> None:
    assert main(["grid", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert one_line(capsys.readouterr().err).startswith("hookedmlp grid: error:")


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["grid", "--coeff", "nan"], "finite"),
        (["sweep", "--coeff", "inf"], "finite"),
        (["grid", "--coeff", "abc"], "expected a number"),
        (["sweep", "--a", "12"], "expected a digit 0-9"),
        (["sweep", "--b", "-1"], "expected a digit 0-9"),
        (["grid", "--metric", "bogus"], "invalid choice"),
        (["grid", "--method", "median"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_cli_bad_flags_exit_2_one_line(argv, needle, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("hookedmlp") and "error:" in line and needle in line


@pytest.fixture
def small_scoring_set(monkeypatch):
    """Make the CLI's grid and sweep score on 200 test images instead of 10,000."""
    images, labels = load_mnist("test")

    def small(test=None):
        return images[:200], labels[:200]

    monkeypatch.setattr("hookedmlp_analysis.grid.scoring_set", small)
    monkeypatch.setattr("hookedmlp_analysis.sweep.scoring_set", small)


def test_cli_grid_runs(small_scoring_set, tmp_path, capsys) -> None:
    assert main(["grid", "--coeff", "-0.5", "--metric", "flip_rate", "--json", str(tmp_path / "g.json")]) == 0
    out = capsys.readouterr().out
    assert (
        "share of the test images of b classified as a (layer0.post, coeff -0.5, first training image of each digit)"
        in out
    )
    assert "| 3 |" in out
    assert "GridResult(layer0.post, coeff=-0.5" in out and "n_test=200" in out
    g = GridResult.load(tmp_path / "g.json")
    assert g.coeff == -0.5 and g.n_test == 200


def test_cli_sweep_runs(small_scoring_set, capsys) -> None:
    assert main(["sweep", "--a", "7", "--b", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("7 - 2 (coeff 1, method first)")
    assert len([line for line in out.splitlines() if line.startswith("| layer")]) == 10


def test_cli_grid_pattern_hook_one_line(small_scoring_set, capsys) -> None:
    assert main(["grid", "--hook", "layer*.post"]) == 2
    assert one_line(capsys.readouterr().err).startswith("hookedmlp grid: error:")


def test_distribution_pairs_say_why_each_was_chosen(repro) -> None:
    g = repro[0].grid
    pairs = distribution_pairs(g)
    assert len(pairs) == 6 and len({p for p, _ in pairs}) == 6 and all(a != b for (a, b), _ in pairs)
    assert pairs[0] == ((3, 1), "the study's example")
    flips = {(a, b): g.cell(a, b)["flip_rate"] for a in g.digits for b in g.digits if a != b}
    losses = {(a, b): g.cell(a, b)["loss"] for a in g.digits for b in g.digits if a != b}
    by_reason = {why: pair for pair, why in pairs}
    assert flips[by_reason.get("the strongest flip", (3, 1))] == max(flips.values())
    assert flips[by_reason.get("the weakest flip", (3, 1))] == min(flips.values())
    assert losses[by_reason.get("the most damage", (3, 1))] == max(losses.values())
    assert set(by_reason) <= {
        "the study's example",
        "the strongest flip",
        "the weakest flip",
        "a median flip",
        "the most damage",
        "the least damage",
        "a strong flip",
    }
