"""from_module on every kind of chain: the hooked model computes what the original computes, bit for bit; every cached
activation equals a PyTorch forward hook on the original's modules; steering at every hook point equals a forward
hook adding the same vector to the original. Networks that are not chains of modules are refused with the place (the
line of forward) and the way out, hookedmlp.capture, which opens them exactly."""

import copy
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hookedmlp import HookedMLP, SteeringVector, UnsupportedNetworkError, capture
from hookedmlp.models.modules import Reshape

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny convolutions and matmuls: threads only contend

ROUTE = (
    "write it as a HookedRoot subclass with HookPoints placed in forward (see docs/your-own-network.md, and "
    "hookedmlp.ResidualMLP for an example)"
)


class Scale(nn.Module):
    """An opaque leaf with a parameter of its own: hookedmlp knows nothing about it."""

    def __init__(self, n):
        super().__init__()
        self.gain = nn.Parameter(torch.linspace(-1.5, 2.0, n))

    def forward(self, x):
        return x * self.gain + 0.25


class Cube(nn.Module):
    """An opaque leaf without parameters."""

    def forward(self, x):
        return x**3 - x


class NeuralNetwork(nn.Module):
    """The PyTorch quickstart's model (hidden width 16 instead of 512)."""

    def __init__(self, width=16):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(28 * 28, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)
        )

    def forward(self, x):
        x = self.flatten(x)
        logits = self.linear_relu_stack(x)
        return logits


class LeNet(nn.Module):
    """LeNet-5 style, tiny: conv-relu-pool twice, then three Linear layers; ``view`` flattens in forward instead."""

    def __init__(self, view=False):
        super().__init__()
        self.view = view
        self.conv1 = nn.Conv2d(1, 2, 5, padding=2)
        self.act1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(2, 3, 5)
        self.act2 = nn.ReLU()
        self.pool2 = nn.AvgPool2d(2)
        if not view:
            self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(3 * 5 * 5, 12)
        self.act3 = nn.ReLU()
        self.fc2 = nn.Linear(12, 8)
        self.act4 = nn.ReLU()
        self.fc3 = nn.Linear(8, 10)

    def forward(self, x):
        x = self.pool2(self.act2(self.conv2(self.pool1(self.act1(self.conv1(x))))))
        x = x.view(len(x), -1) if self.view else self.flatten(x)
        return self.fc3(self.act4(self.fc2(self.act3(self.fc1(x)))))


class Looped(nn.Module):
    """A ModuleList run in a loop: still a chain."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(6, 5), nn.GELU(), nn.Linear(5, 3)])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def _mlp(*middle, d_in=6, width=5, d_out=3):
    return nn.Sequential(nn.Linear(d_in, width), *middle, nn.Linear(width, d_out))


def _randomise(net):
    """Non-trivial norm weights and running statistics, so a wrong or skipped norm shows."""
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.PReLU)):
                for p in m.parameters():
                    p.copy_(torch.rand(p.shape, generator=g) * 2 - 0.5)
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return net


# name -> (network, input_shape to pass or None, one example's shape)
CASES = {
    "silu": lambda: (_mlp(nn.SiLU()), None, (6,)),
    "elu": lambda: (_mlp(nn.ELU(alpha=0.7)), None, (6,)),
    "softplus": lambda: (_mlp(nn.Softplus(beta=2.0)), None, (6,)),
    "relu6": lambda: (_mlp(nn.ReLU6()), None, (6,)),
    "hardtanh": lambda: (_mlp(nn.Hardtanh(-0.3, 0.4)), None, (6,)),
    "mish": lambda: (_mlp(nn.Mish()), None, (6,)),
    "prelu": lambda: (_randomise(_mlp(nn.PReLU(5))), None, (6,)),
    "softmax": lambda: (nn.Sequential(_mlp(nn.Tanh()), nn.Softmax(dim=-1)), None, (6,)),
    "logsoftmax": lambda: (nn.Sequential(_mlp(nn.Tanh()), nn.LogSoftmax(dim=1)), None, (6,)),
    "layernorm": lambda: (_randomise(_mlp(nn.LayerNorm(5), nn.ReLU())), None, (6,)),
    "batchnorm1d": lambda: (_randomise(_mlp(nn.BatchNorm1d(5), nn.ReLU())), None, (6,)),
    "batchnorm2d": lambda: (
        _randomise(
            nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
        ),
        (1, 6, 6),
        (1, 6, 6),
    ),
    "groupnorm": lambda: (
        _randomise(
            nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
        ),
        (1, 6, 6),
        (1, 6, 6),
    ),
    "identity": lambda: (_mlp(nn.Identity(), nn.ReLU(), nn.Identity()), None, (6,)),
    "dropout": lambda: (_mlp(nn.ReLU(), nn.Dropout(0.4)), None, (6,)),
    "flatten_unflatten": lambda: (
        nn.Sequential(
            nn.Linear(6, 8), nn.Unflatten(1, (2, 4)), nn.Conv1d(2, 3, 2), nn.ReLU(), nn.Flatten(), nn.Linear(9, 3)
        ),
        None,
        (6,),
    ),
    "conv1d_maxpool1d": lambda: (
        nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(12, 3)),
        (2, 10),
        (2, 10),
    ),
    "conv2d_pools": lambda: (
        nn.Sequential(
            nn.Conv2d(1, 2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2, 3, 3, padding=1),
            nn.AvgPool2d(2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(3, 3),
        ),
        (1, 8, 8),
        (1, 8, 8),
    ),
    "opaque_leaf": lambda: (_mlp(Scale(5), nn.Tanh()), None, (6,)),
    "opaque_leaf_no_params": lambda: (_mlp(Cube()), None, (6,)),
    "lenet": lambda: (LeNet(), None, (1, 28, 28)),
    "lenet_view": lambda: (LeNet(view=True), None, (1, 28, 28)),
    "quickstart": lambda: (NeuralNetwork(), None, (1, 28, 28)),
    "nested": lambda: (
        nn.Sequential(
            nn.Sequential(nn.Linear(6, 5), nn.ReLU()),
            nn.Sequential(nn.Sequential(nn.Linear(5, 4), nn.Tanh()), nn.Linear(4, 3)),
        ),
        None,
        (6,),
    ),
    "module_list": lambda: (Looped(), (6,), (6,)),
    "inplace": lambda: (
        _mlp(
            nn.ReLU(inplace=True),
            nn.Dropout(0.2, inplace=True),
            nn.Linear(5, 5),
            nn.Hardtanh(-0.2, 0.3, inplace=True),
            nn.ELU(inplace=True),
        ),
        None,
        (6,),
    ),
}


def _case(name):
    torch.manual_seed(0)
    net, input_shape, example = CASES[name]()
    net.eval()
    x = torch.rand(4, *example, generator=torch.Generator().manual_seed(1)) * 2 - 0.5
    model = HookedMLP.from_module(net, input_shape)
    return net, model, x


def reference_site(net, model, name):
    """The original module whose input (``"pre"``) or output (``"post"``) hook point ``name`` carries."""
    layer, side = int(name.split(".")[0][len("layer") :]), name.split(".")[1]
    path = getattr(model, f"layer{layer}").path
    if not path.startswith("<"):
        return net.get_submodule(path), side
    # a reshape made in forward: it reads the previous module's output and writes the next module's input
    if side == "pre":
        return reference_site(net, model, f"layer{layer - 1}.post") if layer else (net, "pre")
    return reference_site(net, model, f"layer{layer + 1}.pre") if layer + 1 < model.n_layers else (net, "post")


def run_with_torch_hooks(net, x, hooks):
    """``net(x)`` with PyTorch hooks ``(module, side, fn)``: ``fn(tensor)`` returns the tensor to use (or None)."""
    handles = []
    for module, side, fn in hooks:
        if side == "pre":
            handles.append(
                module.register_forward_pre_hook(
                    lambda m, args, fn=fn: None if (r := fn(args[0])) is None else (r, *args[1:])
                )
            )
        else:
            handles.append(module.register_forward_hook(lambda m, args, out, fn=fn: fn(out)))
    try:
        with torch.no_grad():
            return net(x)
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("case", CASES)
def test_forward_equals_the_original(case):
    net, model, x = _case(case)
    assert not model.training
    with torch.no_grad():
        expected = net(x)
        assert torch.equal(model(x), expected)
        with model.hooks(fwd_hooks=[("*", lambda act, hook: None)]):  # the hooked path gives the same bits
            assert torch.equal(model(x), expected)
        assert torch.equal(model.to_sequential()(x), expected)


@pytest.mark.parametrize("case", CASES)
def test_every_cached_activation_equals_a_torch_forward_hook(case):
    net, model, x = _case(case)
    expected = {}
    hooks = []
    for name in model.hook_names:
        module, side = reference_site(net, model, name)
        hooks.append(
            (module, side, lambda t, name=name: expected.__setitem__(name, t.clone()))
        )  # in-place modules edit it later
    out_ref = run_with_torch_hooks(net, x, hooks)
    with torch.no_grad():
        out, cache = model.run_with_cache(x)
    assert list(cache) == model.hook_names == list(expected)
    for name in model.hook_names:
        assert cache[name].shape[1:] == model.activation_shape(name), name
        assert torch.equal(cache[name], expected[name]), name
    assert torch.equal(out, out_ref)


@pytest.mark.parametrize("case", CASES)
def test_steering_at_every_hook_point_equals_a_torch_forward_hook(case):
    net, model, x = _case(case)
    g = torch.Generator().manual_seed(2)
    for name in model.hook_names:
        v = torch.randn(model.activation_shape(name), generator=g)
        module, side = reference_site(net, model, name)
        expected = run_with_torch_hooks(net, x, [(module, side, lambda t, v=v: t + v)])
        with torch.no_grad(), model.steer(SteeringVector({name: v})):
            got = model(x)
        assert torch.equal(got, expected), name
        assert not torch.equal(got, net(x)), name  # the vector did something


def test_the_quickstart_keeps_the_studys_numbering():
    net, model, x = _case("quickstart")
    assert model.layer0.path == "linear_relu_stack.0" and model.layer0.module is net.linear_relu_stack[0]
    assert [layer.path for layer in model.layout.layers] == [f"linear_relu_stack.{i}" for i in range(5)]
    assert model.input_shape == (1, 28, 28) and model.activation_shape("layer0.pre") == (784,)
    with torch.no_grad():
        _, cache = model.run_with_cache(x, names_filter="layer0.post")
        assert torch.equal(cache["layer0.post"], net.linear_relu_stack[0](net.flatten(x)))
    for shape in [(4, 784), (4, 28, 28)]:  # the flattened and channel-less views are accepted too
        assert torch.equal(model(x.reshape(shape)), model(x))


def test_cnn_hook_points_carry_image_shapes():
    _, model, _ = _case("lenet")
    assert model.activation_shape("layer0.pre") == (1, 28, 28)
    assert model.activation_shape("layer0.post") == (2, 28, 28)
    assert model.activation_shape("layer2.post") == (2, 14, 14)
    assert model.activation_shape("layer5.post") == (3, 5, 5)
    assert model.activation_shape("layer6.post") == (75,)
    assert model.layer6.path == "flatten" and isinstance(model.layer6.module, nn.Flatten)


def test_a_view_in_forward_becomes_a_reshape_module():
    _, model, _ = _case("lenet_view")
    assert isinstance(model.layer6.module, Reshape) and model.layer6.module.shape == (75,)
    assert model.layer6.path == "<reshape in forward, before fc1>"
    assert model.layer7.path == "fc1" and model.n_layers == 12


def test_modules_are_shared_not_copied():
    net, model, x = _case("layernorm")
    assert model.layer0.module is net[0] and model.layer1.module is net[1]
    with torch.no_grad():
        net[1].weight.mul_(-1)
        assert torch.equal(model(x), net(x))
    assert {id(p) for p in model.parameters()} == {id(p) for p in net.parameters()}


def test_in_place_activations_keep_the_cache_right():
    """The network's own in-place modules run (shared, as they are); the cache copies what they edit later."""
    net, model, x = _case("inplace")
    assert all(layer.module is m for layer, m in zip(model.layout.layers, net))
    with torch.no_grad():
        _, cache = model.run_with_cache(x, names_filter=["layer0.post", "layer1.post"])
    assert (cache["layer0.post"] < 0).any()  # the Linear's output, not overwritten by the ReLU after it
    assert torch.equal(cache["layer1.post"], torch.relu(cache["layer0.post"]))


def test_training_mode_equals_the_original_too():
    """Dropout draws the same mask from one RNG state; batch norm uses batch statistics and updates the same buffers."""
    torch.manual_seed(0)
    net = _randomise(nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Dropout(0.5), nn.Linear(5, 3)))
    twin = copy.deepcopy(net)
    model = HookedMLP.from_module(twin).train()
    x = torch.rand(8, 6, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(5)
    expected = net.train()(x)
    torch.manual_seed(5)
    assert torch.equal(model(x), expected)
    assert torch.equal(twin[1].running_mean, net[1].running_mean) and int(twin[1].num_batches_tracked) == 1


def test_the_wrapped_model_starts_in_the_networks_mode():
    assert HookedMLP.from_module(_mlp(nn.ReLU()).train()).training
    net = _mlp(nn.Dropout(0.5)).eval()
    model = HookedMLP.from_module(net)
    assert not model.training and not model.layer1.module.training


# -- refusals --------------------------------------------------------------------------------


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 5)
        self.fc2 = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


class Skip(nn.Module):
    def __init__(self, at_end=False):
        super().__init__()
        self.at_end = at_end
        self.fc1 = nn.Linear(6, 6)
        self.fc2 = nn.Linear(6, 6)
        if not at_end:
            self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = self.fc1(x)
        h = self.fc2(h) + h
        return h if self.at_end else self.head(h)


class Reused(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.act = nn.Tanh()

    def forward(self, x):
        return self.fc(self.act(self.fc(x)))


class Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3)
        self.spare = nn.ReLU()

    def forward(self, x):
        return self.fc(x)


class EditsBetween(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 5)
        self.fc2 = nn.Linear(5, 3)

    def forward(self, x):
        h = self.fc1(x)
        h.mul_(2)
        return self.fc2(h)


class Doubler(nn.Module):
    def forward(self, x):
        return x.mul_(2)


class Pair(nn.Module):
    def forward(self, x):
        return x, x


class TwoOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        y = self.fc(x)
        return y, y.sum()


class Changes(nn.Module):
    """Computes something else on each call: the probe check catches it."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x * self.calls


def _refused(net, *fragments, input_shape=None):
    with pytest.raises(UnsupportedNetworkError) as info:
        HookedMLP.from_module(net, input_shape)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    return str(info.value)


CAPTURE = "open it with hookedmlp.capture(net), which hooks every module and op, or " + ROUTE


def _opens_exactly(net, shape=(6,)):
    """What from_module refuses, capture opens: the same outputs, bit for bit."""
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        assert torch.equal(capture(net.eval(), shape)(x), net(x))


def _line(cls, text):
    """``test_wrap.py:N: text`` for the line of ``cls``'s source holding ``text``."""
    import inspect

    lines, start = inspect.getsourcelines(cls)
    n = next(i for i, line in enumerate(lines) if text in line)
    return f"test_wrap.py:{start + n}: {lines[n].strip()}"


def test_a_functional_relu_is_refused_with_its_line_and_opened_by_capture():
    _refused(
        Functional(),
        "Functional.forward is not a chain of modules: it applies F.relu at "
        f"{_line(Functional, 'F.relu')}, an operation outside any module (named 'relu' in its graph); {CAPTURE}",
    )
    _opens_exactly(Functional())


def test_skip_connections_are_refused_and_opened_by_capture():
    _refused(
        Skip(),
        f"Skip.forward is not a chain of modules: it applies + at {_line(Skip, '+ h')}, an operation outside any "
        f"module (named 'add' in its graph); {CAPTURE}",
    )
    _refused(Skip(at_end=True), "Skip.forward is not a chain of modules: it applies + at", CAPTURE)
    _opens_exactly(Skip())
    _opens_exactly(Skip(at_end=True))


def test_a_reused_module_is_a_chain_when_forward_runs_it_in_turn():
    net = Reused()
    model = HookedMLP.from_module(net)
    assert [layer.path for layer in model.layout.layers] == ["fc", "act", "fc"]
    assert model.layer0.module is model.layer2.module is net.fc
    x = torch.rand(3, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(model(x), net(x))
    block = nn.Sequential(nn.Linear(6, 6), nn.ReLU())
    twice = nn.Sequential(block, block)
    model = HookedMLP.from_module(twice)
    assert model.n_layers == 4
    with torch.no_grad():
        assert torch.equal(model(x), twice(x))


def test_a_module_that_never_runs_is_not_part_of_the_chain():
    model = HookedMLP.from_module(Unused())
    assert [layer.path for layer in model.layout.layers] == ["fc"]


def test_in_place_edits_in_forward_are_refused_and_in_modules_kept_right():
    _refused(
        EditsBetween(),
        f"EditsBetween.forward is not a chain of modules: it applies Tensor.mul_ at {_line(EditsBetween, 'mul_')}",
        CAPTURE,
    )
    _opens_exactly(EditsBetween())
    net = _mlp(Doubler())  # a module editing its input in place: it runs as it is, and the cache copies first
    model = HookedMLP.from_module(net)
    x = torch.rand(3, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, cache = model.run_with_cache(x, names_filter=["layer0.post", "layer1.post"])
        assert torch.equal(cache["layer1.post"], cache["layer0.post"] * 2)
        assert torch.equal(cache["layer0.post"], net[0](x))


def test_modules_and_forwards_that_pass_other_things_than_one_tensor_are_refused():
    _refused(_mlp(Pair()), "module 2 (Linear) failed (TypeError: ")  # the network itself cannot run
    _refused(nn.Sequential(nn.Linear(6, 5), Pair()), "Sequential.forward is not a chain: its output is not", CAPTURE)
    _refused(TwoOutputs(), f"it applies Tensor.sum at {_line(TwoOutputs, 'y.sum()')}", CAPTURE)
    pair = nn.Sequential(nn.Linear(6, 6), nn.Sequential(Pair()))  # traced through: forward returns (x, x)
    _refused(pair, "Sequential.forward is not a chain: its output is not its last value alone", CAPTURE)
    model = capture(TwoOutputs(), (6,), output=0)
    assert model.output_node == "fc"


def test_a_network_that_changes_between_calls_is_refused():
    # as a module of a chain, kept whole: the check against the network catches it
    _refused(
        _mlp(Changes()),
        "the captured graph of Sequential gives other outputs than Sequential.forward on a check input in eval mode; "
        f"its forward reads something the trace cannot see; {ROUTE}",
    )
    with pytest.raises(UnsupportedNetworkError) as info:  # traced through: capture sees the assignment
        capture(_mlp(nn.Sequential(Changes())), (6,))
    assert f"it assigns self.calls (module 1.0) at {_line(Changes, 'self.calls += 1')}" in str(info.value)


def test_a_probe_the_network_cannot_take_names_the_module_that_failed():
    message = _refused(
        nn.Sequential(nn.Linear(4, 3), nn.Conv2d(1, 1, 1)),
        "running Sequential on an example batch of shape [2, 4]: module 1 (Conv2d) failed (RuntimeError: ",
        "if the network takes other inputs, pass input_shape=, the shape of one example",
    )
    assert "conv2d" in message
    with pytest.warns(UserWarning, match=re.escape("taking MNIST-sized inputs [1, 28, 28]; pass input_shape=")):
        _refused(
            nn.Sequential(nn.Conv2d(1, 2, 5), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)),
            "running Sequential on an example batch of shape [2, 1, 28, 28]: module 2 (Linear) failed",
        )


def test_input_shape_that_cannot_be_inferred_or_is_malformed():
    _refused(
        nn.Sequential(nn.ReLU(), nn.Linear(4, 2)),
        "cannot infer Sequential's input shape from its first modules "
        "(module 0 is a ReLU); pass input_shape=(C, H, W) or (features,), the shape of one example",
    )
    model = HookedMLP.from_module(nn.Sequential(nn.ReLU(), nn.Linear(4, 2)), input_shape=(4,))
    assert model.input_shape == (4,)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "input_shape must be one example's shape, a sequence of positive ints "
            "such as (1, 28, 28) or (784,), got (4, 0)"
        ),
    ):
        HookedMLP.from_module(nn.Sequential(nn.Linear(4, 2)), input_shape=(4, 0))


def test_not_a_network():
    _refused(nn.Sequential(), "Sequential has no modules to hook; a chain needs at least one")
    with pytest.raises(TypeError):  # the runtime type check, under pytest
        HookedMLP.from_module(42)
    with pytest.raises(TypeError):
        capture(42)


def test_a_list_of_children_without_activations_warns():
    """``list(net.children())`` loses what forward does with F.relu; the list alone cannot show it, so say so."""
    net = Functional()
    with pytest.warns(
        UserWarning,
        match=re.escape(
            "modules 0 and 1 are two Linear layers with no activation between them; if this list came from "
            "list(net.children()) of a network whose forward applies F.relu (or similar), wrap the network itself with "
            "HookedMLP.from_module(net), which checks it"
        ),
    ):
        model = HookedMLP.from_sequential(list(net.children()))
    assert model.n_layers == 2  # accepted (a low-rank factorisation is a real network), but never silently


def test_hooks_on_the_networks_own_modules_keep_firing():
    relu = nn.ReLU(inplace=True)
    model = HookedMLP.from_module(_mlp(relu))
    calls = []
    with model.layer1.module.register_forward_hook(lambda m, args, out: calls.append(1)):
        model(torch.zeros(2, 6))
    assert calls == [1] and model.layer1.module is relu
