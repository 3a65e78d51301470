"""analysis.steerability: scores against brute force, the controls, held-out halves, pixel arithmetic, bad input."""

import dataclasses
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hookedmlp import ConfigError, HookedMLP, LeNetConfig, MLPConfig, ResidualConfig, ResidualMLP, UsageError
from hookedmlp_analysis.curves import StepCurve, heldout, split_halves
from hookedmlp_analysis.engine import Addition, evaluate_plain
from hookedmlp_analysis.hook_classes import hook_classes
from hookedmlp_analysis.metrics import check_axis, check_metric, check_score
from hookedmlp_analysis.paths import bisection_points
from hookedmlp_analysis.steer_result import Steerability, analysis_version
from hookedmlp_analysis.steerability import SteerSettings, steerability

pytestmark = pytest.mark.usefixtures("one_thread")

PAIRS = [(a, b) for a in range(3) for b in range(3) if a != b]
SETTINGS = SteerSettings(c_min=1 / 64, c_max=8.0, draws=2)


@pytest.fixture(scope="module")
def trained():
    """A tiny MLP trained on a learnable 3-class problem, and its data (which is also the scoring set)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(90, 6, generator=g)
    y = x[:, :3].argmax(-1)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return HookedMLP.from_module(net).eval(), (x, y)


@pytest.fixture(scope="module")
def steer(trained) -> Steerability:
    model, data = trained
    with torch.no_grad():
        return steerability(model, data, pairs=PAIRS, data=data, settings=SETTINGS)


def brute_curves(predict, labels: torch.Tensor, a: int, b: int) -> dict[str, StepCurve]:
    """Each half's curve from plain passes at 0 and at every point bisection can record a switch at.

    ``predict(coefficients [c])`` returns the predicted classes ``[c, image]``.
    """
    cs = np.concatenate([[0.0], bisection_points(SETTINGS.grid, SETTINGS.steps)])
    pred = predict(torch.as_tensor(cs, dtype=torch.float32))
    y = labels.numpy()
    tune, score = split_halves(y)
    out = {}
    for half, keep in (("all", np.ones(len(y), bool)), ("tune", tune), ("score", score)):
        is_b, other = keep & (y == b), keep & (y != b)
        out[half] = StepCurve(cs, (pred[:, is_b] == a).mean(1), (pred[:, other] != pred[0, other]).mean(1))
    return out


def assert_scores(site, p: int, curves: dict[str, StepCurve]) -> None:
    want = {h: curves[k].pauc(SETTINGS.pauc_level) for h, k in (("pauc", "all"), ("pauc_tune", "tune"))}
    want["pauc_score"] = curves["score"].pauc(SETTINGS.pauc_level)
    held = heldout(curves["tune"], curves["score"], SETTINGS.heldout_level)
    want.update(zip(("heldout_flip", "heldout_collateral", "heldout_coeff"), held))
    assert {m: float(site.metrics[m][p]) for m in want} == pytest.approx(want, abs=1e-12), site.name


def test_every_class_scores_what_plain_steered_passes_give(trained, steer) -> None:
    model, data = trained
    for cls in hook_classes(model):
        hook = cls.representative
        with torch.no_grad():
            acts = model(data[0], stop_at=hook)
        for p, (a, b) in enumerate(PAIRS):
            v = model.steering_vector(a, b, hook, data=data)[hook]

            def predict(cs: torch.Tensor) -> np.ndarray:  # every coefficient in one plain pass after the hook point
                x = acts.unsqueeze(0) + cs.view(-1, 1, 1) * v
                with torch.no_grad():
                    return model(x.flatten(0, 1), start_at=hook).argmax(-1).view(len(cs), -1).numpy()

            assert_scores(steer.site(cls.label), p, brute_curves(predict, data[1], a, b))


def test_the_bias_scores_what_adding_it_to_the_logits_gives(trained, steer) -> None:
    model, (x, y) = trained
    with torch.no_grad():
        logits, first = model(x), model(torch.stack([x[y == c][0] for c in range(3)]))
    for p, (a, b) in enumerate(PAIRS):
        u = torch.zeros(3)
        u[a], u[b] = 1.0, -1.0
        u *= (first[a] - first[b]).norm() / 2**0.5  # the norm of the exemplars' logit difference
        predict = lambda cs: (logits + cs.view(-1, 1, 1) * u).argmax(-1).numpy()  # noqa: E731
        assert_scores(steer.bias, p, brute_curves(predict, y, a, b))
        adds = [Addition("layer4.post", float(c) * u, a, b) for c in SETTINGS.grid]
        with torch.no_grad():
            plain = evaluate_plain(model, x, y, adds)
        for metric, values in plain.values.items():
            np.testing.assert_allclose(steer.bias.grid[metric][p], values, atol=1e-5, err_msg=metric)


def test_the_bias_equals_the_logit_class_where_the_logit_difference_is_along_ea_minus_eb() -> None:
    """Identity layers and exemplars e_k + 1: the exemplars' logit difference is exactly e_a - e_b."""
    layers = [nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3)]
    for lin in layers[::2]:
        with torch.no_grad():
            lin.weight.copy_(torch.eye(3))
            lin.bias.zero_()
    model = HookedMLP.from_module(nn.Sequential(*layers)).eval()
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    images = 1 + torch.eye(3)[labels] + 0.4 * torch.rand(60, 3, generator=g)
    images[:3] = 1 + torch.eye(3)  # the first image of each class: e_k + 1
    with torch.no_grad():
        steer = steerability(model, (images, labels), pairs=PAIRS, data=(images, labels), settings=SETTINGS)
    logit = steer.logit_class
    assert logit is not None and logit.hooks == ["layer1.post", "layer2.pre", "layer2.post"]
    for m in ("pauc", "pauc_tune", "pauc_score", "heldout_flip", "heldout_collateral", "heldout_coeff"):
        np.testing.assert_array_equal(steer.bias.metrics[m], logit.metrics[m], err_msg=m)
    for m in logit.grid:
        np.testing.assert_allclose(steer.bias.grid[m], logit.grid[m], atol=1e-6, err_msg=m)
    assert steer.bias.metrics["pauc"].max() > 0  # it steers


def test_the_held_out_score_never_reads_the_tuning_half(trained, steer) -> None:
    """Replace every image of the scoring half: the chosen coefficients and the tuning half's pAUC stay put."""
    model, (x, y) = trained
    _, score = split_halves(y.numpy())
    g = torch.Generator().manual_seed(7)
    other_x = x.clone()
    other_x[torch.as_tensor(score)] = torch.randn(int(score.sum()), 6, generator=g)
    with torch.no_grad():
        moved = steerability(model, (other_x, y), pairs=PAIRS, data=(x, y), settings=SETTINGS)
    changed = 0
    for before, after in zip(steer.sites, moved.sites):
        for m in ("heldout_coeff", "pauc_tune"):
            np.testing.assert_array_equal(before.metrics[m], after.metrics[m], err_msg=f"{before.name} {m}")
        changed += int((before.metrics["heldout_flip"] != after.metrics["heldout_flip"]).sum())
    assert changed > 0  # the scoring half is what the held-out flip rate reads


def test_random_controls_have_the_pairs_norm_and_are_seeded(trained, steer) -> None:
    model, data = trained
    differ = 0
    for cls in steer.classes:
        draws = steer.random(cls.name)
        assert [r.draw for r in draws] == [0, 1]
        for r in draws:
            np.testing.assert_array_equal(r.rel_scale, cls.rel_scale)  # the same norm, at the same hook point
            assert r.role == cls.role and r.depth == cls.depth and not r.grid
        differ += not np.array_equal(draws[0].curves["collateral"], draws[1].curves["collateral"])
    assert differ == len(steer.classes)  # each draw its own direction
    with torch.no_grad():
        again = steerability(model, data, pairs=PAIRS, data=data, settings=SETTINGS)
    assert again.to_dict() == steer.to_dict()
    assert steer.engine.startswith(f"{len(steer.sites)} sites, ")


def test_the_result_round_trips_and_joins_by_site_and_pair(steer) -> None:
    back = Steerability.from_dict(steer.to_dict())
    assert back.to_dict() == steer.to_dict()
    rows = steer.table()
    assert len(rows) == len(steer.sites) * len(PAIRS)
    assert rows[0]["site"] == "layer0.pre..layer1.pre" and (rows[0]["a"], rows[0]["b"]) == PAIRS[0]
    assert steer.pixel.name == "layer0.pre..layer1.pre" and steer.best_internal().role == "internal"
    sens = steer.sensitivity(steer.pixel)
    assert sens.shape == (3, 3) and sens[1, 1] == steer.pixel.metrics["selective"].mean()
    assert (np.diff(sens, axis=0) <= 0).all() and (np.diff(sens, axis=1) <= 0).all()  # stricter: fewer pairs


@pytest.mark.parametrize("kind", ["mlp", "lenet"])
def test_steering_at_layer0_post_is_adding_the_pixel_difference(kind: str) -> None:
    torch.manual_seed(0)
    model = HookedMLP(MLPConfig() if kind == "mlp" else LeNetConfig()).eval()
    g = torch.Generator().manual_seed(2)
    images, labels = torch.rand(20, 1, 28, 28, generator=g), torch.arange(20) % 10
    x_a, x_b = images[3], images[1]  # the first image of 3 and of 1
    with torch.no_grad(), model.steer(a=3, b=1, hook="layer0.post", data=(images, labels)):
        steered = model(images)
    with torch.no_grad():
        shifted = model(images + (x_a - x_b))
    torch.testing.assert_close(steered, shifted, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("graph", [True, False])
def test_pixel_arithmetic_is_the_input_class_or_a_control_of_its_own(graph: bool, monkeypatch) -> None:
    if not graph:  # nothing known of the structure: no hook class holds the input, so a control of its own
        monkeypatch.setattr(sys.modules["hookedmlp_analysis.hook_classes"], "graph_view", lambda model: None)
    torch.manual_seed(0)
    res = ResidualMLP(ResidualConfig(d_in=16, d_model=8, d_mlp=8, n_blocks=1, d_out=3)).eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(30, 16, generator=g), torch.arange(30) % 3
    settings = SteerSettings(c_min=0.5, c_max=2.0, draws=0)
    with torch.no_grad():
        steer = steerability(res, (x, y), pairs=[(2, 1)], data=(x, y), settings=settings)
        shifted = [res(x + float(c) * (x[2] - x[1])) for c in settings.grid]  # the first images of 2 and of 1
    assert steer.pixel.role == "input" and steer.logit_class.hooks == ["hook_logits"]
    assert (steer.pixel.kind, steer.pixel.name) == (
        ("class", "hook_embed..blocks.0.hook_resid_pre") if graph else ("pixel", "pixel")
    )
    flips = [float((s[y == 1].argmax(-1) == 2).float().mean()) for s in shifted]
    collateral = [float((s[y != 1].argmax(-1) != res(x[y != 1]).argmax(-1)).float().mean()) for s in shifted]
    np.testing.assert_allclose(steer.pixel.grid["flip_rate"][0], flips)
    np.testing.assert_allclose(steer.pixel.grid["collateral"][0], collateral)
    assert max(collateral) > 0  # the shift does something


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(c_min=1.0, c_max=1.0), r"the coefficient range \[c_min, c_max\] = \[1, 1\] is empty; it needs 0 < c_min"),
        (dict(c_min=0.0), r"c_min must be finite and in \(0, inf\], got 0.0"),
        (dict(pauc_level=1.0), r"pauc_level must be finite and in \(0, 1\), got 1.0"),
        (dict(heldout_level=0), r"heldout_level must be finite and in \(0, 1\), got 0"),
        (dict(steps=-1), r"steps must be in \[0, 17\), got -1"),
    ],
)
def test_bad_settings_are_refused_up_front(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SteerSettings(**kwargs)


def test_bad_names_thresholds_and_pairs_are_refused(trained, steer) -> None:
    model, data = trained
    for check, what in ((check_metric, "metric"), (check_score, "score"), (check_axis, "axis")):
        with pytest.raises(ConfigError, match=f"{what} must be one of "):
            check(f"bogus_{what}")
    with pytest.raises(ConfigError, match="score must be one of 'pauc', 'pauc_tune', 'pauc_score', 'heldout_flip'"):
        steer.best_internal("bogus")
    with pytest.raises(ConfigError, match=r"flip must be finite and in \(0, 1\), got 1.5"):
        steer.binary(steer.pixel, flip=1.5)
    with pytest.raises(UsageError, match="has no grid metrics"):
        steer.binary(steer.random(steer.pixel.name)[0])
    with pytest.raises(ConfigError, match=r"pair \(1, 1\) steers a class towards itself; pairs need a != b"):
        steerability(model, data, pairs=[(1, 1)], data=data)
    with pytest.raises(ConfigError, match="pairs is empty"):
        steerability(model, data, pairs=[], data=data)
    one = (data[0][:3], torch.tensor([0, 1, 2]))
    with pytest.raises(UsageError, match=r"the scoring set's scoring half has no image of class\(es\) \[1\]"):
        steerability(model, one, pairs=[(0, 1)], data=data)
    with pytest.raises(UsageError, match="no site 'layer9.post'; the sites are 'layer0.pre..layer1.pre'"):
        steer.site("layer9.post")


def test_the_analysis_version_follows_the_code_not_its_comments(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1] / "analysis"
    for f in root.glob("*.py"):
        shutil.copy(f, tmp_path / f.name)
    assert analysis_version(tmp_path) == analysis_version()
    curves = tmp_path / "curves.py"
    curves.write_text(curves.read_text().replace('"""Flip rate against collateral', '"""Flip rate (reworded) against'))
    curves.write_text(curves.read_text() + "\n# a comment\n")
    assert analysis_version(tmp_path) == analysis_version()
    curves.write_text(curves.read_text().replace("return float((best[inside]", "return float(0.5 * (best[inside]"))
    assert analysis_version(tmp_path) != analysis_version()


def test_settings_are_a_frozen_record() -> None:
    st = SteerSettings()
    assert st.grid.tolist() == [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
    assert st.samples[0] == 0.125 and st.samples[-1] == 8.0 and len(st.samples) == 13
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.steps = 3  # type: ignore[misc]


def test_only_internal_scores_the_internal_classes_exactly_as_the_full_run(trained, steer) -> None:
    model, data = trained
    with torch.no_grad():
        inside = steerability(model, data, pairs=PAIRS, data=data, settings=SETTINGS, only_internal=True)
    assert [s.name for s in inside.sites] == [s.name for s in steer.internal] == ["layer1.post..layer3.pre"]
    for mine, full in zip(inside.sites, steer.internal):
        for m in ("pauc", "pauc_score", "heldout_flip"):
            np.testing.assert_array_equal(mine.metrics[m], full.metrics[m])
    assert inside.settings["draws"] == 0 and inside.logit_class is None
    mean = steerability(model, data, pairs=PAIRS, method="mean", data=data, settings=SETTINGS, only_internal=True)
    assert not np.array_equal(mean.sites[0].metrics["pauc"], inside.sites[0].metrics["pauc"])  # another vector
