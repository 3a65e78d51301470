"""analysis.sweep: all_pairs_sweep vs steering_grid, layer_sweep vs the grids, coeff_sweep vs model.steer."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hookedmlp.errors import SteeringError
from hookedmlp_analysis.grid import GridResult, steering_grid
from hookedmlp_analysis.metrics import METRICS
from hookedmlp_analysis.sweep import CoeffSweep, LayerSweep, all_pairs_sweep, coeff_sweep, layer_sweep

N = 200
DIGITS = (0, 1, 3, 5, 7)


@pytest.fixture(scope="module")
def sweep(model, data) -> dict[str, GridResult]:
    images, labels = data
    return all_pairs_sweep(model, test=(images, labels), digits=DIGITS, keep_distributions=True)


@pytest.fixture(scope="module")
def lsweep(model, data) -> LayerSweep:
    images, labels = data
    return layer_sweep(model, 3, 1, test=(images, labels))


def test_all_pairs_sweep_covers_every_hook(model, sweep) -> None:
    assert list(sweep) == model.hook_names
    for h, g in sweep.items():
        assert g.hook == h and g.digits == list(DIGITS) and g.n_test == N
        assert g.loss.shape == (len(DIGITS), len(DIGITS))
        assert g.distributions is not None and g.distributions.shape == (len(DIGITS), len(DIGITS), 10, 10)


@pytest.mark.parametrize(
    "hook",
    [
        "layer0.pre",
        "layer0.post",
        "layer1.pre",
        "layer1.post",
        "layer2.pre",
        "layer2.post",
        "layer3.pre",
        "layer3.post",
        "layer4.pre",
        "layer4.post",
    ],
)
def test_all_pairs_sweep_equals_steering_grid(model, data, sweep, hook) -> None:
    images, labels = data
    ref = steering_grid(model, hook, test=(images, labels), digits=DIGITS, keep_distributions=True)
    got = sweep[hook]
    for name in METRICS:
        np.testing.assert_allclose(got.metric(name), ref.metric(name), rtol=0, atol=1e-4, err_msg=name)
    np.testing.assert_allclose(got.distributions, ref.distributions, rtol=0, atol=1e-5)
    for name in METRICS:
        np.testing.assert_array_equal(got.normal[name], ref.normal[name])
    assert got.model == ref.model


def test_all_pairs_sweep_subset_of_hooks(model, data) -> None:
    images, labels = data
    out = all_pairs_sweep(model, hooks=["*.post"], test=(images[:100], labels[:100]), digits=(3, 1))
    assert list(out) == [f"layer{i}.post" for i in range(5)]


def test_layer_sweep_matches_grid_cells(model, sweep, lsweep) -> None:
    assert lsweep.hooks == model.hook_names
    assert (lsweep.a, lsweep.b, lsweep.coeff, lsweep.method) == (3, 1, 1.0, "first")
    i, j = DIGITS.index(3), DIGITS.index(1)
    for k, h in enumerate(lsweep.hooks):
        for name in METRICS:
            assert getattr(lsweep, name)[k] == pytest.approx(float(sweep[h].metric(name)[i, j]), abs=1e-5), (h, name)
    assert set(lsweep.normal) == set(METRICS)
    for name in METRICS:
        assert lsweep.normal[name] == pytest.approx(float(sweep["layer0.post"].normal[name][j]), abs=1e-7)


def test_layer_sweep_equal_pairs(lsweep) -> None:
    at = {h: k for k, h in enumerate(lsweep.hooks)}
    for i in range(4):  # layer{i}.post and layer{i+1}.pre are one tensor
        for name in METRICS:
            values = getattr(lsweep, name)
            assert values[at[f"layer{i}.post"]] == values[at[f"layer{i + 1}.pre"]], (i, name)
    # and a vector before a Linear equals its image after it (the study's equal pairs)
    for before, after in [
        ("layer0.pre", "layer0.post"),
        ("layer1.post", "layer2.post"),
        ("layer3.post", "layer4.post"),
    ]:
        assert lsweep.loss[at[before]] == pytest.approx(lsweep.loss[at[after]], abs=1e-4)
        assert lsweep.flip_rate[at[before]] == pytest.approx(lsweep.flip_rate[at[after]], abs=0.02)  # at most one image
    # the values across the ReLUs differ (else the sweep would be meaningless)
    assert abs(lsweep.loss[at["layer0.post"]] - lsweep.loss[at["layer1.post"]]) > 0.1


def test_layer_sweep_markdown(lsweep) -> None:
    md = lsweep.to_markdown()
    assert md.startswith("3 - 1 (coeff 1, method first)")
    assert f"unsteered loss without 1: {lsweep.normal['loss']:.3f}" in md.splitlines()[0]
    assert md.splitlines()[2] == "| hook | loss without b | flip rate | accuracy other | KL | collateral |"
    assert (
        f"| layer0.post | {lsweep.loss[1]:.2f} | {lsweep.flip_rate[1]:.3f} | {lsweep.accuracy_other[1]:.3f} | "
        f"{lsweep.kl[1]:.2f} | {lsweep.collateral[1]:.3f} |"
    ) in md
    assert len([line for line in md.splitlines() if line.startswith("| layer")]) == 10


def test_layer_sweep_hook_subset(model, data) -> None:
    images, labels = data
    s = layer_sweep(model, 7, 2, hooks=["layer0.post", "layer4.post"], test=(images[:100], labels[:100]))
    assert s.hooks == ["layer0.post", "layer4.post"] and s.loss.shape == (2,)


# -- coefficient sweep -------------------------------------------------------------------

COEFFS = (-1.0, -0.5, 0.0, 0.25, 0.75, 1.0, 2.0)
PAIRS = ((3, 1), (0, 9))


@pytest.fixture(scope="module")
def csweep(model, data) -> CoeffSweep:
    images, labels = data
    return coeff_sweep(model, PAIRS, COEFFS, test=(images, labels))


def test_coeff_sweep_shapes(csweep) -> None:
    assert csweep.pairs == list(PAIRS) and csweep.coeffs == list(COEFFS) and csweep.hook == "layer0.post"
    for name in METRICS:
        assert getattr(csweep, name).shape == (len(PAIRS), len(COEFFS))
    assert set(csweep.normal) == set(METRICS) and all(v.shape == (len(PAIRS),) for v in csweep.normal.values())


def test_coeff_zero_is_unsteered(model, data, csweep) -> None:
    images, labels = data
    with torch.no_grad():
        logits = model.to_sequential()(images)
    k = COEFFS.index(0.0)
    for p, (_, b) in enumerate(PAIRS):
        keep = labels != b
        normal = float(F.cross_entropy(logits[keep], labels[keep]))
        assert csweep.normal["loss"][p] == pytest.approx(normal, abs=1e-6)
        assert csweep.loss[p, k] == pytest.approx(float(csweep.normal["loss"][p]), abs=1e-6)
        assert csweep.kl[p, k] == 0.0


@pytest.mark.parametrize("pair", PAIRS)
def test_coeff_sweep_equals_model_steer(model, data, csweep, pair) -> None:
    """Each coefficient c equals a plain forward under ``model.steer(vec, coeff=c)``."""
    images, labels = data
    a, b = pair
    p = PAIRS.index(pair)
    vec = model.steering_vector(a, b, "layer0.post")
    with torch.no_grad():
        base_logp = F.log_softmax(model(images), -1)
    keep, is_b = labels != b, labels == b
    for k, c in enumerate(COEFFS):
        with torch.no_grad(), model.steer(vec, coeff=c):
            logits = model(images)
        logp = F.log_softmax(logits, -1)
        assert csweep.loss[p, k] == pytest.approx(
            float(F.cross_entropy(logits[keep], labels[keep])), rel=1e-5, abs=1e-5
        ), c
        assert csweep.flip_rate[p, k] == pytest.approx(
            float((logits[is_b].argmax(-1) == a).float().mean()), abs=1e-7
        ), c
        assert csweep.accuracy_other[p, k] == pytest.approx(
            float((logits[keep].argmax(-1) == labels[keep]).float().mean()), abs=1e-7
        ), c
        kl = (base_logp.exp() * (base_logp - logp)).sum(-1)[keep].mean()
        assert csweep.kl[p, k] == pytest.approx(float(kl), rel=1e-5, abs=1e-5), c
    assert not model.attached_hooks()


def test_coeff_one_equals_grid_cell(csweep, sweep) -> None:
    k = COEFFS.index(1.0)
    g = sweep["layer0.post"]
    for p, (a, b) in enumerate(PAIRS):
        if a in DIGITS and b in DIGITS:
            assert csweep.loss[p, k] == pytest.approx(g.cell(a, b)["loss"], abs=1e-5)


def test_coeff_sweep_markdown(csweep) -> None:
    md = csweep.to_markdown()
    assert md.splitlines()[0] == "share of the test images of b classified as a at layer0.post (first)"
    assert "| a - b | -1 | -0.5 | 0 | 0.25 | 0.75 | 1 | 2 |" in md
    assert "| 3 - 1 | " + " | ".join(f"{v:.3f}" for v in csweep.flip_rate[0]) + " |" in md
    assert "| 0 - 9 |" in csweep.to_markdown("loss")


@pytest.mark.parametrize("bad", [float("nan"), float("-inf"), True])
def test_bad_coefficients_raise(model, data, bad) -> None:
    images, labels = data
    with pytest.raises(SteeringError):
        coeff_sweep(model, ((3, 1),), (1.0, bad), test=(images[:20], labels[:20]))
    with pytest.raises(SteeringError):
        layer_sweep(model, 3, 1, coeff=bad, test=(images[:20], labels[:20]))
