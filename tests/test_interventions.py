"""model.ablate / model.patch / model.clamp against plain torch, on the shipped model:
results, the activation seen inside the context, and errors that leave no hook behind."""

import math

import pytest
import torch
from torch import nn

from hookedmlp import (
    HookedMLP,
    HookNameError,
    ShapeError,
    SteeringError,
    SteeringVector,
    UnitIndexError,
)
from hookedmlp.data import load_mnist

HOOKS = ["layer0.post", "layer1.post", "layer2.pre", "layer3.post"]


@pytest.fixture(scope="module")
def plain(model) -> nn.Sequential:
    """A fresh Sequential with copies of the model's weights (shares nothing with it)."""
    seq = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    sd = model.state_dict()
    with torch.no_grad():
        for i in (0, 2, 4):
            seq[i].weight.copy_(sd[f"layer{i}.module.weight"])
            seq[i].bias.copy_(sd[f"layer{i}.module.bias"])
    return seq.eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return load_mnist("test")[0][:100].clone()


@pytest.fixture(scope="module")
def x_other() -> torch.Tensor:
    return load_mnist("test")[0][100:200].clone()


@pytest.fixture
def base(model, x):
    return model(x)


def acts_at(seq, x, hook):
    """Plain-torch activation at ``hook``."""
    layer, where = hook.split(".")
    i = int(layer.removeprefix("layer"))
    with torch.no_grad():
        return seq[: i if where == "pre" else i + 1](x)


def run_from(seq, act, hook):
    """Plain torch from the activation at ``hook`` to the logits."""
    layer, where = hook.split(".")
    i = int(layer.removeprefix("layer"))
    with torch.no_grad():
        return seq[i if where == "pre" else i + 1 :](act)


def assert_untouched(model, x, base):
    assert model.attached_hooks() == []
    assert torch.equal(model(x), base)


def direction(seed, width=512):
    return torch.randn(width, generator=torch.Generator().manual_seed(seed))


# -- ablate ---------------------------------------------------------------------------------


@pytest.mark.parametrize("hook", HOOKS)
def test_ablate_equals_projection_by_hand(model, plain, x, base, hook):
    d = direction(1)
    u = d / d.norm()
    act = acts_at(plain, x, hook)
    expected_act = act - (act @ u).unsqueeze(-1) * u
    with model.ablate(d, hook):
        logits, cache = model.run_with_cache(x, names_filter=hook)
        assert len(model.attached_hooks()) == 1
    seen = cache[hook]
    torch.testing.assert_close(seen, expected_act, rtol=0, atol=1e-6)
    assert (seen @ u).abs().max() < 1e-4 * act.abs().max()
    assert (act @ u).abs().max() > 1e-2  # the direction was really present before
    torch.testing.assert_close(logits, run_from(plain, expected_act, hook), rtol=1e-6, atol=1e-5)
    assert_untouched(model, x, base)


def test_ablate_with_steering_vector_and_scale_invariance(model, x, base):
    v = model.steering_vector(3, 1, "layer0.post")
    with model.ablate(v, "layer0.post"):
        out = model(x)
    with model.ablate(-7.5 * v["layer0.post"], "layer0.post"):
        scaled = model(x)
    with model.ablate(v["layer0.post"].double(), "layer0.post"):  # float64 direction: moved to float32
        as_f64 = model(x)
    torch.testing.assert_close(out, scaled, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, as_f64, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out, base)
    with model.ablate(v, "layer0.post"), model.ablate(v, "layer0.post"):  # idempotent
        twice = model(x)
    torch.testing.assert_close(twice, out, rtol=1e-5, atol=1e-5)
    assert_untouched(model, x, base)


def test_ablate_errors_leave_nothing(model, x, base):
    with pytest.raises(SteeringError, match="non-zero"):
        model.ablate(torch.zeros(512), "layer0.post").__enter__()
    with pytest.raises(SteeringError, match="direction must be finite, got nan"):
        model.ablate(torch.full((512,), math.nan), "layer0.post").__enter__()
    with pytest.raises(
        ShapeError, match=r"direction at 'layer0.post' has shape \[10\].*expected a tensor of shape \[512\]"
    ):
        model.ablate(torch.ones(10), "layer0.post").__enter__()
    with pytest.raises(ShapeError, match=r"expected a tensor of shape \[784\]"):
        model.ablate(torch.ones(512), "layer0.pre").__enter__()
    with pytest.raises(HookNameError, match="did you mean 'layer0.post'"):
        model.ablate(torch.ones(512), "layer0.pst").__enter__()
    with pytest.raises(HookNameError, match="one hook name"):
        model.ablate(torch.ones(512), "*.post").__enter__()
    with pytest.raises(HookNameError, match="no hook 'layer3.post'"):
        model.ablate(SteeringVector({"layer0.post": torch.ones(512)}), "layer3.post").__enter__()
    with pytest.raises(TypeError, match="must be a tensor|parameter 'direction'"):
        model.ablate([1.0] * 4, "layer0.post").__enter__()
    assert_untouched(model, x, base)


# -- patch ------------------------------------------------------------------------------------


@pytest.mark.parametrize("hook", HOOKS)
def test_patch_same_batch(model, plain, x, base, hook):
    new = torch.rand(len(x), 512, generator=torch.Generator().manual_seed(2))
    with model.patch(hook, new):
        logits, cache = model.run_with_cache(x, names_filter=hook)
    assert torch.equal(cache[hook], new)
    assert torch.equal(logits, run_from(plain, new, hook))
    assert_untouched(model, x, base)


@pytest.mark.parametrize("shape", [(512,), (1, 512)])
def test_patch_single_activation_broadcasts(model, plain, x, base, shape):
    one = torch.rand(512, generator=torch.Generator().manual_seed(3))
    with model.patch("layer2.post", one.reshape(shape)):
        logits = model(x)
    assert logits.shape == (len(x), 10)
    assert torch.equal(logits, run_from(plain, one.expand(len(x), 512).clone(), "layer2.post"))
    torch.testing.assert_close(
        logits, run_from(plain, one.unsqueeze(0), "layer2.post").expand(len(x), 10), rtol=1e-6, atol=1e-6
    )
    assert_untouched(model, x, base)


@pytest.mark.parametrize("hook", ["layer2.post", "layer1.post", "layer3.pre"])
def test_patch_from_another_runs_cache_gives_its_logits(model, x, x_other, base, hook):
    logits_b, cache_b = model.run_with_cache(x_other)
    assert not torch.equal(logits_b, base)
    with model.patch(hook, cache_b):
        assert torch.equal(model(x), logits_b)
    with model.patch(hook, cache_b[hook]):
        assert torch.equal(model(x), logits_b)
    assert_untouched(model, x, base)


def test_patch_float64_and_nested_innermost_wins(model, plain, x, base):
    a = torch.rand(len(x), 512, generator=torch.Generator().manual_seed(4))
    b = torch.rand(len(x), 512, generator=torch.Generator().manual_seed(5))
    with model.patch("layer2.post", a.double()):
        assert torch.equal(model(x), run_from(plain, a, "layer2.post"))
    with model.patch("layer2.post", a), model.patch("layer2.post", b):
        assert torch.equal(model(x), run_from(plain, b, "layer2.post"))
    assert_untouched(model, x, base)


def test_patch_wrong_batch_size(model, x, base):
    with pytest.raises(ShapeError, match=f"batch of 3 but the run has {len(x)}"):
        with model.patch("layer2.post", torch.zeros(3, 512)):
            model(x)
    assert_untouched(model, x, base)
    with pytest.raises(
        ShapeError, match=r"shape \[100, 100\]; expected \[batch, 512\] or one example's \[512\] for 'layer2.post'"
    ):
        model.patch("layer2.post", torch.zeros(len(x), 100)).__enter__()
    with pytest.raises(ShapeError, match=r"shape \[2, 3, 512\]"):
        model.patch("layer2.post", torch.zeros(2, 3, 512)).__enter__()
    with pytest.raises(HookNameError, match="no activation cached for 'layer2.post'"):
        _, cache = model.run_with_cache(x, names_filter="layer0.post")
        model.patch("layer2.post", cache).__enter__()
    with pytest.raises(HookNameError, match="did you mean"):
        model.patch("layer2.pots", torch.zeros(512)).__enter__()
    # (the runtime type checks of the test run may report the annotation first)
    with pytest.raises(TypeError, match="tensor or a cache|parameter 'activations'"):
        model.patch("layer2.post", [0.0] * 4).__enter__()
    assert_untouched(model, x, base)


# -- clamp ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "index, value, units",
    [
        (5, 2.0, [5]),
        (-1, 0.0, [511]),
        ([1, 7, 300], 3.5, [1, 7, 300]),
        (torch.tensor([4, 9]), torch.tensor([1.0, -2.0]), [4, 9]),
        ([0, 2], torch.tensor([10.0, 20.0], dtype=torch.float64), [0, 2]),
        ([2], torch.tensor(-3.0), [2]),
    ],
)
def test_clamp_by_index(model, plain, x, base, index, value, units):
    act = acts_at(plain, x, "layer1.post")
    expected = act.clone()
    expected[:, units] = torch.as_tensor(value, dtype=torch.float32)
    with model.clamp("layer1.post", index, value):
        logits, cache = model.run_with_cache(x, names_filter="layer1.post")
    assert torch.equal(cache["layer1.post"], expected)
    assert torch.equal(logits, run_from(plain, expected, "layer1.post"))
    assert_untouched(model, x, base)


def test_clamp_bool_mask(model, plain, x, base):
    mask = torch.zeros(512, dtype=torch.bool)
    mask[[3, 100, 511]] = True
    act = acts_at(plain, x, "layer3.post")
    expected = act.clone()
    expected[:, mask] = -1.0
    for m in (mask, mask.tolist()):
        with model.clamp("layer3.post", m, -1.0):
            logits, cache = model.run_with_cache(x, names_filter="layer3.post")
        assert torch.equal(cache["layer3.post"], expected)
        assert torch.equal(logits, run_from(plain, expected, "layer3.post"))
    assert_untouched(model, x, base)


def test_clamp_logits(model, x, base):
    with model.clamp("layer4.post", [0, 9], 100.0):
        out = model(x)
    assert (out[:, [0, 9]] == 100.0).all()
    assert torch.equal(out[:, 1:9], base[:, 1:9])
    assert_untouched(model, x, base)


@pytest.mark.parametrize("index", [512, -513, [0, 600], [-1000], 10**9])
def test_clamp_out_of_range(model, x, base, index):
    with pytest.raises(
        UnitIndexError,
        match=r"out of range for 'layer1.post' with 512 units: got .*; expected 0\.\.511 "
        r"\(or -512\.\.-1\)$",
    ):
        model.clamp("layer1.post", index, 1.0).__enter__()
    assert_untouched(model, x, base)


def test_clamp_other_errors(model, x, base):
    with pytest.raises(ShapeError, match=r"boolean index has shape \[10\]; expected \[512\]"):
        model.clamp("layer1.post", torch.zeros(10, dtype=torch.bool), 1.0).__enter__()
    # (the runtime type checks of the test run may report the annotation first)
    for index in (2.5, [[1, 2]], [1.5, 2.0], torch.tensor([1.5])):
        with pytest.raises(TypeError, match="index must be an int|parameter 'index'"):
            model.clamp("layer1.post", index, 1.0).__enter__()
    with pytest.raises(SteeringError, match="clamp value must be finite"):
        model.clamp("layer1.post", 3, math.inf).__enter__()
    with pytest.raises(ShapeError, match=r"clamp value has shape \[3\]; expected a scalar or \[2\]"):
        model.clamp("layer1.post", [1, 2], torch.tensor([1.0, 2.0, 3.0])).__enter__()
    with pytest.raises(HookNameError, match="did you mean 'layer1.post'"):
        model.clamp("layer1.pots", 3, 1.0).__enter__()
    assert_untouched(model, x, base)


# -- combined, and cleanup ------------------------------------------------------------------


def test_interventions_compose_and_unwind(model, plain, x, base):
    v = model.steering_vector(3, 1, "layer0.post")
    d = direction(6)
    u = d / d.norm()
    with model.steer(v), model.ablate(d, "layer2.post"), model.clamp("layer3.post", 7, 0.5):
        assert len(model.attached_hooks()) == 3
        out = model(x)
    with torch.no_grad():
        h = plain[0](x) + v["layer0.post"]
        h = plain[2](plain[1](h))
        h = h - (h @ u).unsqueeze(-1) * u
        h = plain[3](h)
        h[:, 7] = 0.5
        ref = plain[4](h)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert_untouched(model, x, base)


@pytest.mark.parametrize("kind", ["ablate", "patch", "clamp"])
def test_exception_inside_leaves_user_hooks_only(model, x, base, kind):
    user = model.add_hook("layer2.post", lambda act, hook: act * 2)
    perm = model.add_hook("layer0.pre", lambda act, hook: None, is_permanent=True)
    try:
        before = model.attached_hooks()
        with_user = model(x)
        ctx = {
            "ablate": lambda: model.ablate(direction(7), "layer2.post"),
            "patch": lambda: model.patch("layer2.post", torch.zeros(512)),
            "clamp": lambda: model.clamp("layer2.post", [0, 1], 0.0),
        }[kind]
        with pytest.raises(ZeroDivisionError):
            with ctx():
                assert len(model.attached_hooks()) == 3
                model(x)
                1 / 0
        assert model.attached_hooks() == before
        assert torch.equal(model(x), with_user)
    finally:
        user.remove()
        perm.remove()
    assert_untouched(model, x, base)


def test_clamp_empty_index_list_is_a_no_op(model, x, base):
    with model.clamp("layer1.post", torch.zeros(512, dtype=torch.bool), 1.0):
        assert torch.equal(model(x), base)
    try:
        with model.clamp("layer1.post", [], 1.0):
            assert torch.equal(model(x), base)
    finally:
        assert model.attached_hooks() == []


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_refused_by_every_intervention(model, x, base, bad):
    """One rule: patch refuses NaN / inf activations as clamp refuses such values and ablate such directions."""
    poisoned = torch.zeros(512)
    poisoned[3] = bad
    with pytest.raises(SteeringError, match=r"patch activations must be finite, got (nan|inf|-inf)"):
        model.patch("layer2.post", poisoned)
    _, cache = model.run_with_cache(x, names_filter="layer2.post")
    with pytest.raises(SteeringError, match="patch activations must be finite"):
        model.patch("layer2.post", {"layer2.post": cache["layer2.post"] * bad})
    with pytest.raises(SteeringError, match="clamp value must be finite"):
        model.clamp("layer2.post", [0, 1], torch.tensor([1.0, bad]))
    with pytest.raises(SteeringError, match="direction must be finite"):
        model.ablate(poisoned, "layer2.post")
    assert_untouched(model, x, base)


def test_values_beyond_a_half_models_range_are_refused():
    half = HookedMLP.from_pretrained("mnist-mlp").half()
    with pytest.raises(
        SteeringError, match=r"values up to 1e\+05 do not fit the model's torch.float16 \(largest finite 6.55e\+04\)"
    ):
        half.patch("layer2.post", torch.full((512,), 1e5))
    with pytest.raises(SteeringError, match="do not fit the model's torch.float16"):
        half.clamp("layer2.post", 3, 1e5)
    with half.clamp("layer2.post", 3, 6e4):
        out = half(load_mnist("test")[0][:2].half(), stop_at="layer2.post")
    assert out.dtype == torch.float16 and out[:, 3].tolist() == [6e4, 6e4]
    assert half.attached_hooks() == []
