"""HookedMLP: forward equals plain torch bit for bit, start_at/stop_at, input checks,
from_sequential / to_sequential / from_state_dict, repr, and the jaxtyping runtime checks."""

import re

import jaxtyping
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hookedmlp import HookedMLP, HookNameError, InputDtypeError, MLPConfig, ShapeError
from hookedmlp.errors import CheckpointError

TINY_NAMES = [f"layer{i}.{p}" for i in range(5) for p in ("pre", "post")]


def reference_acts(modules, x):
    """Plain torch, module by module: the input and output of every module of the stack."""
    acts = {}
    h = x.reshape(x.shape[0], -1)
    for i, m in enumerate(modules):
        acts[f"layer{i}.pre"] = h
        h = m(h)
        acts[f"layer{i}.post"] = h
    return acts


@pytest.fixture
def full():
    torch.manual_seed(123)
    return HookedMLP().eval()


def _counting_hooks(names, counts):
    """Hooks that change the activation (so skipping or repeating one shows) and count calls."""
    hooks = []
    for k, name in enumerate(names):
        def fn(act, hook, k=k):
            counts[hook.name] = counts.get(hook.name, 0) + 1
            return act * 1.25 + 0.01 * (k + 1)
        hooks.append((name, fn))
    return hooks


# -- forward equals plain torch -------------------------------------------------------

def test_tiny_forward_equals_sequential(tiny, tiny_seq, tiny_x):
    with torch.no_grad():
        assert torch.equal(tiny(tiny_x), tiny_seq(tiny_x))
        assert torch.equal(tiny(tiny_x.reshape(5, 1, 4, 4)), tiny_seq(tiny_x))
        assert torch.equal(tiny(tiny_x.reshape(5, 4, 4)), tiny_seq(tiny_x))


def test_tiny_forward_with_grad_equals_sequential(tiny, tiny_seq, tiny_x):
    out = tiny(tiny_x)
    assert out.requires_grad
    assert torch.equal(out, tiny_seq(tiny_x))


@pytest.mark.parametrize("shape", [(7, 784), (7, 1, 28, 28), (7, 28, 28)])
def test_default_model_equals_its_sequential(full, shape):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(*shape, generator=g)
    seq = full.to_sequential()
    with torch.no_grad():
        expected = seq(x)
        assert expected.shape == (7, 10)
        assert torch.equal(full(x), expected)
        # the slow path (hooks attached, here doing nothing) gives the same bits
        with full.hooks(fwd_hooks=[("*", lambda act, hook: None)]):
            assert torch.equal(full(x), expected)


def test_default_model_architecture(full):
    assert full.hook_names == TINY_NAMES
    assert [type(m) for m in full.to_sequential()] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert [(m.in_features, m.out_features) for m in full.to_sequential() if isinstance(m, nn.Linear)] == [
        (784, 512), (512, 512), (512, 10)]
    assert full.input_shape == (1, 28, 28)
    assert (full.d_in, full.d_out, full.n_layers) == (784, 10, 5)
    assert full.config == MLPConfig()


def test_default_model_cache_equals_reference(full):
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = reference_acts(list(full.to_sequential())[1:], x)
        out, cache = full.run_with_cache(x)
    assert list(cache) == full.hook_names
    for name in full.hook_names:
        assert torch.equal(cache[name], ref[name]), name
    assert torch.equal(out, ref["layer4.post"])


def test_forward_matches_functional_reference(tiny, tiny_seq, tiny_x):
    w = [tiny_seq[i].weight for i in (0, 2, 4)]
    b = [tiny_seq[i].bias for i in (0, 2, 4)]
    with torch.no_grad():
        h = F.relu(F.linear(tiny_x, w[0], b[0]))
        h = F.relu(F.linear(h, w[1], b[1]))
        assert torch.equal(tiny(tiny_x), F.linear(h, w[2], b[2]))


def test_hook_names_and_widths(tiny):
    assert tiny.hook_names == TINY_NAMES
    assert [tiny.hook_dict[n].name for n in tiny.hook_names] == TINY_NAMES
    x = torch.rand(2, 16)
    widths = {n: tiny(x, stop_at=n).shape[1] for n in tiny.hook_names}
    assert widths == {"layer0.pre": 16, "layer0.post": 8, "layer1.pre": 8, "layer1.post": 8, "layer2.pre": 8,
                      "layer2.post": 8, "layer3.pre": 8, "layer3.post": 8, "layer4.pre": 8, "layer4.post": 3}


def test_model_repr(tiny):
    r = repr(tiny)
    first = r.splitlines()[:2]
    assert first == ["HookedMLP(", "  16 -> 8 -> 8 -> 3, relu; 5 layers, 10 hook points, 0 hooks attached"]
    assert "(pre): HookPoint(name='layer0.pre', fwd_hooks=0, bwd_hooks=0)" in r
    assert "(post): HookPoint(name='layer4.post', fwd_hooks=0, bwd_hooks=0)" in r
    with tiny.add_hook("layer2.post", lambda a, h: None), tiny.add_hook("layer2.post", lambda a, h: None, dir="bwd"):
        r = repr(tiny)
        assert "5 layers, 10 hook points, 2 hooks attached" in r
        assert "HookPoint(name='layer2.post', fwd_hooks=1, bwd_hooks=1)" in r
    assert "0 hooks attached" in repr(tiny)


def test_repr_lists_activation_kinds():
    m = HookedMLP.from_sequential(nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Dropout(0.1), nn.Linear(3, 2)))
    assert "4 -> 3 -> 2, dropout/tanh; 4 layers, 8 hook points, 0 hooks attached" in repr(m)
    assert "3 -> 2, linear; 1 layers" in repr(HookedMLP.from_sequential(nn.Sequential(nn.Linear(3, 2))))


# -- start_at / stop_at ----------------------------------------------------------------

@pytest.mark.parametrize("name", TINY_NAMES)
def test_split_forward_equals_full_forward(tiny, tiny_seq, tiny_x, name):
    with torch.no_grad():
        full_out = tiny(tiny_x)
        mid = tiny(tiny_x, stop_at=name)
        assert torch.equal(tiny(mid, start_at=name), full_out)
        assert torch.equal(full_out, tiny_seq(tiny_x))
        assert torch.equal(mid, reference_acts(list(tiny_seq), tiny_x)[name])
        # image-shaped input as well
        mid_img = tiny(tiny_x.reshape(5, 1, 4, 4), stop_at=name)
        assert torch.equal(tiny(mid_img, start_at=name), full_out)


@pytest.mark.parametrize("name", TINY_NAMES)
def test_split_forward_with_hooks_runs_each_hook_once(tiny, tiny_x, name):
    counts: dict[str, int] = {}
    with torch.no_grad(), tiny.hooks(fwd_hooks=_counting_hooks(TINY_NAMES, counts)):
        full_out = tiny(tiny_x)
        assert counts == {n: 1 for n in TINY_NAMES}
        counts.clear()
        mid = tiny(tiny_x, stop_at=name)
        pos = TINY_NAMES.index(name)
        assert counts == {n: 1 for n in TINY_NAMES[: pos + 1]}
        split_out = tiny(mid, start_at=name)
        assert counts == {n: 1 for n in TINY_NAMES}
    assert torch.equal(split_out, full_out)


def test_hooked_full_forward_matches_manual_computation(tiny, tiny_seq, tiny_x):
    counts: dict[str, int] = {}
    with torch.no_grad(), tiny.hooks(fwd_hooks=_counting_hooks(TINY_NAMES, counts)):
        out = tiny(tiny_x)
    h = tiny_x
    for k, m in enumerate(tiny_seq):
        h = h * 1.25 + 0.01 * (2 * k + 1)      # the hook at layer{k}.pre
        h = m(h) * 1.25 + 0.01 * (2 * k + 2)   # the module, then the hook at layer{k}.post
    assert torch.equal(out, h)


def test_stop_at_returns_activation_after_its_hooks(tiny, tiny_seq, tiny_x):
    with torch.no_grad():
        expected = tiny_seq[2](tiny_seq[1](tiny_seq[0](tiny_x))) * 3
        with tiny.hooks(fwd_hooks=[("layer2.post", lambda a, h: a * 3)]):
            assert torch.equal(tiny(tiny_x, stop_at="layer2.post"), expected)


def test_start_at_skips_hooks_at_that_point(tiny, tiny_seq, tiny_x):
    calls = []
    with torch.no_grad():
        mid = tiny(tiny_x, stop_at="layer1.post")
        with tiny.hooks(fwd_hooks=[("layer1.post", lambda a, h: calls.append(h.name) or a * 0),
                                   ("layer2.pre", lambda a, h: calls.append(h.name))]):
            out = tiny(mid, start_at="layer1.post")
        assert calls == ["layer2.pre"]
        assert torch.equal(out, tiny_seq[4](tiny_seq[3](tiny_seq[2](mid))))


def test_start_and_stop_at_the_same_point_is_identity(tiny, tiny_x):
    a = tiny(tiny_x, stop_at="layer2.pre")
    assert torch.equal(tiny(a, start_at="layer2.pre", stop_at="layer2.pre"), a)


def test_start_at_wrong_width_raises(tiny):
    with pytest.raises(ShapeError, match=re.escape("start_at='layer0.post' expects its activation of shape [batch, 8], got [5, 7]")):
        tiny(torch.zeros(5, 7), start_at="layer0.post")
    with pytest.raises(ShapeError, match=re.escape("start_at='layer0.pre' expects its activation of shape [batch, 16], got [5, 1, 4, 4]")):
        tiny(torch.zeros(5, 1, 4, 4), start_at="layer0.pre")


def test_start_at_wrong_dtype_raises(tiny):
    with pytest.raises(InputDtypeError, match=re.escape("expected a floating-point activation for start_at='layer2.pre' (pixels in [0, 1]), got dtype torch.int64")):
        tiny(torch.zeros(5, 8, dtype=torch.long), start_at="layer2.pre")


def test_stop_before_start_raises(tiny):
    with pytest.raises(ValueError, match=re.escape("stop_at='layer0.post' comes before start_at='layer1.post'; hook order is layer0.pre, layer0.post, layer1.pre")):
        tiny(torch.zeros(5, 8), start_at="layer1.post", stop_at="layer0.post")


def test_start_stop_unknown_name_or_pattern(tiny, tiny_x):
    with pytest.raises(HookNameError, match=re.escape("unknown hook 'layer2.pots'; did you mean 'layer2.post'?")):
        tiny(tiny_x, stop_at="layer2.pots")
    with pytest.raises(HookNameError, match=re.escape("unknown hook 'layer9.pre'")):
        tiny(torch.zeros(5, 8), start_at="layer9.pre")
    with pytest.raises(HookNameError, match=re.escape("expected one hook name, got the pattern '*.post' matching 5 hook points; pick one, e.g. 'layer0.post'")):
        tiny(torch.zeros(5, 8), start_at="*.post")
    with pytest.raises(HookNameError, match=re.escape("expected one hook name, got the pattern 'layer1.*' matching 2 hook points")):
        tiny(tiny_x, stop_at="layer1.*")


# -- input validation --------------------------------------------------------------------

EXPECTED_SHAPES = "expected input of shape [batch, 16] or [batch, 1, 4, 4] or [batch, 4, 4], got "


@pytest.mark.parametrize("shape,hint", [
    ((16,), "; add a batch dimension with x.unsqueeze(0)"),
    ((4, 4), "; add a batch dimension with x.unsqueeze(0)"),
    ((5, 15), ""),
    ((5, 17), ""),
    ((5, 2, 4, 4), ""),
    ((5, 1, 1, 4, 4), ""),
    ((5, 4, 4, 1), ""),
])
def test_bad_input_shape(tiny, shape, hint):
    with pytest.raises(ShapeError, match=re.escape(EXPECTED_SHAPES + str(list(shape)) + hint) + "$"):
        tiny(torch.zeros(shape))


def test_bad_input_shape_default_model(full):
    with pytest.raises(ShapeError, match=re.escape(
            "expected input of shape [batch, 784] or [batch, 1, 28, 28] or [batch, 28, 28], got [784]; "
            "add a batch dimension with x.unsqueeze(0)")):
        full(torch.zeros(784))
    with pytest.raises(ShapeError, match=re.escape("got [2, 1, 1, 28, 28]")):
        full(torch.zeros(2, 1, 1, 28, 28))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.int32, torch.bool])
def test_integer_input_raises(tiny, dtype):
    with pytest.raises(InputDtypeError, match=re.escape(
            f"expected a floating-point input (pixels in [0, 1]), got dtype {dtype}; convert with x.float() / 255 for uint8 images")):
        tiny(torch.zeros(5, 16, dtype=dtype))


def test_float64_input_raises(tiny):
    with pytest.raises(InputDtypeError, match=re.escape(
            "input dtype torch.float64 does not match the model's torch.float32; use x.to(torch.float32) or model.to(torch.float64)")):
        tiny(torch.zeros(5, 16, dtype=torch.float64))


def test_float64_model_accepts_float64(tiny_seq, tiny_x):
    seq64 = tiny_seq.double()
    m = HookedMLP.from_sequential(seq64)
    assert m.layer0.module.weight.dtype == torch.float64
    with torch.no_grad():
        assert torch.equal(m(tiny_x.double()), seq64(tiny_x.double()))
    with pytest.raises(InputDtypeError, match=re.escape("input dtype torch.float32 does not match the model's torch.float64")):
        m(tiny_x)


def test_wrong_device_raises(tiny):
    with pytest.raises(InputDtypeError, match=re.escape("input is on meta but the model is on cpu; use x.to('cpu')")):
        tiny(torch.zeros(5, 16, device="meta"))


@pytest.mark.parametrize("shape", [(0, 16), (0, 1, 4, 4), (0, 4, 4)])
def test_empty_batch_raises(tiny, shape):
    with pytest.raises(ShapeError, match=re.escape(f"empty batch: input has shape {list(shape)}; expected at least one example")):
        tiny(torch.zeros(shape))


def test_non_tensor_input_raises(tiny):
    # The library's own check (prepare_input takes Any, so no runtime type check runs first)
    with pytest.raises(TypeError, match=re.escape("expected a torch.Tensor input, got list")):
        tiny.prepare_input([[0.0] * 16])
    with pytest.raises(TypeError, match=re.escape("expected a torch.Tensor input, got ndarray")):
        tiny.prepare_input(torch.zeros(2, 16).numpy())
    # through forward, the annotation x: Shaped[Tensor, ...] may reject it first; a TypeError either way
    with pytest.raises(TypeError, match="Tensor"):
        tiny([[0.0] * 16])


def test_prepare_input_flattens(tiny, tiny_x):
    for x in (tiny_x, tiny_x.reshape(5, 1, 4, 4), tiny_x.reshape(5, 4, 4)):
        out = tiny.prepare_input(x)
        assert out.shape == (5, 16)
        assert torch.equal(out, tiny_x)


def test_custom_input_shape():
    m = HookedMLP(MLPConfig(d_in=12, d_hidden=(5,), d_out=2), input_shape=(2, 6))
    x = torch.rand(3, 2, 6)
    with torch.no_grad():
        assert torch.equal(m(x), m(x.reshape(3, 12)))
    with pytest.raises(ShapeError, match=re.escape("expected input of shape [batch, 12] or [batch, 2, 6], got [3, 6, 2]")):
        m(torch.rand(3, 6, 2))
    with pytest.raises(ShapeError, match=re.escape("input_shape (3, 5) has 15 elements, but the first layer takes d_in=12")):
        HookedMLP(MLPConfig(d_in=12, d_hidden=(5,), d_out=2), input_shape=(3, 5))
    assert HookedMLP(MLPConfig(d_in=12, d_hidden=(5,), d_out=2)).input_shape == (12,)


# -- jaxtyping runtime checks ---------------------------------------------------------------

def test_jaxtyping_runtime_checks_are_active(tiny):
    """HookedMLP.forward declares ``x: Shaped[Tensor, "batch *d_in"]`` (at least one dim).

    A 0-d tensor violates that shape. With the jaxtyping import hook on (pytest's
    ``--jaxtyping-packages``) the call fails in the annotation check, before the body
    runs; the body alone would raise ShapeError from prepare_input (shown below).
    """
    with pytest.raises(jaxtyping.TypeCheckError, match=re.escape("Shaped[Tensor, 'batch *d_in']")):
        tiny(torch.tensor(1.0))
    with pytest.raises(ShapeError, match=re.escape(EXPECTED_SHAPES + "[]")):
        tiny.prepare_input(torch.tensor(1.0))


# -- from_sequential / to_sequential / state dicts ---------------------------------------

def test_from_sequential_shares_weights(tiny, tiny_seq, tiny_x):
    assert tiny.layer0.module is tiny_seq[0]
    assert tiny.layer2.module is tiny_seq[2]
    assert tiny.layer4.module is tiny_seq[4]
    with torch.no_grad():
        tiny_seq[2].weight.mul_(-2)
        assert torch.equal(tiny(tiny_x), tiny_seq(tiny_x))
        tiny.layer4.module.bias.add_(1)
        assert torch.equal(tiny(tiny_x), tiny_seq(tiny_x))
    params = {id(p) for p in tiny.parameters()}
    assert params == {id(p) for p in tiny_seq.parameters()}


def test_from_sequential_with_flatten(tiny_seq, tiny_x):
    seq = nn.Sequential(nn.Flatten(), *tiny_seq)
    m = HookedMLP.from_sequential(seq)
    assert m.hook_names == TINY_NAMES
    assert m.layer0.module is seq[1]
    img = tiny_x.reshape(5, 1, 4, 4)
    with torch.no_grad():
        assert torch.equal(m(img), seq(img))


def test_from_sequential_accepts_a_list(tiny_seq, tiny_x):
    m = HookedMLP.from_sequential(list(tiny_seq))
    with torch.no_grad():
        assert torch.equal(m(tiny_x), tiny_seq(tiny_x))


def test_from_sequential_with_dropout(tiny_x):
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))
    m = HookedMLP.from_sequential(seq)
    assert [s.kind for s in m.specs] == ["linear", "relu", "dropout", "linear"]
    assert isinstance(m.layer2.module, nn.Dropout) and m.layer2.module.p == 0.5
    assert len(m.hook_names) == 8
    # train mode: the same random mask from the same generator state
    seq.train(), m.train()
    torch.manual_seed(5)
    a = seq(tiny_x)
    torch.manual_seed(5)
    b = m(tiny_x)
    assert torch.equal(a, b)
    assert not torch.equal(a, m.eval()(tiny_x))
    seq.eval()
    with torch.no_grad():
        assert torch.equal(m(tiny_x), seq(tiny_x))
        _, cache = m.run_with_cache(tiny_x)
        assert torch.equal(cache["layer2.post"], cache["layer2.pre"])  # eval-mode dropout is the identity


def test_from_sequential_with_inplace_relu(tiny_x):
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(inplace=True), nn.Linear(8, 8),
                        nn.ReLU(inplace=True), nn.Linear(8, 3))
    m = HookedMLP.from_sequential(seq).eval()
    with torch.no_grad():
        assert torch.equal(m(tiny_x), seq(tiny_x))
        out, cache = m.run_with_cache(tiny_x)
        pre_relu = seq[1](tiny_x)
        assert (pre_relu < 0).any()  # the check below would be vacuous otherwise
        assert torch.equal(cache["layer0.post"], pre_relu)
        assert torch.equal(cache["layer1.post"], torch.relu(pre_relu))
        assert torch.equal(out, seq(tiny_x))
    assert not m.layer1.module.inplace and not m.layer3.module.inplace


def test_from_sequential_other_activations(tiny_x):
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(16, 8), nn.GELU(approximate="tanh"), nn.Linear(8, 8), nn.LeakyReLU(0.2),
                        nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 8), nn.Tanh(),
                        nn.Linear(8, 3))
    m = HookedMLP.from_sequential(seq)
    assert m.layer1.module.approximate == "tanh" and m.layer5.module.approximate == "none"
    assert m.layer3.module.negative_slope == 0.2
    with torch.no_grad():
        assert torch.equal(m(tiny_x), seq(tiny_x))
        _, cache = m.run_with_cache(tiny_x)
        ref = reference_acts(list(seq), tiny_x)
        for name in m.hook_names:
            assert torch.equal(cache[name], ref[name]), name


def test_from_sequential_unsupported_module():
    with pytest.raises(TypeError, match=re.escape("module 1 is Conv2d, which HookedMLP does not support; supported: "
                                                  "Flatten (first only), Linear, ReLU, GELU, Tanh, Sigmoid, LeakyReLU, Dropout")):
        HookedMLP.from_sequential(nn.Sequential(nn.Linear(4, 3), nn.Conv2d(1, 1, 1)))
    with pytest.raises(TypeError, match=re.escape("module 0 (Conv2d) comes before any Linear; the stack must start with Linear")):
        HookedMLP.from_sequential(nn.Sequential(nn.Conv2d(1, 1, 1), nn.Linear(4, 3)))
    with pytest.raises(TypeError, match=re.escape("module 2 is Identity, which HookedMLP does not support")):
        HookedMLP.from_sequential(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Identity()))
    with pytest.raises(ValueError, match=re.escape("the stack has no Linear layer; expected at least one nn.Linear")):
        HookedMLP.from_sequential(nn.Sequential(nn.Flatten()))


def test_from_sequential_error_position_counts_the_flatten():
    # seq[2] is the Conv2d, but from_sequential drops the Flatten before numbering, so the message says "module 1"
    with pytest.raises(TypeError, match=re.escape("module 2 is Conv2d")):
        HookedMLP.from_sequential(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Conv2d(1, 1, 1)))


def test_to_sequential_round_trip(tiny, tiny_seq, tiny_x):
    seq = tiny.to_sequential()
    assert isinstance(seq[0], nn.Flatten)
    assert all(a is b for a, b in zip(list(seq)[1:], [tiny.layer0.module, tiny.layer1.module, tiny.layer2.module,
                                                       tiny.layer3.module, tiny.layer4.module]))
    again = HookedMLP.from_sequential(seq)
    assert again.specs == tiny.specs
    with torch.no_grad():
        assert torch.equal(again(tiny_x), tiny(tiny_x))
        assert torch.equal(seq(tiny_x.reshape(5, 1, 4, 4)), tiny_seq(tiny_x))


def test_state_dict_round_trip(small_cfg, tiny_x):
    torch.manual_seed(1)
    a = HookedMLP(small_cfg)
    torch.manual_seed(2)
    b = HookedMLP(small_cfg)
    with torch.no_grad():
        assert not torch.equal(a(tiny_x), b(tiny_x))
    sd = a.state_dict()
    assert list(sd) == [f"layer{i}.module.{p}" for i in (0, 2, 4) for p in ("weight", "bias")]
    b.load_state_dict(sd)
    with torch.no_grad():
        assert torch.equal(a(tiny_x), b(tiny_x))
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(a.parameters(), b.parameters()))


# -- from_state_dict (the PyTorch quickstart) -------------------------------------------

class NeuralNetwork(nn.Module):
    """The PyTorch quickstart's model."""

    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(28 * 28, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))

    def forward(self, x):
        return self.linear_relu_stack(self.flatten(x))


def test_from_state_dict_quickstart(tmp_path):
    torch.manual_seed(7)
    net = NeuralNetwork().eval()
    torch.save(net.state_dict(), tmp_path / "model.pth")
    sd = torch.load(tmp_path / "model.pth", weights_only=True)
    assert list(sd) == [f"linear_relu_stack.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")]
    m = HookedMLP.from_state_dict(sd, activation="relu").eval()
    assert [s.kind for s in m.specs] == ["linear", "relu", "linear", "relu", "linear"]
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        expected = net(x)
        assert torch.equal(m(x), expected)
        out, cache = m.run_with_cache(x, names_filter=["layer0.post", "layer3.post"])
        assert torch.equal(out, expected)
        assert torch.equal(cache["layer0.post"], net.linear_relu_stack[0](net.flatten(x)))
        stack = net.linear_relu_stack
        assert torch.equal(cache["layer3.post"], stack[3](stack[2](stack[1](stack[0](net.flatten(x))))))
    # the weights were copied, not shared
    assert m.layer0.module.weight.data_ptr() != net.linear_relu_stack[0].weight.data_ptr()
    assert torch.equal(m.layer0.module.weight, net.linear_relu_stack[0].weight)


def test_from_state_dict_other_activation_and_layout(tiny_x):
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3, bias=False))
    m = HookedMLP.from_state_dict(seq.state_dict(), activation="tanh")  # Linear layers at 1, 3
    assert [s.kind for s in m.specs] == ["linear", "tanh", "linear"]
    assert m.specs[2].bias is False and m.layer2.module.bias is None
    with torch.no_grad():
        assert torch.equal(m(tiny_x), seq(tiny_x))


def test_from_state_dict_float64(tiny_seq, tiny_x):
    seq = tiny_seq.double()
    m = HookedMLP.from_state_dict(seq.state_dict())
    assert m.layer0.module.weight.dtype == torch.float64
    with torch.no_grad():
        assert torch.equal(m(tiny_x.double()), seq(tiny_x.double()))


@pytest.mark.parametrize("sd,message", [
    ({}, "the state dict is empty; expected the weights of a Sequential of Linear layers"),
    ({"0.weight": torch.zeros(3, 4), "running_mean": torch.zeros(3)},
     "unexpected key 'running_mean'; expected keys like 'linear_relu_stack.0.weight' (a Sequential's state dict)"),
    ({"0.weight": torch.zeros(3, 4), "0.scale": torch.zeros(3)}, "unexpected key '0.scale'"),
    ({"a.0.weight": torch.zeros(3, 4), "b.2.weight": torch.zeros(2, 3)},
     "keys have several prefixes ['a.', 'b.']; pass the state dict of one Sequential"),
    ({"0.weight": torch.zeros(3, 4), "4.weight": torch.zeros(2, 3)},
     "Linear layers at indices [0, 4]; expected them at every other index (0, 2, 4, ...: Linear, activation, Linear, ...)"),
    ({"2.weight": torch.zeros(3, 4), "4.weight": torch.zeros(2, 3)}, "Linear layers at indices [2, 4]"),
    ({"0.bias": torch.zeros(3), "2.weight": torch.zeros(2, 3)}, "index 0 has no 2-D weight; got ['bias']"),
    ({"0.weight": torch.zeros(3), "2.weight": torch.zeros(2, 3)}, "index 0 has no 2-D weight; got ['weight']"),
    ({"0.weight": torch.zeros(3, 4), "2.weight": torch.zeros(2, 5)},
     "Linear at index 2 takes 5 inputs but the previous one gives 3"),
])
def test_from_state_dict_malformed(sd, message):
    with pytest.raises(CheckpointError, match=re.escape(message)):
        HookedMLP.from_state_dict(sd)


def test_from_state_dict_unknown_activation(tiny_seq):
    with pytest.raises(ValueError, match=re.escape("unknown activation 'swish'; expected one of relu, gelu, tanh, sigmoid, leaky_relu")):
        HookedMLP.from_state_dict(tiny_seq.state_dict(), activation="swish")


def test_from_state_dict_wrong_bias_shape_raises_checkpoint_error(tiny_seq):
    sd = dict(tiny_seq.state_dict())
    sd["2.bias"] = torch.zeros(7)
    with pytest.raises(CheckpointError, match="bias"):
        HookedMLP.from_state_dict(sd)
