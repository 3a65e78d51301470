"""analysis.explain: pixel arithmetic, the Jacobian's share and the logit windows, against steering by hand."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hookedmlp
from hookedmlp import HookedMLP, ResidualConfig, ResidualMLP, UsageError
from hookedmlp_analysis.explain import explain_summary, linear_explanation, logit_windows, overlap, pixel_explanation
from hookedmlp_analysis.windows import bias_curve, window

pytestmark = pytest.mark.usefixtures("one_thread")
PAIRS = [(0, 1), (2, 1), (1, 0)]


@pytest.fixture(scope="module")
def sets():
    """Three 4 x 4 'digits' (a stroke each, in [0, 1]) with noise: 30 training and 90 test images."""
    g = torch.Generator().manual_seed(5)
    strokes = torch.zeros(3, 4, 4)
    strokes[0, :, 1], strokes[1, 2, :], strokes[2].fill_diagonal_(1.0)
    strokes = strokes.flatten(1)

    def draw(n):
        labels = torch.arange(n) % 3
        return (strokes[labels] + 0.4 * torch.rand(n, 16, generator=g)).clamp(0, 1), labels

    return draw(30), draw(90)


@pytest.fixture(scope="module")
def tiny(sets):
    """The tiny MLP, trained a little on the strokes, so that its predictions vary."""
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.Adam(seq.parameters(), lr=0.05)
    x, y = sets[0]
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(seq(x), y).backward()
        opt.step()
    return HookedMLP.from_sequential(seq).eval()


def test_overlap_is_the_share_of_ink_covered():
    x_b = torch.tensor([0.0, 1.0, 0.5, 0.5])
    images = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.25, 0.5, 1.0]])
    assert overlap(images, x_b).tolist() == [0.5, 0.625]  # min(x, x_b) summed: 1 and 1.25, over 2


def test_pixel_arithmetic_is_steering_at_layer0_post(tiny, sets):
    train, (x, y) = sets
    with torch.no_grad():
        got = pixel_explanation(tiny, (x, y), PAIRS, data=train)
        means = torch.stack([train[0][train[1] == d].mean(0) for d in range(3)])
        for p, (a, b) in enumerate(PAIRS):
            with tiny.steer(a=a, b=b, hook="layer0.post", data=train):
                pred = tiny(x).argmax(1)
            composite = x + train[0][a] - train[0][b]  # the first training image of a is row a (labels 0, 1, 2...)
            nearest = ((composite[:, None] - means[None]) ** 2).sum(-1).argmin(1)
            for d in range(3):
                assert got.net[p, d] == pytest.approx(float((pred[y == d] == a).double().mean()), abs=1e-7)
                assert got.template[p, d] == pytest.approx(float((nearest[y == d] == a).double().mean()), abs=1e-7)
    assert got.cells().tolist() == [[True, False, True], [True, False, True], [False, True, True]]
    summary = got.summary()
    assert summary["cells"] == 6 and -1 <= summary["rho_template"] <= 1


def test_the_jacobian_share_against_autograd(tiny, sets):
    train, (x, y) = sets
    acts = {
        d: tiny.run_with_cache(train[0][d : d + 1], names_filter=["layer1.post"])[1]["layer1.post"][0] for d in (0, 1)
    }
    v = acts[0] - acts[1]
    with torch.no_grad():
        got = linear_explanation(tiny, (x, y), "layer1.post", [(0, 1)], data=train)
        h = tiny.run_with_cache(x, names_filter=["layer1.post"])[1]["layer1.post"]
        shift = tiny(h + v, start_at="layer1.post") - tiny(h, start_at="layer1.post")
        gates = (
            tiny.run_with_cache(h + v, names_filter=["layer3.pre"], start_at="layer1.post")[1]["layer3.pre"] > 0
        ) != (tiny.run_with_cache(h, names_filter=["layer3.pre"], start_at="layer1.post")[1]["layer3.pre"] > 0)
    jv = torch.autograd.functional.jvp(lambda z: tiny(z, start_at="layer1.post"), h, v.expand_as(h))[1]
    s = torch.stack([shift[y == d].mean(0) for d in (0, 2)]).double()
    j = torch.stack([jv[y == d].mean(0) for d in (0, 2)]).double()
    assert got["explained"][0] == pytest.approx(float(1 - ((s - j) ** 2).sum() / (s**2).sum()), rel=1e-5)
    assert got["gates"][0] == float(gates.double().mean())
    with torch.no_grad():
        at_logits = linear_explanation(tiny, (x, y), "layer3.post", PAIRS, data=train)
    np.testing.assert_allclose(at_logits["explained"], 1.0, atol=1e-6)  # the map after it is affine
    assert np.isnan(at_logits["gates"]).all()  # no ReLU after it


def test_the_logit_window_is_what_steering_at_the_logit_class_does(tiny, sets):
    train, (x, y) = sets
    with torch.no_grad():
        windows = logit_windows(tiny, (x, y), PAIRS, flip=0.5, collateral=0.4, data=train)
        base = tiny(x).double()
        for (a, b), got in zip(PAIRS, windows):
            vector = tiny.steering_vector(a, b, "layer3.post", data=train)
            cs = np.linspace(0.05, 20, 400)
            rates = []
            for c in cs:
                with tiny.steer(float(c) * vector):
                    pred = tiny(x).argmax(1)
                rates.append(
                    (
                        float((pred[y == b] == a).double().mean()),
                        float((pred[y != b] != base[y != b].argmax(1)).double().mean()),
                    )
                )
            v = (tiny(train[0][a : a + 1]) - tiny(train[0][b : b + 1]))[0].double()
            curve = bias_curve(base, y, v, a, b)
            flip, coll = curve.at(cs)
            close = np.abs(cs[:, None] - curve.coeffs[None]).min(1) < 1e-4  # a switch right there: float32 may differ
            np.testing.assert_array_equal(np.stack([flip, coll], 1)[~close], np.array(rates)[~close])
            expected = window(curve, 0.5, 0.4)  # the exemplars' logits rounded apart in float32: to 1e-5
            assert not got.empty and (got.low, got.high) == pytest.approx((expected.low, expected.high), rel=1e-5)


def test_pixel_arithmetic_needs_a_chain_starting_with_a_linear(sets):
    torch.manual_seed(0)
    res = ResidualMLP(ResidualConfig(d_in=16, d_model=8, d_mlp=8, n_blocks=1, d_out=3)).eval()
    with pytest.raises(
        UsageError, match=r"^pixel arithmetic is exact where layer 0 is a Linear of a HookedMLP; got Resid"
    ):
        pixel_explanation(res, sets[1], PAIRS, data=sets[0])
    assert hookedmlp.HookedMLP  # the route the message names exists


def test_a_float64_model_takes_float32_images(tiny, sets):
    train, test = sets
    double = HookedMLP.from_sequential(tiny.to_sequential()).double().eval()
    with torch.no_grad():
        got = explain_summary(double, test, PAIRS, ["layer1.post"], flip=0.5, collateral=0.4, data=train)
        want = explain_summary(tiny, test, PAIRS, ["layer1.post"], flip=0.5, collateral=0.4, data=train)
    assert got["pixel"] == want["pixel"] and got["windows"]["with_window"] == want["windows"]["with_window"]
    assert got["linear"]["layer1.post"]["explained"]["median"] == pytest.approx(
        want["linear"]["layer1.post"]["explained"]["median"], abs=1e-4
    )
