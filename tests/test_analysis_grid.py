"""analysis.grid (steering_grid, GridResult) and analysis.distributions against plain-torch references."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hookedmlp import HookedMLP
from hookedmlp.data import load_mnist
from hookedmlp.errors import ConfigError, HookedMLPError, HookNameError
from hookedmlp_analysis.distributions import steered_distributions
from hookedmlp_analysis.grid import NORMAL_ROW, GridResult, steering_grid
from hookedmlp_analysis.metrics import METRICS

N = 300


@pytest.fixture(scope="module")
def grid(model, data) -> GridResult:
    images, labels = data
    return steering_grid(model, "layer0.post", test=(images, labels), keep_distributions=True)


@pytest.fixture(scope="module")
def first_train_images() -> torch.Tensor:
    """The first training image of each digit, found from the training labels (not via first_example)."""
    images, labels = load_mnist("train")
    rows = []
    for d in range(10):
        idx = next(i for i, label in enumerate(labels.tolist()) if label == d)
        rows.append(images[idx])
    return torch.stack(rows)


def reference_cell(model: HookedMLP, images, labels, first, a: int, b: int) -> dict[str, float]:
    """One cell computed with the plain nn.Sequential: add x_a - x_b after module 0."""
    seq = model.to_sequential()  # Flatten, Linear, ReLU, Linear, ReLU, Linear
    with torch.no_grad():
        head, tail = seq[:2], seq[2:]
        v = head(first[a : a + 1])[0] - head(first[b : b + 1])[0]
        base = seq(images)
        steered = tail(head(images) + v)
    other, is_b = labels != b, labels == b
    logp, base_logp = F.log_softmax(steered, -1), F.log_softmax(base, -1)
    kl = (base_logp.exp() * (base_logp - logp)).sum(-1)
    return {
        "loss": float(F.cross_entropy(steered[other], labels[other])),
        "flip_rate": float((steered[is_b].argmax(-1) == a).double().mean()),
        "accuracy_other": float((steered[other].argmax(-1) == labels[other]).double().mean()),
        "kl": float(kl[other].mean()),
        "collateral": float((steered[other].argmax(-1) != base[other].argmax(-1)).double().mean()),
    }


@pytest.mark.parametrize("a, b", [(3, 1), (0, 9), (7, 2), (5, 6), (1, 8)])
def test_cells_equal_plain_torch_reference(model, data, grid, first_train_images, a, b) -> None:
    images, labels = data
    ref = reference_cell(model, images, labels, first_train_images, a, b)
    got = grid.cell(a, b)
    assert set(got) == set(METRICS)
    for name in METRICS:
        assert got[name] == pytest.approx(ref[name], rel=1e-5, abs=1e-5), name
    assert ref["loss"] > 5 * float(grid.normal["loss"][b])  # steering really does something here


def test_diagonal_is_the_unsteered_model(model, data, grid) -> None:
    images, labels = data
    with torch.no_grad():
        logits = model.to_sequential()(images)
    for d in range(10):
        for name in METRICS:
            assert grid.metrics[name][d, d] == pytest.approx(float(grid.normal[name][d]), abs=1e-6), name
        assert grid.kl[d, d] == 0.0
        keep = labels != d
        assert grid.normal["loss"][d] == pytest.approx(float(F.cross_entropy(logits[keep], labels[keep])), abs=1e-6)
        assert grid.normal["accuracy_other"][d] == pytest.approx(
            float((logits[keep].argmax(-1) == labels[keep]).float().mean()), abs=1e-7
        )


def test_grid_fields(model, grid) -> None:
    assert grid.hook == "layer0.post" and grid.coeff == 1.0 and grid.method == "first"
    assert grid.digits == list(range(10)) and grid.n_test == N
    for name in METRICS:
        assert grid.metric(name).shape == (10, 10)
        assert np.isfinite(grid.metric(name)).all()
    assert set(grid.normal) == set(grid.metrics) == set(METRICS)
    assert all(v.shape == (10,) for v in grid.normal.values())
    assert grid.engine.startswith("folded prefix/suffix, stacked") and "100 additions" in grid.engine
    assert ((grid.flip_rate >= 0) & (grid.flip_rate <= 1)).all()
    assert (grid.kl >= -1e-6).all()
    assert grid.off_diagonal("loss").shape == (90,)
    assert isinstance(grid.model, str) and len(grid.model) == 12


def test_subset_of_digits_is_a_block_of_the_full_grid(model, data, grid) -> None:
    images, labels = data
    digits = [7, 3, 1]
    sub = steering_grid(model, test=(images, labels), digits=digits)
    assert sub.digits == digits and sub.loss.shape == (3, 3)
    idx = np.ix_(digits, digits)
    for name in METRICS:
        np.testing.assert_allclose(sub.metric(name), grid.metric(name)[idx], rtol=0, atol=1e-5)
    for name in METRICS:
        np.testing.assert_allclose(sub.normal[name], grid.normal[name][digits], atol=1e-7)
    assert sub.cell(3, 1) == pytest.approx(grid.cell(3, 1), abs=1e-5)


def test_coeff_scales_the_vector(model, data, first_train_images) -> None:
    images, labels = data
    g = steering_grid(model, test=(images, labels), digits=[3, 1], coeff=-0.5)
    seq = model.to_sequential()
    with torch.no_grad():
        v = seq[:2](first_train_images[3:4])[0] - seq[:2](first_train_images[1:2])[0]
        steered = seq[2:](seq[:2](images) - 0.5 * v)
    keep = labels != 1
    assert g.coeff == -0.5
    assert g.cell(3, 1)["loss"] == pytest.approx(
        float(F.cross_entropy(steered[keep], labels[keep])), rel=1e-5, abs=1e-5
    )


# -- distributions --------------------------------------------------------------------


def test_steered_distributions(model, data, grid, first_train_images) -> None:
    images, labels = data
    dist = steered_distributions(model, test=(images, labels))
    assert dist.shape == (10, 10, 10, 10)
    np.testing.assert_allclose(dist.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(dist, grid.distributions, atol=1e-6)
    seq = model.to_sequential()
    with torch.no_grad():
        logits = seq(images)
        v = seq[:2](first_train_images[3:4])[0] - seq[:2](first_train_images[1:2])[0]
        steered = seq[2:](seq[:2](images) + v)
    unsteered = np.stack([F.softmax(logits[labels == d].mean(0), -1).numpy() for d in range(10)])
    for a in range(10):
        np.testing.assert_allclose(dist[a, a], unsteered, atol=1e-6)
    ref_31 = np.stack([F.softmax(steered[labels == d].mean(0), -1).numpy() for d in range(10)])
    np.testing.assert_allclose(dist[3, 1], ref_31, atol=1e-5)


# -- GridResult -----------------------------------------------------------------------


def test_to_markdown(grid) -> None:
    md = grid.to_markdown()
    lines = md.splitlines()
    assert "layer0.post" in lines[0] and "cross-entropy" in lines[0]
    assert lines[2] == "| a \\ b | 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 |"
    row3 = next(line for line in lines if line.startswith("| 3 |"))
    cells = [c.strip() for c in row3.strip("|").split("|")][1:]
    assert cells == [f"{v:.2f}" for v in grid.loss[3]]
    assert cells[1] == f"{grid.loss[3, 1]:.2f}"
    normal = lines[-3]
    assert normal.startswith("| Normal |") and lines[-2:] == ["", NORMAL_ROW]
    assert NORMAL_ROW.startswith("Normal (the study's name): the unsteered model, no vector added")
    assert [c.strip() for c in normal.strip("|").split("|")][1:] == [f"{v:.3f}" for v in grid.normal["loss"]]
    flips = grid.to_markdown("flip_rate", precision=3)
    assert flips.splitlines()[0].startswith("share of the test images of b classified as a (layer0.post, coeff 1")
    assert flips.splitlines()[-3] == "| Normal | " + " | ".join(f"{v:.4f}" for v in grid.normal["flip_rate"]) + " |"
    assert f"{grid.flip_rate[3, 1]:.3f}" in next(line for line in flips.splitlines() if line.startswith("| 3 |"))
    with pytest.raises(
        ConfigError,
        match="metric must be one of 'loss', 'flip_rate', 'accuracy_other', 'kl', 'collateral', got 'bogus'",
    ):
        grid.to_markdown("bogus")


def test_save_load_round_trip(grid, tmp_path) -> None:
    """Saved numbers are rounded to 6 decimals; loading gives exactly those, and saving again the same file."""
    path = tmp_path / "sub" / "grid.json"
    path.parent.mkdir()
    grid.save(path)
    back = GridResult.load(path)
    assert back == grid
    for name in ("hook", "coeff", "method", "digits", "n_test", "model", "exemplar", "engine"):
        assert getattr(back, name) == getattr(grid, name)
    six = lambda v: np.round(np.asarray(v, dtype=np.float64), 6)  # noqa: E731
    for name in METRICS:
        np.testing.assert_array_equal(back.metrics[name], six(grid.metrics[name]))
        np.testing.assert_array_equal(back.normal[name], six(grid.normal[name]))
        np.testing.assert_allclose(back.metrics[name], grid.metrics[name], rtol=0, atol=5e-7)
    np.testing.assert_array_equal(back.distributions, six(grid.distributions))
    assert back.cell(3, 1) == {m: float(six(grid.metrics[m][3, 1])) for m in METRICS}
    again = tmp_path / "again.json"
    back.save(again)
    assert again.read_bytes() == path.read_bytes()
    assert GridResult.load(again) == back
    assert back.to_markdown() == grid.to_markdown()


def test_equality_is_to_six_decimals(grid) -> None:
    import copy

    other = copy.deepcopy(grid)
    other.metrics["loss"] = np.round(grid.loss.astype(np.float64), 6)  # what a saved grid holds
    assert other == grid
    other.metrics["loss"] = grid.loss + 1e-5
    assert other != grid


def test_save_load_without_distributions(model, data, tmp_path) -> None:
    images, labels = data
    g = steering_grid(model, test=(images[:50], labels[:50]), digits=[0, 1])
    assert g.distributions is None
    g.save(tmp_path / "g.json")
    back = GridResult.load(tmp_path / "g.json")
    assert back.distributions is None and back == g
    np.testing.assert_array_equal(back.loss, np.round(g.loss.astype(np.float64), 6))


@pytest.mark.parametrize("text", ["not json at all", "[1, 2, 3]", '{"hook": "layer0.post"}', "null"])
def test_load_rejects_bad_json(tmp_path, text) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError):
        GridResult.load(path)


def test_load_rejects_json_missing_one_field(grid, tmp_path) -> None:
    data = grid.to_dict()
    del data["normal"]
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="not a saved GridResult"):
        GridResult.load(path)


def test_metric_cell_repr(grid) -> None:
    with pytest.raises(ConfigError, match="metric must be one of .*; did you mean 'accuracy_other'"):
        grid.metric("accuracy")
    assert grid.metric("kl") is grid.kl is grid.metrics["kl"]
    cell = grid.cell(3, 1)
    assert cell == {m: float(grid.metric(m)[3, 1]) for m in METRICS}
    assert all(isinstance(v, float) for v in cell.values())
    r = repr(grid)
    assert r.startswith("GridResult(layer0.post, coeff=1, first training image of each digit, 10x10")
    assert f"mean loss off-diagonal {grid.off_diagonal().mean():.3f}" in r
    assert f"(normal {grid.normal['loss'].mean():.3f})" in r
    assert f"n_test={N}" in r
    assert "<table>" in grid._repr_html_()


# -- errors ---------------------------------------------------------------------------


def test_unknown_hook_suggests(model, data) -> None:
    images, labels = data
    with pytest.raises(HookNameError, match="did you mean 'layer0.post'"):
        steering_grid(model, "layer0.pst", test=(images, labels))


def test_pattern_hook_gives_a_hookedmlp_error(model, data) -> None:
    images, labels = data
    with pytest.raises(HookedMLPError):
        steering_grid(model, "layer*.post", test=(images[:50], labels[:50]), digits=[0, 1])


def test_bad_scoring_sets(model, data) -> None:
    images, labels = data
    with pytest.raises(HookedMLPError, match="test images must be floating point, got dtype torch.uint8"):
        steering_grid(model, test=((images * 255).to(torch.uint8), labels), digits=[0, 1])
    with pytest.raises(HookedMLPError, match="test images contain NaN"):
        steering_grid(model, test=(torch.full_like(images, float("nan")), labels), digits=[0, 1])
    with pytest.raises(ConfigError, match="digits is empty"):
        steering_grid(model, test=(images, labels), digits=[])
