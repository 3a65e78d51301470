"""ResidualMLP, the shipped network that is not a chain: it equals a plain-torch residual MLP bit for bit, every
cached activation equals a PyTorch forward hook on the plain network, and steering at every hook point equals a
forward hook adding the same vector there. from_module refuses the plain network, pointing to this route."""

import re

import pytest
import torch
from torch import nn

from hookedmlp import (
    HookedMLP,
    HookNameError,
    ResidualConfig,
    ResidualMLP,
    SteeringVector,
    UnsupportedNetworkError,
    capture,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny convolutions and matmuls: threads only contend

CONFIGS = {
    "layernorm": ResidualConfig(d_in=16, d_model=8, d_mlp=12, n_blocks=2, d_out=3),
    "no_norm_gelu": ResidualConfig(d_in=16, d_model=6, d_mlp=5, n_blocks=3, d_out=4, activation="gelu", norm="none"),
}


class PlainMLP(nn.Module):
    def __init__(self, cfg, act):
        super().__init__()
        self.W_in = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.act = act
        self.W_out = nn.Linear(cfg.d_mlp, cfg.d_model)

    def forward(self, x):
        return self.W_out(self.act(self.W_in(x)))


class PlainBlock(nn.Module):
    def __init__(self, cfg, act):
        super().__init__()
        self.ln = nn.LayerNorm(cfg.d_model) if cfg.norm == "layernorm" else nn.Identity()
        self.mlp = PlainMLP(cfg, act)

    def forward(self, h):
        return h + self.mlp(self.ln(h))


class PlainResidual(nn.Module):
    """The same network in plain torch, with the same parameter names (and no hook points)."""

    def __init__(self, cfg):
        super().__init__()
        act = {"relu": nn.ReLU, "gelu": nn.GELU}[cfg.activation]
        self.embed = nn.Linear(cfg.d_in, cfg.d_model)
        self.blocks = nn.ModuleList(PlainBlock(cfg, act()) for _ in range(cfg.n_blocks))
        self.ln_final = nn.LayerNorm(cfg.d_model) if cfg.norm == "layernorm" else nn.Identity()
        self.unembed = nn.Linear(cfg.d_model, cfg.d_out)

    def forward(self, x):
        h = self.embed(x.reshape(len(x), -1))
        for block in self.blocks:
            h = block(h)
        return self.unembed(self.ln_final(h))


def _pair(key):
    torch.manual_seed(0)
    model = ResidualMLP(CONFIGS[key]).eval()
    with torch.no_grad():  # non-trivial norm weights
        for name, p in model.named_parameters():
            if ".ln" in name or name.startswith("ln_final"):
                p.copy_(torch.rand(p.shape) + 0.5)
    plain = PlainResidual(CONFIGS[key]).eval()
    plain.load_state_dict(model.state_dict())  # strict: the same names
    x = torch.rand(5, 16, generator=torch.Generator().manual_seed(1))
    return model, plain, x


def reference_site(plain, name):
    """The plain module whose output (or, for resid_pre, input) hook point ``name`` carries."""
    if name == "hook_embed":
        return plain.embed, "post"
    if name == "hook_logits":
        return plain.unembed, "post"
    _, i, *rest = name.split(".")
    block = plain.blocks[int(i)]
    return {
        "hook_resid_pre": (block, "pre"),
        "mlp.hook_pre": (block.mlp.W_in, "post"),
        "mlp.hook_post": (block.mlp.act, "post"),
        "hook_mlp_out": (block.mlp, "post"),
        "hook_resid_post": (block, "post"),
    }[".".join(rest)]


def run_with_torch_hook(plain, x, module, side, fn):
    if side == "pre":
        handle = module.register_forward_pre_hook(lambda m, args: None if (r := fn(args[0])) is None else (r,))
    else:
        handle = module.register_forward_hook(lambda m, args, out: fn(out))
    try:
        with torch.no_grad():
            return plain(x)
    finally:
        handle.remove()


def test_hook_names_in_forward_order():
    model, _, _ = _pair("layernorm")
    block = ["hook_resid_pre", "mlp.hook_pre", "mlp.hook_post", "hook_mlp_out", "hook_resid_post"]
    assert model.hook_names == ["hook_embed", *[f"blocks.{i}.{n}" for i in range(2) for n in block], "hook_logits"]
    assert model.n_layers == 2 and model.input_shape == (1, 4, 4)


@pytest.mark.parametrize("key", CONFIGS)
def test_output_equals_the_plain_network(key):
    model, plain, x = _pair(key)
    with torch.no_grad():
        expected = plain(x)
        assert torch.equal(model(x), expected)
        assert torch.equal(model(x.reshape(5, 1, 4, 4)), expected) and torch.equal(model(x.reshape(5, 4, 4)), expected)
        with model.hooks(fwd_hooks=[("*", lambda act, hook: None)]):
            assert torch.equal(model(x), expected)


@pytest.mark.parametrize("key", CONFIGS)
def test_every_cached_activation_equals_a_torch_forward_hook(key):
    model, plain, x = _pair(key)
    with torch.no_grad():
        out, cache = model.run_with_cache(x)
    assert list(cache) == model.hook_names
    for name in model.hook_names:
        seen = {}
        module, side = reference_site(plain, name)
        run_with_torch_hook(plain, x, module, side, lambda t: seen.__setitem__("t", t.clone()))
        assert torch.equal(cache[name], seen["t"]), name
        assert model.activation_shape(name) == tuple(seen["t"].shape[1:])
    assert torch.equal(out, plain(x))


@pytest.mark.parametrize("key", CONFIGS)
def test_steering_at_every_hook_point_equals_a_torch_forward_hook(key):
    model, plain, x = _pair(key)
    g = torch.Generator().manual_seed(2)
    for name in model.hook_names:
        v = torch.randn(model.activation_shape(name), generator=g)
        module, side = reference_site(plain, name)
        expected = run_with_torch_hook(plain, x, module, side, lambda t: t + v)
        with torch.no_grad(), model.steer(SteeringVector({name: v})):
            got = model(x)
        assert torch.equal(got, expected), name
        assert not torch.equal(got, plain(x)), name


def test_act_name():
    model, _, _ = _pair("layernorm")
    assert model.act_name("resid_post", 0) == "blocks.0.hook_resid_post"
    assert model.act_name("pre", -1) == "blocks.1.mlp.hook_pre"
    assert model.act_name("embed") == "hook_embed" and model.act_name("logits") == "hook_logits"
    _, cache = model.run_with_cache(torch.rand(2, 16))
    assert torch.equal(cache["mlp_out", 1], cache["blocks.1.hook_mlp_out"])
    with pytest.raises(
        HookNameError,
        match=re.escape(
            "tuple keys of a ResidualMLP are ('embed',), ('logits',) or (name, layer) with name one of resid_pre, "
            "resid_post, mlp_out, pre, post; got ('attn_out', 0)"
        ),
    ):
        model.act_name("attn_out", 0)


def test_hook_table_lists_shapes():
    model, _, _ = _pair("layernorm")
    table = model.hook_table()
    assert table[0] == ("hook_embed", "[batch, 8]", "hook point in forward")
    assert table[2] == ("blocks.0.mlp.hook_pre", "[batch, 12]", "hook point in forward")
    assert table[-1] == ("hook_logits", "[batch, 3]", "hook point in forward")


def test_from_module_refuses_the_plain_network_and_capture_opens_it():
    _, plain, _ = _pair("layernorm")
    with pytest.raises(
        UnsupportedNetworkError,
        match=re.escape(
            "PlainResidual.forward is not a chain of modules: it applies + at test_residual.py:47: return h + "
            "self.mlp(self.ln(h)), an operation outside any module (named 'blocks.0.add' in its graph); open it with "
            "hookedmlp.capture(net), which hooks every module and op, or write it as a HookedRoot subclass with "
            "HookPoints placed in forward (see docs/your-own-network.md, and hookedmlp.ResidualMLP for an example)"
        ),
    ):
        HookedMLP.from_module(plain)
    hooked = capture(plain, (16,))
    x = torch.rand(3, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(hooked(x), plain(x))
    assert "blocks.0.add" in hooked.hook_names and "blocks.1.mlp.W_out" in hooked.hook_names
