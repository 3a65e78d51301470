"""Architecture recipes: MLPConfig (activations, norms, dropout), LeNetConfig, ResidualConfig, their plain-dict form
for checkpoints, and the messages for bad values."""

import dataclasses
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hookedmlp import ConfigError, HookedMLP, LeNetConfig, MLPConfig, ResidualConfig
from hookedmlp.models.configs import (
    ACTIVATIONS,
    NORMS,
    activation_module,
    config_from_dict,
    config_to_dict,
    image_shape,
)

FUNCTIONAL = {
    "relu": F.relu,
    "gelu": F.gelu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "silu": F.silu,
    "elu": F.elu,
    "softplus": F.softplus,
    "leaky_relu": lambda t: F.leaky_relu(t, 0.01),
    "identity": lambda t: t,
}
TYPES = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "leaky_relu": nn.LeakyReLU,
    "identity": nn.Identity,
}


def test_defaults_are_the_studys_network():
    cfg = MLPConfig()
    assert (cfg.d_in, cfg.d_hidden, cfg.d_out, cfg.activation, cfg.dropout, cfg.norm, cfg.bias) == (
        784,
        (512, 512),
        10,
        "relu",
        0.0,
        "none",
        True,
    )
    assert [type(m) for m in cfg.modules()] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert [(m.in_features, m.out_features) for m in cfg.modules() if isinstance(m, nn.Linear)] == [
        (784, 512),
        (512, 512),
        (512, 10),
    ]
    assert cfg.input_shape == (1, 28, 28)
    assert tuple(ACTIVATIONS) == tuple(FUNCTIONAL) and NORMS == ("none", "layernorm", "batchnorm")


def test_frozen_and_hashable():
    cfg = MLPConfig(d_hidden=(3,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.d_in = 5
    assert hash(cfg) == hash(MLPConfig(d_hidden=(3,))) and cfg == MLPConfig(d_hidden=(3,))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_each_activation_builds_and_runs(activation, tiny_x):
    torch.manual_seed(0)
    m = HookedMLP(MLPConfig(d_in=16, d_hidden=(8, 6), d_out=3, activation=activation)).eval()
    assert type(m.layer1.module) is TYPES[activation] and type(m.layer3.module) is TYPES[activation]
    assert m.layer1.module is not m.layer3.module  # fresh modules, never shared
    w = [m.layer0.module, m.layer2.module, m.layer4.module]
    act = FUNCTIONAL[activation]
    with torch.no_grad():
        expected = F.linear(
            act(F.linear(act(F.linear(tiny_x, w[0].weight, w[0].bias)), w[1].weight, w[1].bias)), w[2].weight, w[2].bias
        )
        assert torch.equal(m(tiny_x), expected)
        _, cache = m.run_with_cache(tiny_x, names_filter="layer3.*")
        assert torch.equal(cache["layer3.post"], act(cache["layer3.pre"]))


@pytest.mark.parametrize("norm,kind", [("layernorm", nn.LayerNorm), ("batchnorm", nn.BatchNorm1d)])
def test_norms_sit_between_linear_and_activation(norm, kind, tiny_x):
    torch.manual_seed(0)
    m = HookedMLP(MLPConfig(d_in=16, d_hidden=(8, 8), d_out=3, norm=norm, dropout=0.1)).eval()
    assert [type(layer.module) for layer in m.layout.layers] == [
        nn.Linear,
        kind,
        nn.ReLU,
        nn.Dropout,
        nn.Linear,
        kind,
        nn.ReLU,
        nn.Dropout,
        nn.Linear,
    ]
    assert m.layer1.module.normalized_shape == (8,) if norm == "layernorm" else m.layer1.module.num_features == 8
    with torch.no_grad():
        assert torch.equal(m(tiny_x), m.to_sequential()(tiny_x))


def test_dropout_inserts_modules(tiny_x):
    torch.manual_seed(0)
    m = HookedMLP(MLPConfig(d_in=16, d_hidden=(8, 8), d_out=3, dropout=0.25))
    assert m.n_layers == 7 and len(m.hook_names) == 14
    for i in (2, 5):
        assert type(getattr(m, f"layer{i}").module) is nn.Dropout and getattr(m, f"layer{i}").module.p == 0.25
    m.train()
    torch.manual_seed(3)
    a = m(tiny_x)
    torch.manual_seed(3)
    assert torch.equal(a, m.to_sequential()(tiny_x))
    assert not torch.equal(a, m.eval()(tiny_x))
    assert not any(
        isinstance(mod, nn.Dropout) for mod in HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2)).modules()
    )


def test_single_linear_and_no_bias(tiny_x):
    m = HookedMLP(MLPConfig(d_in=16, d_hidden=(), d_out=3, bias=False))
    assert m.hook_names == ["layer0.pre", "layer0.post"] and m.layer0.module.bias is None
    with torch.no_grad():
        assert torch.equal(m(tiny_x), F.linear(tiny_x, m.layer0.module.weight))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(d_in=0), "d_in must be >= 1, got 0"),
        (dict(d_hidden=(8, -1)), "d_hidden[1] must be >= 1, got -1"),
        (dict(d_out=True), "d_out must be an int, got bool (True)"),
        (
            dict(activation="swish"),
            "activation must be one of 'relu', 'gelu', 'tanh', 'sigmoid', 'silu', 'elu', 'softplus', "
            "'leaky_relu', 'identity', got 'swish'",
        ),
        (dict(activation="rleu"), "got 'rleu'; did you mean 'relu'?"),
        (dict(dropout=1.0), "dropout must be finite and in [0, 1), got 1.0"),
        (dict(dropout=-0.1), "dropout must be finite and in [0, 1), got -0.1"),
        (dict(dropout=float("nan")), "dropout must be finite and in [0, 1), got nan"),
        (dict(norm="rmsnorm"), "norm must be one of 'none', 'layernorm', 'batchnorm', got 'rmsnorm'"),
    ],
)
def test_bad_mlp_config(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        MLPConfig(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(d_in=784.0), dict(dropout="0.1"), dict(d_hidden=(8, 2.5)), dict(bias="yes")])
def test_wrongly_typed_config(kwargs):
    # refused by the runtime annotation check (under pytest) or by __post_init__
    with pytest.raises((TypeError, ConfigError)):
        MLPConfig(**kwargs)


def test_lenet_config():
    cfg = LeNetConfig()
    assert cfg.input_shape == (1, 28, 28)
    modules = cfg.modules()
    assert [type(m) for m in modules] == [
        nn.Conv2d,
        nn.ReLU,
        nn.MaxPool2d,
        nn.Conv2d,
        nn.ReLU,
        nn.MaxPool2d,
        nn.Flatten,
        nn.Linear,
        nn.ReLU,
        nn.Linear,
        nn.ReLU,
        nn.Linear,
    ]
    assert (modules[0].out_channels, modules[3].out_channels, modules[7].in_features, modules[-1].out_features) == (
        6,
        16,
        16 * 5 * 5,
        10,
    )
    assert LeNetConfig(in_channels=3).input_shape == (3, 28, 28)
    # three channel counts: the annotation check (under pytest) or __post_init__ says so; a ConfigError from a file
    with pytest.raises(ConfigError, match=re.escape("file config: ")) as info:
        config_from_dict({"kind": "lenet", "channels": [6, 16, 32]}, "file config")
    assert "channels" in str(info.value)
    with pytest.raises(ConfigError, match=re.escape("channels[0] must be >= 1, got 0")):
        LeNetConfig(channels=(0, 16))


def test_residual_config():
    cfg = ResidualConfig(d_in=12)
    assert cfg.input_shape == (12,) and ResidualConfig().input_shape == (1, 28, 28)
    with pytest.raises(ConfigError, match=re.escape("norm must be one of 'none', 'layernorm', got 'batchnorm'")):
        ResidualConfig(norm="batchnorm")
    with pytest.raises(ConfigError, match=re.escape("n_blocks must be >= 1, got 0")):
        ResidualConfig(n_blocks=0)


@pytest.mark.parametrize(
    "cfg",
    [
        MLPConfig(),
        MLPConfig(d_in=16, d_hidden=(8,), d_out=3, norm="layernorm", dropout=0.5),
        LeNetConfig(channels=(2, 3)),
        ResidualConfig(n_blocks=3, activation="gelu"),
    ],
)
def test_plain_dict_round_trip(cfg):
    data = config_to_dict(cfg)
    assert data["kind"] == {MLPConfig: "mlp", LeNetConfig: "lenet", ResidualConfig: "residual"}[type(cfg)]
    lists = {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}  # as JSON gives them back
    assert config_from_dict(lists) == config_from_dict(data) == cfg
    assert config_from_dict(None) is None


def test_a_dict_without_kind_is_an_mlp():
    """Version 1 checkpoints recorded MLPConfig fields only."""
    assert config_from_dict({"d_in": 16, "d_hidden": [8], "d_out": 3}) == MLPConfig(d_in=16, d_hidden=(8,), d_out=3)


@pytest.mark.parametrize(
    "data,message",
    [
        ([1, 2], "ckpt config: expected a dict describing an architecture, got list"),
        (
            {"kind": "transformer"},
            "ckpt config: unknown architecture kind 'transformer'; expected one of mlp, lenet, residual",
        ),
        ({"kind": "mlp", "width": 3}, "ckpt config: "),
        ({"kind": "mlp", "d_in": -3}, "d_in must be >= 1, got -3"),
    ],
)
def test_bad_plain_dicts(data, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict(data, "ckpt config")


def test_image_shape_and_activation_module():
    assert image_shape(784) == (1, 28, 28) and image_shape(16) == (1, 4, 4)
    assert image_shape(12) == (12,) and image_shape(1) == (1,)
    assert activation_module("leaky_relu").negative_slope == 0.01
    assert activation_module("relu") is not activation_module("relu")
    with pytest.raises(ConfigError, match=re.escape("activation must be one of")):
        activation_module("swish")
