"""MLPConfig, LayerSpec, build_module, spec_from_modules / spec_from_state_dict."""

import dataclasses
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hookedmlp import CheckpointError, HookedMLP, LayerSpec, MLPConfig
from hookedmlp.config import ACTIVATIONS, build_module, default_input_shape, spec_from_modules, spec_from_state_dict

FUNCTIONAL = {
    "relu": F.relu,
    "gelu": F.gelu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "leaky_relu": lambda t: F.leaky_relu(t, 0.01),
}


def functional_forward(model, x):
    """The model's forward by hand: F.linear with its weights and the functional activation."""
    h = x
    for spec, layer in zip(model.specs, [getattr(model, f"layer{i}") for i in range(model.n_layers)]):
        if spec.kind == "linear":
            h = F.linear(h, layer.module.weight, layer.module.bias)
        elif spec.kind == "dropout":
            pass  # eval mode
        else:
            h = FUNCTIONAL[spec.kind](h)
    return h


def test_defaults():
    cfg = MLPConfig()
    assert (cfg.d_in, cfg.d_hidden, cfg.d_out, cfg.activation, cfg.dropout, cfg.bias) == (784, (512, 512), 10, "relu", 0.0, True)
    assert cfg.layer_specs() == [
        LayerSpec("linear", 784, 512), LayerSpec("relu", 512, 512), LayerSpec("linear", 512, 512),
        LayerSpec("relu", 512, 512), LayerSpec("linear", 512, 10)]
    assert ACTIVATIONS == ("relu", "gelu", "tanh", "sigmoid", "leaky_relu")


def test_frozen_and_hashable():
    cfg = MLPConfig(d_hidden=(3,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.d_in = 5
    assert hash(cfg) == hash(MLPConfig(d_hidden=(3,)))
    assert MLPConfig(d_hidden=(3,)) == cfg


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_each_activation_builds_and_runs(activation, tiny_x):
    torch.manual_seed(0)
    cfg = MLPConfig(d_in=16, d_hidden=(8, 6), d_out=3, activation=activation)
    m = HookedMLP(cfg).eval()
    kinds = [s.kind for s in m.specs]
    assert kinds == ["linear", activation, "linear", activation, "linear"]
    expected_type = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "leaky_relu": nn.LeakyReLU}
    assert type(m.layer1.module) is expected_type[activation]
    with torch.no_grad():
        out = m(tiny_x)
        assert out.shape == (5, 3)
        assert torch.equal(out, functional_forward(m, tiny_x))
        assert torch.equal(out, m.to_sequential()(tiny_x))
        _, cache = m.run_with_cache(tiny_x, names_filter="layer3.*")
        assert torch.equal(cache["layer3.post"], FUNCTIONAL[activation](cache["layer3.pre"]))


def test_leaky_relu_slope_and_gelu_exact():
    specs = MLPConfig(d_in=4, d_hidden=(3,), d_out=2, activation="leaky_relu").layer_specs()
    assert specs[1] == LayerSpec("leaky_relu", 3, 3, param=0.01)
    assert build_module(specs[1]).negative_slope == 0.01
    gelu = MLPConfig(d_in=4, d_hidden=(3,), d_out=2, activation="gelu").layer_specs()[1]
    assert gelu.param == 0.0 and build_module(gelu).approximate == "none"
    assert build_module(LayerSpec("gelu", 3, 3, param=1.0)).approximate == "tanh"


def test_dropout_inserts_modules(tiny_x):
    torch.manual_seed(0)
    cfg = MLPConfig(d_in=16, d_hidden=(8, 8), d_out=3, dropout=0.25)
    m = HookedMLP(cfg)
    assert [s.kind for s in m.specs] == ["linear", "relu", "dropout", "linear", "relu", "dropout", "linear"]
    assert m.n_layers == 7 and len(m.hook_names) == 14
    for i in (2, 5):
        mod = getattr(m, f"layer{i}").module
        assert type(mod) is nn.Dropout and mod.p == 0.25
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(tiny_x), functional_forward(m, tiny_x))
    m.train()
    torch.manual_seed(3)
    a = m(tiny_x)
    torch.manual_seed(3)
    assert torch.equal(a, m.to_sequential()(tiny_x))
    assert not torch.equal(a, m.eval()(tiny_x))


def test_no_dropout_modules_by_default():
    assert not any(isinstance(mod, nn.Dropout) for mod in HookedMLP(MLPConfig(d_in=4, d_hidden=(3, 3), d_out=2)).modules())


def test_single_linear_and_no_bias(tiny_x):
    m = HookedMLP(MLPConfig(d_in=16, d_hidden=(), d_out=3, bias=False))
    assert m.specs == (LayerSpec("linear", 16, 3, bias=False),)
    assert m.layer0.module.bias is None
    assert m.hook_names == ["layer0.pre", "layer0.post"]
    with torch.no_grad():
        assert torch.equal(m(tiny_x), F.linear(tiny_x, m.layer0.module.weight))


@pytest.mark.parametrize("kwargs,message", [
    (dict(d_in=0), "layer widths must be positive ints, got d_in=0, d_hidden=(512, 512), d_out=10"),
    (dict(d_hidden=(8, -1)), "layer widths must be positive ints, got d_in=784, d_hidden=(8, -1), d_out=10"),
    (dict(d_out=True), "layer widths must be positive ints, got d_in=784, d_hidden=(512, 512), d_out=True"),
    (dict(activation="swish"), "unknown activation 'swish'; expected one of relu, gelu, tanh, sigmoid, leaky_relu"),
    (dict(activation="ReLU"), "unknown activation 'ReLU'"),
    (dict(dropout=1.0), "dropout must be a probability in [0, 1), got 1.0"),
    (dict(dropout=-0.1), "dropout must be a probability in [0, 1), got -0.1"),
    (dict(dropout=float("nan")), "dropout must be a probability in [0, 1), got nan"),
    (dict(dropout=True), "dropout must be a probability in [0, 1), got True"),
])
def test_bad_config_raises(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        MLPConfig(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(d_in=784.0), dict(dropout="0.1"), dict(d_hidden=(8, 2.5))])
def test_wrongly_typed_config_raises(kwargs):
    # rejected by the runtime annotation check (under pytest) or by __post_init__: a TypeError or ValueError
    with pytest.raises((TypeError, ValueError)):
        MLPConfig(**kwargs)


def test_empty_spec_raises():
    with pytest.raises(ValueError, match=re.escape("a HookedMLP needs at least one layer; got an empty spec")):
        HookedMLP([])


def test_inconsistent_specs_raise():
    # 16 -> 8 followed by a layer that reads 4: accepted at construction, fails only inside forward
    with pytest.raises(ValueError, match="8"):
        HookedMLP([LayerSpec("linear", 16, 8), LayerSpec("linear", 4, 3)])


# -- LayerSpec --------------------------------------------------------------------------

def test_layer_spec_round_trip():
    for spec in MLPConfig(d_in=4, d_hidden=(3,), d_out=2, activation="leaky_relu", dropout=0.5, bias=False).layer_specs():
        d = spec.to_dict()
        assert d == {"kind": spec.kind, "d_in": spec.d_in, "d_out": spec.d_out, "bias": spec.bias, "param": spec.param}
        assert LayerSpec.from_dict(d) == spec
    assert LayerSpec.from_dict({"kind": "relu", "d_in": 3, "d_out": 3}) == LayerSpec("relu", 3, 3, True, 0.0)


@pytest.mark.parametrize("d,message", [
    ({"kind": "linear", "d_in": 3}, "malformed layer spec {'kind': 'linear', 'd_in': 3}: 'd_out'"),
    ({"kind": "linear", "d_in": "three", "d_out": 2}, "malformed layer spec {'kind': 'linear', 'd_in': 'three', 'd_out': 2}: invalid literal"),
    ({"kind": "conv", "d_in": 3, "d_out": 2}, "unknown layer kind 'conv'; expected one of linear, dropout, relu, gelu, tanh, sigmoid, leaky_relu"),
])
def test_layer_spec_from_bad_dict(d, message):
    with pytest.raises(CheckpointError, match=re.escape(message)):
        LayerSpec.from_dict(d)


def test_build_module_kinds():
    assert isinstance(build_module(LayerSpec("linear", 3, 2)), nn.Linear)
    assert build_module(LayerSpec("linear", 3, 2, bias=False)).bias is None
    assert type(build_module(LayerSpec("relu", 2, 2))) is nn.ReLU
    assert type(build_module(LayerSpec("tanh", 2, 2))) is nn.Tanh
    assert type(build_module(LayerSpec("sigmoid", 2, 2))) is nn.Sigmoid
    assert build_module(LayerSpec("dropout", 2, 2, param=0.3)).p == 0.3
    with pytest.raises(CheckpointError, match=re.escape("unknown layer kind 'conv'")):
        build_module(LayerSpec("conv", 2, 2))


# -- spec_from_modules / spec_from_state_dict --------------------------------------------

def test_spec_from_modules():
    specs = spec_from_modules([nn.Linear(4, 3), nn.GELU(approximate="tanh"), nn.Dropout(0.2), nn.Linear(3, 2, bias=False),
                               nn.LeakyReLU(0.3), nn.Linear(2, 1)])
    assert specs == [LayerSpec("linear", 4, 3), LayerSpec("gelu", 3, 3, param=1.0), LayerSpec("dropout", 3, 3, param=0.2),
                     LayerSpec("linear", 3, 2, bias=False), LayerSpec("leaky_relu", 2, 2, param=0.3), LayerSpec("linear", 2, 1)]


def test_spec_from_modules_errors():
    with pytest.raises(ValueError, match=re.escape("module 2 (Linear) expects 4 inputs but the previous layer gives 3")):
        spec_from_modules([nn.Linear(4, 3), nn.ReLU(), nn.Linear(4, 2)])
    with pytest.raises(TypeError, match=re.escape("module 0 (ReLU) comes before any Linear")):
        spec_from_modules([nn.ReLU(), nn.Linear(4, 2)])
    with pytest.raises(TypeError, match=re.escape("module 1 is Flatten, which HookedMLP does not support")):
        spec_from_modules([nn.Linear(4, 2), nn.Flatten()])
    with pytest.raises(TypeError, match=re.escape("module 1 is Softmax, which HookedMLP does not support")):
        spec_from_modules([nn.Linear(4, 2), nn.Softmax(-1)])
    with pytest.raises(ValueError, match=re.escape("the stack has no Linear layer")):
        spec_from_modules([])


def test_spec_from_state_dict_offset_and_keys():
    seq = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    specs, weights, offset = spec_from_state_dict(seq.state_dict(), activation="sigmoid")
    assert offset == 1
    assert specs == [LayerSpec("linear", 4, 3), LayerSpec("sigmoid", 3, 3), LayerSpec("linear", 3, 2)]
    assert list(weights) == ["layer0.module.weight", "layer0.module.bias", "layer2.module.weight", "layer2.module.bias"]
    assert torch.equal(weights["layer2.module.weight"], seq[3].weight)


def test_default_input_shape():
    assert default_input_shape(784) == (1, 28, 28)
    assert default_input_shape(16) == (1, 4, 4)
    assert default_input_shape(12) == (12,)
    assert default_input_shape(1) == (1,)
