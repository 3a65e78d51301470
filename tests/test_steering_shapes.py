"""Steering, ablate, patch, clamp and the caches under them on activations of any shape: a tiny CNN's
``[C, H, W]`` hook points and ResidualMLP's hook points, each bit for bit against plain torch
(PyTorch forward hooks on a deep copy of the original modules); wrong shapes are reported in
``[C, H, W]`` terms."""

import copy
import re

import pytest
import torch
from torch import nn

from hookedmlp import (
    HookedMLP,
    ResidualConfig,
    ResidualMLP,
    ShapeError,
    SteeringVector,
    UnitIndexError,
)

CNN_HOOKS = {
    "layer0.pre": ("0", "pre"),
    "layer0.post": ("0", "post"),
    "layer1.post": ("1", "post"),
    "layer2.pre": ("2", "pre"),
    "layer2.post": ("2", "post"),
    "layer3.post": ("3", "post"),
}
RES_HOOKS = {"hook_embed": ("embed", "post"), "hook_logits": ("unembed", "post")}
for _i in range(2):
    RES_HOOKS.update(
        {
            f"blocks.{_i}.hook_resid_pre": (f"blocks.{_i}", "pre"),
            f"blocks.{_i}.mlp.hook_pre": (f"blocks.{_i}.mlp.W_in", "post"),
            f"blocks.{_i}.mlp.hook_post": (f"blocks.{_i}.mlp.act", "post"),
            f"blocks.{_i}.hook_mlp_out": (f"blocks.{_i}.mlp", "post"),
            f"blocks.{_i}.hook_resid_post": (f"blocks.{_i}", "post"),
        }
    )


def seeded(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def cnn():
    """``(hooked, plain original, hook map, inputs)``: Conv2d-ReLU-MaxPool-Flatten-Linear on [1, 8, 8]."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 3)).eval()
    hooked = HookedMLP.from_module(copy.deepcopy(net), input_shape=(1, 8, 8)).eval()
    return hooked, net, CNN_HOOKS, torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def res():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        hooked = ResidualMLP(ResidualConfig(d_in=16, d_model=8, d_mlp=8, n_blocks=2, d_out=3)).eval()
    return hooked, copy.deepcopy(hooked), RES_HOOKS, torch.rand(6, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture(params=["cnn", "res"])
def case(request):
    return request.getfixturevalue(request.param)


def reference(net, x, edits=(), reads=()):
    """``(net(x), {name: activation})`` with PyTorch forward (pre-)hooks applying ``edits`` [(path, side, fn)] and
    recording the activations at ``reads`` [(name, path, side)] (after the edits there)."""
    seen, handles = {}, []
    records = [(path, side, lambda a, name=name: seen.__setitem__(name, a.clone())) for name, path, side in reads]
    for path, side, fn in [*edits, *records]:
        module = net.get_submodule(path)
        if side == "post":
            handles.append(module.register_forward_hook(lambda m, args, out, fn=fn: fn(out)))
        else:
            handles.append(module.register_forward_pre_hook(lambda m, args, fn=fn: _as_args(fn(args[0]))))
    try:
        with torch.no_grad():
            out = net(x)
    finally:
        for h in handles:
            h.remove()
    return out, seen


def _as_args(result):
    return None if result is None else (result,)


def read(net, x, hooks, name):
    return reference(net, x, reads=[(name, *hooks[name])])[1][name]


def test_the_cnn_has_feature_map_hook_points(cnn):
    hooked, net, _, x = cnn
    assert hooked.activation_shape("layer0.post") == (4, 6, 6) and hooked.activation_shape("layer2.post") == (4, 3, 3)
    assert torch.equal(hooked(x), reference(net, x)[0])


@pytest.mark.parametrize("which", [0, 1])
def test_steering_vector_and_cache_under_it(case, which):
    hooked, net, hooks, x = case
    names = list(hooks)[which::3]  # a vector at several hook points at once
    v = SteeringVector({name: seeded(k, *hooked.activation_shape(name)) for k, name in enumerate(names)})
    edits = [(*hooks[name], lambda a, name=name: a + v[name]) for name in names]
    with hooked.steer(v, coeff=1.0):
        out, cache = hooked.run_with_cache(x, names_filter=list(hooks))
    ref_out, ref_acts = reference(net, x, edits, [(name, *where) for name, where in hooks.items()])
    assert torch.equal(out, ref_out)
    for name in hooks:  # every cached activation is the one the steered network computes
        assert torch.equal(cache[name], ref_acts[name]), name
    assert hooked.attached_hooks() == []


@pytest.mark.parametrize("name", ["layer0.post", "layer2.post", "blocks.0.hook_resid_post", "blocks.1.mlp.hook_pre"])
def test_vectors_from_inputs_and_labelled_data(cnn, res, name):
    hooked, net, hooks, x = cnn if name.startswith("layer") else res
    xa, xb = x[:2], x[2:5]
    v = hooked.steering_vector(xa, xb, name)
    assert torch.equal(v[name], read(net, xa, hooks, name).mean(0) - read(net, xb, hooks, name).mean(0))
    images, labels = x, torch.tensor([0, 1, 2, 1, 0, 2])
    by_label = hooked.steering_vector(2, 1, name, data=(images, labels))
    # each side is its own pass over its exemplar (a batch of one), as in the study
    assert torch.equal(by_label[name], read(net, x[[2]], hooks, name)[0] - read(net, x[[1]], hooks, name)[0])
    with hooked.steer(a=2, b=1, hook=name, data=(images, labels), coeff=2.0):
        out = hooked(x)
    assert torch.equal(out, reference(net, x, [(*hooks[name], lambda a: a + 2.0 * by_label[name])])[0])


def test_ablate(case):
    hooked, net, hooks, x = case
    for k, name in enumerate(list(hooks)[1::4]):
        d = seeded(10 + k, *hooked.activation_shape(name))
        u = (d / d.norm()).reshape(-1)

        def project_out(a, u=u):
            flat = a.reshape(a.shape[0], -1)
            return (flat - (flat @ u).unsqueeze(-1) * u).reshape(a.shape)

        with hooked.ablate(d, name):
            out, cache = hooked.run_with_cache(x, names_filter=name)
        assert torch.equal(out, reference(net, x, [(*hooks[name], project_out)])[0]), name
        assert float((cache[name].reshape(len(x), -1) @ u).abs().max()) < 1e-5


def test_patch(case):
    hooked, net, hooks, x = case
    for k, name in enumerate(list(hooks)[2::4]):
        shape = hooked.activation_shape(name)
        for new in (seeded(20 + k, *shape), seeded(30 + k, len(x), *shape)):  # one activation for all, or one each
            with hooked.patch(name, new):
                out, cache = hooked.run_with_cache(x, names_filter=name)
            assert torch.equal(cache[name], new.expand(len(x), *shape))
            assert torch.equal(
                out, reference(net, x, [(*hooks[name], lambda a, new=new: new.expand_as(a).clone())])[0]
            ), name


@pytest.mark.parametrize("index, value", [([0, 2], 0.5), (1, -1.0), ([2, 0], torch.tensor([1.0, -1.0]))])
def test_clamp_fixes_units_of_the_first_dimension(case, index, value):
    hooked, net, hooks, x = case
    for name in list(hooks)[1::4]:
        shape = hooked.activation_shape(name)
        val = torch.as_tensor(value)
        per_unit = val.view(-1, *[1] * (len(shape) - 1)) if val.ndim else val

        def fix(a, per_unit=per_unit):
            a = a.clone()
            a[:, torch.as_tensor(index).reshape(-1)] = per_unit
            return a

        with hooked.clamp(name, index, value):
            out = hooked(x)
        assert torch.equal(out, reference(net, x, [(*hooks[name], fix)])[0]), name


# -- wrong shapes, in [C, H, W] terms -------------------------------------------------------------


def test_wrong_shapes_say_expected_and_got_in_channel_terms(cnn):
    hooked = cnn[0]
    with pytest.raises(
        ShapeError,
        match=re.escape(
            "steering vector at 'layer0.post' has shape [8], but one example's activation there is [C, H, W] = "
            "[4, 6, 6] (a batch is [batch, 4, 6, 6]); expected a tensor of shape [4, 6, 6]"
        ),
    ):
        hooked.steer(SteeringVector({"layer0.post": torch.ones(8)}))
    with pytest.raises(
        ShapeError,
        match=re.escape(
            "steering vector at 'layer0.post' has shape [C, H, W] = [4, 3, 3], "
            "but one example's activation there is [C, H, W] = [4, 6, 6]"
        ),
    ):
        hooked.steer(SteeringVector({"layer0.post": torch.ones(4, 3, 3)}))
    with pytest.raises(
        ShapeError,
        match=re.escape(
            "direction at 'layer2.post' has shape [36], but one example's activation there is [C, H, W] = [4, 3, 3]"
        ),
    ):
        hooked.ablate(torch.ones(36), "layer2.post")
    with pytest.raises(
        ShapeError,
        match=re.escape(
            "patch activations have shape [6, 4, 3, 3]; expected [batch, 4, 6, 6] "
            "or one example's [C, H, W] = [4, 6, 6] for 'layer1.post'"
        ),
    ):
        hooked.patch("layer1.post", torch.ones(6, 4, 3, 3))
    with pytest.raises(
        UnitIndexError,
        match=re.escape(
            "unit index out of range for 'layer1.post' with 4 units (the first "
            "dimension of its [C, H, W] = [4, 6, 6] activation): got [4]; "
            "expected 0..3 (or -4..-1)"
        ),
    ):
        hooked.clamp("layer1.post", 4, 0.0)
    with pytest.raises(
        ShapeError,
        match=re.escape(
            "has shape [4, 6, 6], but one example's activation there is [36] (a "
            "batch is [batch, 36]); expected a tensor of shape [36]"
        ),
    ):
        hooked.steer(SteeringVector({"layer3.post": torch.ones(4, 6, 6)}))
    assert hooked.attached_hooks() == []
