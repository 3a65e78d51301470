"""HookedMLP: forward equals plain torch bit for bit, start_at/stop_at (and TransformerLens' start_at_layer /
stop_at_layer), input checks, from_sequential / to_sequential, the repr and hook table, and the jaxtyping runtime
checks. (Every kind of network from_module opens: test_wrap.py; from_state_dict: test_state_dict.py.)"""

import re

import jaxtyping
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hookedmlp import (
    ConfigError,
    HookedMLP,
    HookNameError,
    InputDtypeError,
    LeNetConfig,
    MLPConfig,
    ShapeError,
    UsageError,
)
from hookedmlp.models.modules import describe

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
        (784, 512),
        (512, 512),
        (512, 10),
    ]
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
    assert widths == {
        "layer0.pre": 16,
        "layer0.post": 8,
        "layer1.pre": 8,
        "layer1.post": 8,
        "layer2.pre": 8,
        "layer2.post": 8,
        "layer3.pre": 8,
        "layer3.post": 8,
        "layer4.pre": 8,
        "layer4.post": 3,
    }


def test_model_repr(tiny):
    lines = repr(tiny).splitlines()
    assert lines[0] == "HookedMLP(input [1, 4, 4] -> output [3]; 5 layers, 10 hook points, 0 hooks attached"
    assert lines[1] == "  layer0.pre    [batch, 16]          input of Linear(in_features=16, out_features=8, bias=True)"
    assert lines[4] == "  layer1.post   [batch, 8]           output of ReLU()"
    assert lines[-1] == ")" and len(lines) == 12
    with (
        tiny.add_hook("layer2.post", lambda a, hook: None),
        tiny.add_hook("layer2.post", lambda a, hook: None, dir="bwd"),
    ):
        assert "5 layers, 10 hook points, 2 hooks attached" in repr(tiny)
    assert "0 hooks attached" in repr(tiny)


def test_hook_table_of_the_quickstart_shows_original_paths_and_shapes():
    torch.manual_seed(0)
    model = HookedMLP.from_module(NeuralNetwork())
    table = model.hook_table()
    assert [row[0] for row in table] == TINY_NAMES
    assert table[0] == (
        "layer0.pre",
        "[batch, 784]",
        "input of Linear(in_features=784, out_features=512, bias=True)  (from linear_relu_stack.0)",
    )
    assert table[1] == (
        "layer0.post",
        "[batch, 512]",
        "output of Linear(in_features=784, out_features=512, bias=True)  (from linear_relu_stack.0)",
    )
    assert table[3] == ("layer1.post", "[batch, 512]", "output of ReLU()  (from linear_relu_stack.1)")
    assert table[-1] == (
        "layer4.post",
        "[batch, 10]",
        "output of Linear(in_features=512, out_features=10, bias=True)  (from linear_relu_stack.4)",
    )
    assert (
        "  layer0.post   [batch, 512]         output of Linear(in_features=784, out_features=512, bias=True)  (from "
        "linear_relu_stack.0)" in repr(model).splitlines()
    )


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(2 * 14 * 14, 10)

    def forward(self, x):
        return self.head(self.features(x).view(len(x), -1))


def test_hook_table_of_a_cnn():
    torch.manual_seed(0)
    table = HookedMLP.from_module(SmallCNN()).hook_table()
    assert table == [
        (
            "layer0.pre",
            "[batch, 1, 28, 28]",
            "input of Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))  (from features.0)",
        ),
        (
            "layer0.post",
            "[batch, 2, 28, 28]",
            "output of Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))  (from features.0)",
        ),
        ("layer1.pre", "[batch, 2, 28, 28]", "input of ReLU()  (from features.1); the same tensor as layer0.post"),
        ("layer1.post", "[batch, 2, 28, 28]", "output of ReLU()  (from features.1)"),
        (
            "layer2.pre",
            "[batch, 2, 28, 28]",
            "input of MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)  (from features.2); "
            "the same tensor as layer1.post",
        ),
        (
            "layer2.post",
            "[batch, 2, 14, 14]",
            "output of MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)  (from features.2)",
        ),
        (
            "layer3.pre",
            "[batch, 2, 14, 14]",
            "input of Reshape(shape=[392])  (from <reshape in forward, before head>); the same tensor as layer2.post",
        ),
        ("layer3.post", "[batch, 392]", "output of Reshape(shape=[392])  (from <reshape in forward, before head>)"),
        (
            "layer4.pre",
            "[batch, 392]",
            "input of Linear(in_features=392, out_features=10, bias=True)  (from head); the same tensor as layer3.post",
        ),
        ("layer4.post", "[batch, 10]", "output of Linear(in_features=392, out_features=10, bias=True)  (from head)"),
    ]


def test_lenet_config_builds_a_cnn():
    torch.manual_seed(0)
    model = HookedMLP(LeNetConfig(channels=(2, 3), d_hidden=(8, 6))).eval()
    assert model.input_shape == (1, 28, 28) and model.n_layers == 12
    assert [model.activation_shape(f"layer{i}.post") for i in (0, 2, 5, 6, 11)] == [
        (2, 28, 28),
        (2, 14, 14),
        (3, 5, 5),
        (75,),
        (10,),
    ]
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), model.to_sequential()(x))
        assert torch.equal(model(x.reshape(3, 784)), model(x))


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
        h = h * 1.25 + 0.01 * (2 * k + 1)  # the hook at layer{k}.pre
        h = m(h) * 1.25 + 0.01 * (2 * k + 2)  # the module, then the hook at layer{k}.post
    assert torch.equal(out, h)


def test_stop_at_returns_activation_after_its_hooks(tiny, tiny_seq, tiny_x):
    with torch.no_grad():
        expected = tiny_seq[2](tiny_seq[1](tiny_seq[0](tiny_x))) * 3
        with tiny.hooks(fwd_hooks=[("layer2.post", lambda a, hook: a * 3)]):
            assert torch.equal(tiny(tiny_x, stop_at="layer2.post"), expected)


def test_start_at_skips_hooks_at_that_point(tiny, tiny_seq, tiny_x):
    calls = []
    with torch.no_grad():
        mid = tiny(tiny_x, stop_at="layer1.post")
        with tiny.hooks(
            fwd_hooks=[
                ("layer1.post", lambda a, hook: calls.append(hook.name) or a * 0),
                ("layer2.pre", lambda a, hook: calls.append(hook.name)),
            ]
        ):
            out = tiny(mid, start_at="layer1.post")
        assert calls == ["layer2.pre"]
        assert torch.equal(out, tiny_seq[4](tiny_seq[3](tiny_seq[2](mid))))


def test_start_and_stop_at_the_same_point_is_identity(tiny, tiny_x):
    a = tiny(tiny_x, stop_at="layer2.pre")
    assert torch.equal(tiny(a, start_at="layer2.pre", stop_at="layer2.pre"), a)


def test_start_at_wrong_width_raises(tiny):
    with pytest.raises(
        ShapeError,
        match=re.escape(
            "start_at='layer0.post' expects the activation at 'layer0.post', of shape [batch, 8], got [5, 7]"
        ),
    ):
        tiny(torch.zeros(5, 7), start_at="layer0.post")
    with pytest.raises(
        ShapeError,
        match=re.escape(
            "start_at='layer0.pre' expects the activation at 'layer0.pre', of shape [batch, 16], got [5, 1, 4, 4]"
        ),
    ):
        tiny(torch.zeros(5, 1, 4, 4), start_at="layer0.pre")
    with pytest.raises(
        ShapeError,
        match=re.escape("start_at_layer=2 expects the activation at 'layer1.post', of shape [batch, 8], got [5, 3]"),
    ):
        tiny(torch.zeros(5, 3), start_at_layer=2)


def test_start_at_wrong_dtype_raises(tiny):
    with pytest.raises(
        InputDtypeError,
        match=re.escape(
            "expected a floating-point activation for start_at='layer2.pre' (pixels in [0, 1]), got dtype torch.int64"
        ),
    ):
        tiny(torch.zeros(5, 8, dtype=torch.long), start_at="layer2.pre")


def test_stop_before_start_raises(tiny):
    with pytest.raises(
        UsageError,
        match=re.escape(
            "stop_at='layer0.post' comes before start_at='layer1.post', so the pass "
            "would stop before it starts; hook order is layer0.pre, layer0.post, layer1.pre"
        ),
    ):
        tiny(torch.zeros(5, 8), start_at="layer1.post", stop_at="layer0.post")


def test_start_stop_unknown_name_or_pattern(tiny, tiny_x):
    with pytest.raises(HookNameError, match=re.escape("unknown hook 'layer2.pots'; did you mean 'layer2.post'?")):
        tiny(tiny_x, stop_at="layer2.pots")
    with pytest.raises(HookNameError, match=re.escape("unknown hook 'layer9.pre'")):
        tiny(torch.zeros(5, 8), start_at="layer9.pre")
    with pytest.raises(
        HookNameError,
        match=re.escape(
            "expected one hook name, got the pattern '*.post' matching 5 hook points; pick one, e.g. 'layer0.post'"
        ),
    ):
        tiny(torch.zeros(5, 8), start_at="*.post")
    with pytest.raises(
        HookNameError, match=re.escape("expected one hook name, got the pattern 'layer1.*' matching 2 hook points")
    ):
        tiny(tiny_x, stop_at="layer1.*")


# -- input validation --------------------------------------------------------------------

EXPECTED_SHAPES = "expected input of shape [batch, 16] or [batch, 1, 4, 4] or [batch, 4, 4], got "


@pytest.mark.parametrize(
    "shape,hint",
    [
        ((16,), "; add a batch dimension with x.unsqueeze(0)"),
        ((4, 4), "; add a batch dimension with x.unsqueeze(0)"),
        ((5, 15), ""),
        ((5, 17), ""),
        ((5, 2, 4, 4), ""),
        ((5, 1, 1, 4, 4), ""),
        ((5, 4, 4, 1), ""),
    ],
)
def test_bad_input_shape(tiny, shape, hint):
    with pytest.raises(ShapeError, match=re.escape(EXPECTED_SHAPES + str(list(shape)) + hint) + "$"):
        tiny(torch.zeros(shape))


def test_bad_input_shape_default_model(full):
    with pytest.raises(
        ShapeError,
        match=re.escape(
            "expected input of shape [batch, 784] or [batch, 1, 28, 28] or [batch, 28, 28], got [784]; "
            "add a batch dimension with x.unsqueeze(0)"
        ),
    ):
        full(torch.zeros(784))
    with pytest.raises(ShapeError, match=re.escape("got [2, 1, 1, 28, 28]")):
        full(torch.zeros(2, 1, 1, 28, 28))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.int32, torch.bool])
def test_integer_input_raises(tiny, dtype):
    with pytest.raises(
        InputDtypeError,
        match=re.escape(
            f"expected a floating-point input (pixels in [0, 1]), got dtype {dtype}; convert with x.float() / 255 "
            "for uint8 images"
        ),
    ):
        tiny(torch.zeros(5, 16, dtype=dtype))


def test_float64_input_raises(tiny):
    with pytest.raises(
        InputDtypeError,
        match=re.escape(
            "input dtype torch.float64 does not match the model's torch.float32; use x.to(torch.float32) or "
            "model.to(torch.float64)"
        ),
    ):
        tiny(torch.zeros(5, 16, dtype=torch.float64))


def test_float64_model_accepts_float64(tiny_seq, tiny_x):
    seq64 = tiny_seq.double()
    m = HookedMLP.from_sequential(seq64)
    assert m.layer0.module.weight.dtype == torch.float64
    with torch.no_grad():
        assert torch.equal(m(tiny_x.double()), seq64(tiny_x.double()))
    with pytest.raises(
        InputDtypeError, match=re.escape("input dtype torch.float32 does not match the model's torch.float64")
    ):
        m(tiny_x)


def test_wrong_device_raises(tiny):
    with pytest.raises(InputDtypeError, match=re.escape("input is on meta but the model is on cpu; use x.to('cpu')")):
        tiny(torch.zeros(5, 16, device="meta"))


@pytest.mark.parametrize("shape", [(0, 16), (0, 1, 4, 4), (0, 4, 4)])
def test_empty_batch_raises(tiny, shape):
    with pytest.raises(
        ShapeError, match=re.escape(f"empty batch: input has shape {list(shape)}; expected at least one example")
    ):
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
    with pytest.raises(
        ShapeError, match=re.escape("expected input of shape [batch, 12] or [batch, 2, 6], got [3, 6, 2]")
    ):
        m(torch.rand(3, 6, 2))
    with pytest.raises(ShapeError, match=re.escape("input_shape [3, 5] has 15 elements, but the first layer takes 12")):
        HookedMLP(MLPConfig(d_in=12, d_hidden=(5,), d_out=2), input_shape=(3, 5))
    assert HookedMLP(MLPConfig(d_in=12, d_hidden=(5,), d_out=2)).input_shape == (12,)


# -- jaxtyping runtime checks ---------------------------------------------------------------


def test_jaxtyping_runtime_checks_are_active(tiny):
    """HookedMLP.forward declares ``x: Shaped[Tensor, "batch *example"]`` (at least one dim).

    A 0-d tensor violates that shape. With the jaxtyping import hook on (pytest's
    ``--jaxtyping-packages``) the call fails in the annotation check, before the body
    runs; the body alone would raise ShapeError from prepare_input (shown below).
    """
    with pytest.raises(jaxtyping.TypeCheckError, match=re.escape("Shaped[Tensor, 'batch *example']")):
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
    assert [type(layer.module) for layer in m.layout.layers] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert [layer.path for layer in m.layout.layers] == ["1", "2", "3", "4"]  # where each sat in seq
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
    seq = nn.Sequential(
        nn.Flatten(), nn.Linear(16, 8), nn.ReLU(inplace=True), nn.Linear(8, 8), nn.ReLU(inplace=True), nn.Linear(8, 3)
    )
    m = HookedMLP.from_sequential(seq).eval()
    with torch.no_grad():
        assert torch.equal(m(tiny_x), seq(tiny_x))
        out, cache = m.run_with_cache(tiny_x)
        pre_relu = seq[1](tiny_x)
        assert (pre_relu < 0).any()  # the check below would be vacuous otherwise
        assert torch.equal(cache["layer0.post"], pre_relu)
        assert torch.equal(cache["layer1.post"], torch.relu(pre_relu))
        assert torch.equal(out, seq(tiny_x))
    assert m.layer1.module is seq[2] and m.layer3.module is seq[4]  # the network's own in-place modules, shared


def test_from_sequential_other_activations(tiny_x):
    torch.manual_seed(0)
    seq = nn.Sequential(
        nn.Linear(16, 8),
        nn.GELU(approximate="tanh"),
        nn.Linear(8, 8),
        nn.LeakyReLU(0.2),
        nn.Linear(8, 8),
        nn.GELU(),
        nn.Linear(8, 8),
        nn.Sigmoid(),
        nn.Linear(8, 8),
        nn.Tanh(),
        nn.Linear(8, 3),
    )
    m = HookedMLP.from_sequential(seq)
    assert m.layer1.module.approximate == "tanh" and m.layer5.module.approximate == "none"
    assert m.layer3.module.negative_slope == 0.2
    with torch.no_grad():
        assert torch.equal(m(tiny_x), seq(tiny_x))
        _, cache = m.run_with_cache(tiny_x)
        ref = reference_acts(list(seq), tiny_x)
        for name in m.hook_names:
            assert torch.equal(cache[name], ref[name]), name


def test_from_sequential_opens_what_the_first_version_refused(tiny_x):
    """Identity, a trailing Softmax, norms and nested Sequentials were refused before the redesign."""
    torch.manual_seed(0)
    seq = nn.Sequential(
        nn.Sequential(nn.Linear(16, 8), nn.LayerNorm(8), nn.SiLU()), nn.Identity(), nn.Linear(8, 3), nn.Softmax(dim=-1)
    )
    m = HookedMLP.from_sequential(seq).eval()
    assert [layer.path for layer in m.layout.layers] == ["0.0", "0.1", "0.2", "1", "2", "3"]
    with torch.no_grad():
        assert torch.equal(m(tiny_x), seq(tiny_x))


def test_bad_construction_arguments():
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "HookedMLP(modules=...) needs input_shape=, the shape of one example; or wrap the network with "
            "HookedMLP.from_module, which infers it"
        ),
    ):
        HookedMLP(modules=[nn.Linear(4, 2)])
    with pytest.raises(
        ShapeError, match=re.escape("first_shape [5] is neither input_shape [2, 2] nor its flattening [4]")
    ):
        HookedMLP(modules=[nn.Linear(5, 2)], input_shape=(2, 2), first_shape=(5,))
    with pytest.raises(ConfigError, match=re.escape("got 1 modules but 2 paths; pass one path per module")):
        HookedMLP(modules=[nn.Linear(4, 2)], input_shape=(4,), paths=["a", "b"])
    with pytest.raises(ConfigError, match=re.escape("pass a config or modules, not both")):
        HookedMLP(MLPConfig(), modules=[nn.Linear(4, 2)])


def test_to_sequential_round_trip(tiny, tiny_seq, tiny_x):
    seq = tiny.to_sequential()
    assert isinstance(seq[0], nn.Flatten)
    assert all(
        a is b
        for a, b in zip(
            list(seq)[1:],
            [tiny.layer0.module, tiny.layer1.module, tiny.layer2.module, tiny.layer3.module, tiny.layer4.module],
        )
    )
    again = HookedMLP.from_sequential(seq)
    assert [describe(layer.module, "") for layer in again.layout.layers] == [
        describe(layer.module, "") for layer in tiny.layout.layers
    ]
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


class NeuralNetwork(nn.Module):
    """The PyTorch quickstart's model."""

    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(28 * 28, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
        )

    def forward(self, x):
        return self.linear_relu_stack(self.flatten(x))


# -- TransformerLens' start_at_layer / stop_at_layer ---------------------------------------


@pytest.mark.parametrize("i", range(5))
def test_stop_at_layer_and_start_at_layer(tiny, tiny_seq, tiny_x, i):
    with torch.no_grad():
        h = tiny(tiny_x, stop_at_layer=i)  # module i's input
        assert torch.equal(h, reference_acts(list(tiny_seq), tiny_x)[f"layer{i}.pre"])
        assert torch.equal(tiny(h, start_at_layer=i), tiny_seq(tiny_x))


def test_layer_forms_run_the_hooks_transformerlens_runs(tiny, tiny_x):
    counts: dict[str, int] = {}
    hooks = [(n, lambda act, hook: counts.__setitem__(hook.name, counts.get(hook.name, 0) + 1)) for n in TINY_NAMES]
    with torch.no_grad(), tiny.hooks(fwd_hooks=hooks):
        h = tiny(tiny_x, stop_at_layer=2)  # layer2.pre's hooks do not run
        assert counts == {n: 1 for n in TINY_NAMES[:4]}
        counts.clear()
        tiny(h, start_at_layer=2)  # they run here
        assert counts == {n: 1 for n in TINY_NAMES[4:]}
        assert torch.equal(tiny(tiny_x, stop_at_layer=-1), tiny(tiny_x, stop_at="layer3.post"))
