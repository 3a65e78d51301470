"""hookedmlp.models.modules: describing torch.nn modules as plain data and rebuilding them (never by unpickling), which
modules are affine in their current mode, folding a vector through one, and Reshape."""

import re

import pytest
import torch
from torch import nn

from hookedmlp import CheckpointError, Reshape, UnsupportedNetworkError
from hookedmlp.models.modules import DESCRIBABLE, build, describe, fold, is_affine

MODULES = [
    nn.Linear(3, 2, bias=False),
    nn.Conv1d(2, 3, 3, stride=2, padding=1, bias=False),
    nn.Conv2d(2, 4, (3, 5), padding="same", groups=2, padding_mode="reflect"),
    nn.BatchNorm1d(4, eps=1e-3, momentum=None),
    nn.BatchNorm2d(3, affine=False, track_running_stats=False),
    nn.LayerNorm((3, 4), elementwise_affine=False),
    nn.LayerNorm(5, bias=False),
    nn.GroupNorm(2, 4, eps=1e-4, affine=False),
    nn.ReLU(inplace=True),
    nn.ReLU6(),
    nn.SiLU(),
    nn.Mish(),
    nn.ELU(alpha=0.3),
    nn.LeakyReLU(0.2),
    nn.Hardtanh(-2.0, 3.0),
    nn.GELU("tanh"),
    nn.Softplus(beta=2.0, threshold=10.0),
    nn.PReLU(3),
    nn.Softmax(dim=1),
    nn.LogSoftmax(dim=-1),
    nn.Flatten(2, 3),
    nn.Unflatten(1, (2, 3)),
    nn.Dropout(0.3),
    nn.Dropout2d(0.1),
    nn.MaxPool2d(3, 2, 1, ceil_mode=True),
    nn.MaxPool1d(2),
    nn.AvgPool2d(2, count_include_pad=False),
    nn.AdaptiveAvgPool2d((2, 3)),
    nn.AdaptiveAvgPool1d(4),
    nn.Identity(),
    nn.Tanh(),
    nn.Sigmoid(),
    nn.ZeroPad2d((1, 0, 1, 0)),
    nn.ConstantPad2d(1, 0.5),
    Reshape((2, 3)),
]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: type(m).__name__)
def test_describe_and_build_round_trip(module):
    desc = describe(module, "layer0")
    assert desc["type"] == type(module).__name__ and DESCRIBABLE[desc["type"]] is type(module)
    rebuilt = build(desc, "test")
    assert type(rebuilt) is type(module) and describe(rebuilt, "again") == desc
    assert repr(rebuilt) == repr(module)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in module.state_dict().items()}


def test_a_description_is_plain_data():
    assert describe(nn.Conv2d(1, 2, 3), "x") == {
        "type": "Conv2d",
        "args": {
            "in_channels": 1,
            "out_channels": 2,
            "kernel_size": [3, 3],
            "stride": [1, 1],
            "padding": [0, 0],
            "dilation": [1, 1],
            "groups": 1,
            "bias": True,
            "padding_mode": "zeros",
        },
    }
    assert describe(nn.Linear(3, 2), "x") == {
        "type": "Linear",
        "args": {"in_features": 3, "out_features": 2, "bias": True},
    }


def test_build_on_meta_allocates_nothing():
    huge = build(
        {"type": "Linear", "args": {"in_features": 10**6, "out_features": 10**5, "bias": True}}, "x", device="meta"
    )
    assert huge.weight.is_meta and huge.weight.shape == (10**5, 10**6)


class Custom(nn.Module):
    def forward(self, x):
        return x


def test_an_opaque_module_cannot_be_described():
    with pytest.raises(
        UnsupportedNetworkError,
        match=re.escape(
            "cannot save layer1 (block) (Custom): hookedmlp can save only torch.nn's own modules; save your network's "
            "state_dict, and rebuild the network and wrap it with HookedMLP.from_module"
        ),
    ):
        describe(Custom(), "layer1 (block)")
    with pytest.raises(UnsupportedNetworkError, match=re.escape("(Sequential)")):  # a container is opaque too
        describe(nn.Sequential(nn.ReLU()), "layer0")


@pytest.mark.parametrize(
    "desc,message",
    [
        ("Linear", "f: malformed module description 'Linear'; expected {'type': ..., 'args': {...}}"),
        ({"type": "Linear"}, "f: malformed module description {'type': 'Linear'}"),
        (
            {"type": "Custom", "args": {}},
            "f: unknown module type 'Custom'; the file is corrupt or from a newer hookedmlp",
        ),
        (
            {"type": "ReLU", "args": {"inplace": False, "extra": 1}},
            "f: malformed arguments for ReLU: {'inplace': False, 'extra': 1}",
        ),
        ({"type": "Softmax", "args": {"dim": {"a": 1}}}, "f: malformed arguments for Softmax"),
        (
            {"type": "Linear", "args": {"in_features": -1, "out_features": 2}},
            "f: cannot build Linear({'in_features': -1, 'out_features': 2}): ",
        ),
    ],
)
def test_bad_descriptions(desc, message):
    with pytest.raises(CheckpointError, match=re.escape(message)):
        build(desc, "f")


# -- affine modules ---------------------------------------------------------------------------


def _bn(track=True):
    bn = nn.BatchNorm1d(4, track_running_stats=track)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, -1.0, 2.0, 1.5]))
        bn.bias.copy_(torch.tensor([0.1, 0.2, -0.3, 0.0]))
        if track:
            bn.running_mean.copy_(torch.tensor([0.3, -0.2, 0.1, 1.0]))
            bn.running_var.copy_(torch.tensor([0.5, 2.0, 1.0, 0.25]))
    return bn


# (module, mode, shape of one example, affine)
AFFINITY = [
    (nn.Linear(4, 3), "eval", (4,), True),
    (nn.Conv2d(2, 3, 3, padding=1), "eval", (2, 5, 5), True),
    (nn.Conv1d(2, 2, 2), "train", (2, 6), True),
    (nn.Flatten(), "eval", (2, 3, 3), True),
    (nn.Unflatten(1, (2, 2)), "eval", (4,), True),
    (nn.Identity(), "train", (4,), True),
    (Reshape((2, 2)), "eval", (4,), True),
    (nn.AvgPool2d(2), "eval", (2, 4, 4), True),
    (nn.AdaptiveAvgPool2d(1), "eval", (2, 4, 4), True),
    (nn.ConstantPad2d(1, 0.5), "eval", (1, 2, 2), True),
    (_bn(), "eval", (4,), True),
    (_bn(), "train", (4,), False),
    (_bn(track=False), "eval", (4,), False),
    (nn.Dropout(0.5), "eval", (4,), True),
    (nn.Dropout(0.5), "train", (4,), False),
    (nn.ReLU(), "eval", (4,), False),
    (nn.Tanh(), "eval", (4,), False),
    (nn.MaxPool2d(2), "eval", (2, 4, 4), False),
    (nn.LayerNorm(4), "eval", (4,), False),
    (nn.Softmax(dim=-1), "eval", (4,), False),
]


@pytest.mark.parametrize(
    "module,mode,shape,affine", AFFINITY, ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else None
)
def test_is_affine_says_what_the_module_computes(module, mode, shape, affine):
    module.train(mode == "train")
    assert is_affine(module) is affine
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(8, *shape, generator=g), torch.randn(8, *shape, generator=g) * 3
    torch.manual_seed(1)
    with torch.no_grad():
        lhs = module(x + v)
        rhs = module(x) + module(v) - module(torch.zeros_like(v))
    assert torch.allclose(lhs, rhs, atol=1e-5) is affine  # and the others visibly are not


@pytest.mark.parametrize(
    "module,mode,shape,affine",
    [a for a in AFFINITY if a[3]],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else None,
)
def test_fold_carries_a_vector_through_an_affine_module(module, mode, shape, affine):
    module.train(mode == "train")
    g = torch.Generator().manual_seed(2)
    x, vectors = torch.randn(5, *shape, generator=g), torch.randn(3, *shape, generator=g)
    with torch.no_grad():
        folded = fold(module, vectors)
        assert folded.shape[0] == 3
        for v, f in zip(vectors, folded):
            assert torch.allclose(module(x + v), module(x) + f, atol=1e-5)


def test_reshape():
    r = Reshape([2, 3])
    assert r.shape == (2, 3) and repr(r) == "Reshape(shape=[2, 3])"
    x = torch.arange(12.0).reshape(2, 6)
    assert torch.equal(r(x), x.reshape(2, 2, 3))
