"""capture on every kind of network researchers bring (tests/zoo.py), each checked against the network itself.

For every kind, in both modes: outputs bit for bit and gradients with respect to the input
equal; every cached activation equal to the same op's value in an independent plain torch.fx
interpretation of the network (and to a PyTorch forward hook for module calls); steering at every
hook point equal to the same addition made by hand in that interpretation. The networks the old
probe-based wrapping got silently wrong are exact now; what no graph can hold is refused with
the line of forward, leaving the global RNG as it was.
"""

import copy

import pytest
import torch
import torch.fx as fx
import zoo
from torch import nn

import hookedmlp
from hookedmlp import HookedGraph, ShapeError, UnsupportedNetworkError, UsageError, capture

pytestmark = pytest.mark.usefixtures("one_thread")

ALL = {**zoo.KINDS, **zoo.SILENTLY_WRONG, **zoo.EXPORTED}
needs_torchvision = pytest.mark.skipif(zoo.torchvision is None, reason="torchvision is not installed")


@needs_torchvision
def test_the_zoo_holds_all_fifteen_kinds():
    assert len(zoo.KINDS) == 15


def _flat(out):
    if isinstance(out, torch.Tensor):
        return [out]
    return list(out.values()) if isinstance(out, dict) else list(out)


def _inputs(shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, *shape, generator=g) * 3


class _Values(fx.Interpreter):
    """An independent interpretation of the network's own fx trace: each node's value, optionally edited."""

    def __init__(self, gm, edit=None):
        super().__init__(gm)
        self.values, self.edit = {}, edit or {}

    def run_node(self, n):
        value = super().run_node(n)
        if n.name in self.edit:
            value = self.edit[n.name](value)
        if isinstance(value, torch.Tensor):
            self.values[n.name] = value.detach().clone()
        return value


def _reference(net):
    tracer = fx.Tracer()
    tracer.is_leaf_module = lambda m, q: (  # noqa: E731 (the same leaves: torch.nn's, and modules with hooks)
        fx.Tracer.is_leaf_module(tracer, m, q) or bool(m._forward_hooks or m._forward_pre_hooks)
    )
    return fx.GraphModule(net, tracer.trace(net))


@pytest.fixture(scope="module", params=sorted(ALL))
def kind(request):
    build, shape = ALL[request.param]
    net = build()
    model = capture(net, shape, output=zoo.OUTPUTS.get(request.param))
    return request.param, net, model, shape


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_outputs_and_input_gradients_equal_the_network(kind, training):
    _, net, model, shape = kind
    net.train(training)
    state = copy.deepcopy(net.state_dict())
    try:
        x = _inputs(shape).requires_grad_(True)
        torch.manual_seed(3)
        want = _flat(net(x))
        (want_grad,) = torch.autograd.grad(sum(o.float().sum() for o in want), x, allow_unused=True)
        net.load_state_dict(state)  # batch norm statistics: both runs start from the same
        y = x.detach().clone().requires_grad_(True)
        torch.manual_seed(3)
        got = _flat(model(y))
        (got_grad,) = torch.autograd.grad(sum(o.float().sum() for o in got), y, allow_unused=True)
    finally:
        net.load_state_dict(state)
        net.eval()
    assert len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want))
    assert (got_grad is None and want_grad is None) or torch.equal(got_grad, want_grad)  # (None: detached)


def test_every_cached_activation_equals_the_networks_own(kind):
    name, net, model, shape = kind
    if name in zoo.EXPORTED:
        pytest.skip("no torch.fx reference: fx cannot trace it (test_what_fx_cannot_trace_torch_export_captures)")
    x = _inputs(shape, 2)
    ref = _Values(_reference(net))
    with torch.no_grad():
        ref.run(x.clone())
        _, cache = model.run_with_cache(x.clone())
    assert set(cache) == set(model.hook_names)
    for site in model.sites:
        assert torch.equal(cache[site.name], ref.values[site.node]), (name, site.name)
    calls = [s.module for s in model.sites if s.module is not None]
    modules = [s for s in model.sites if s.module is not None and calls.count(s.module) == 1]  # (called once)
    seen = {}

    def keep(name):
        def hook(m, args, out):  # returns None: a hook returning a tensor would replace the output
            seen[name] = out.clone()

        return hook

    handles = [net.get_submodule(s.module).register_forward_hook(keep(s.name)) for s in modules]
    try:
        with torch.no_grad():
            net(x.clone())
    finally:
        for h in handles:
            h.remove()
    for s in modules:
        assert torch.equal(cache[s.name], seen[s.name]), (name, s.name)


def test_steering_at_every_hook_point_equals_the_addition_made_by_hand(kind):
    name, net, model, shape = kind
    if name in zoo.EXPORTED:
        pytest.skip("no torch.fx reference: fx cannot trace it (test_what_fx_cannot_trace_torch_export_captures)")
    x = _inputs(shape, 4)
    gm = _reference(net)
    for site in model.sites:
        if site.node == "x" or site.producer == "input":
            continue
        v = torch.randn(site.shape, generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            want = _flat(_Values(gm, {site.node: lambda t, v=v: t + v}).run(x.clone()))
            with model.steer(hookedmlp.SteeringVector({site.name: v})):
                got = _flat(model(x.clone()))
        assert all(torch.equal(a, b) for a, b in zip(got, want)), (name, site.name)


@pytest.mark.parametrize("name", sorted(zoo.SILENTLY_WRONG))
def test_the_networks_the_probe_got_wrong_are_exact(name):
    build, shape = zoo.SILENTLY_WRONG[name]
    net = build()
    model = capture(net, shape)
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(0)) * 4  # negative and large values
    with torch.no_grad():
        assert torch.equal(model(x), net(x))
    if name == "logit_scale":
        assert "logit_scale" in model.state_dict() and model.logit_scale is net.logit_scale
        with torch.no_grad():
            net.logit_scale.mul_(3)  # shared, not copied: the update is the hooked model's too
            assert torch.equal(model(x), net(x))
    if name == "detached":  # .detach() is a node, and honoured: no gradient reaches fc1
        model(x).sum().backward()
        assert net.fc1.weight.grad is None and net.fc2.weight.grad is not None


@pytest.mark.parametrize("name", sorted(zoo.REFUSED))
def test_what_no_graph_can_hold_is_refused_with_its_line_and_the_rng_untouched(name):
    build, shape, reason = zoo.REFUSED[name]
    net = build()
    state = torch.random.get_rng_state()
    with pytest.raises(UnsupportedNetworkError) as info:
        capture(net, shape)
    message = str(info.value)
    assert reason in message and "zoo.py:" in message and "write it as a HookedRoot subclass" in message
    assert torch.equal(torch.random.get_rng_state(), state)


def test_a_python_value_changed_after_capture_is_refused_not_ignored():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)
            self.scale = 2.0

        def forward(self, x):
            return self.fc(x) * self.scale

    net = Scaled()
    model = capture(net, (4,))
    model(torch.rand(1, 4))
    net.scale = 3.0
    with pytest.raises(UsageError, match=r"^scale was 2\.0 when the network was captured and is now 3\.0; forward "):
        model(torch.rand(1, 4))


@needs_torchvision
def test_names_follow_torchvision_and_the_hook_table_names_the_producer():
    from torchvision.models.feature_extraction import get_graph_node_names

    net, shape = zoo.KINDS["resnet18"][0](), zoo.KINDS["resnet18"][1]
    model = capture(net, shape)
    assert model.hook_names == get_graph_node_names(net)[1]
    rows = {row[0]: row for row in model.hook_table()}
    assert rows["layer1.0.conv1"][1] == "[batch, 64, 8, 8]" and rows["layer1.0.conv1"][2].startswith("Conv2d(")
    assert rows["layer1.0.add"][2].startswith("+, resnet.py:")  # an op: its symbol and line of forward


def test_a_chain_answers_to_the_studys_names_too():
    net = zoo.KINDS["quickstart"][0]()
    model = capture(net, (1, 4, 4))
    assert model.resolve_name("layer0.post") == "linear_relu_stack.0"
    assert model.resolve_name("layer0.pre") == "flatten" and model.resolve_name("layer1.pre") == "linear_relu_stack.0"
    assert set(model.aliases_of("layer1.pre")) == {"linear_relu_stack.0", "layer0.post", "layer1.pre"}


def test_a_users_hooks_keep_firing_and_hooks_added_to_inlined_modules_are_refused():
    net = zoo.KINDS["hooked_by_user"][0]()
    model = capture(net, (1, 4, 4))
    x = torch.rand(2, 1, 4, 4)
    with torch.no_grad():
        assert torch.equal(model(x), net(x))  # the user's hook halves linear_relu_stack.1's output in both
    handle = net.linear_relu_stack.register_forward_hook(lambda m, i, o: o)  # a container, traced through
    try:
        with pytest.raises(UsageError, match="module linear_relu_stack .* registered after the network was captured"):
            model(x)
    finally:
        handle.remove()


def test_bad_inputs():
    with pytest.raises(UnsupportedNetworkError, match=r"pass input_shape=\(C, H, W\) or \(features,\)"):
        capture(nn.Sequential(nn.ReLU(), nn.Linear(4, 2)))
    with pytest.raises(ShapeError, match="input_shape must be one example's shape"):
        capture(nn.Linear(4, 2), input_shape=(4, 0))
    per_position = capture(nn.Sequential(nn.Linear(16, 8), nn.ReLU()), input_shape=(8, 16))  # [batch, seq, d]
    assert per_position.activation_shape("1") == (8, 8)
    with torch.device("meta"):
        on_meta = nn.Linear(4, 2)
    with pytest.raises(UnsupportedNetworkError, match="weights are on the meta device"):
        capture(on_meta)
    bare = capture(nn.Linear(4, 2))  # a bare Linear is a fine network
    assert bare.hook_names == ["input", "linear"]
    with pytest.raises(UnsupportedNetworkError, match="already a hooked model"):
        HookedGraph(bare)


def test_a_tuple_or_dict_output_names_its_logits_for_the_analysis():
    from hookedmlp_analysis.grid import steering_grid

    net = zoo.KINDS["dict_out"][0]()
    model = capture(net, (16,), output="logits")
    assert model.output_node == "head"
    images = torch.rand(30, 16, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(30) % 3
    grid = steering_grid(model, "relu", data=(images, labels), test=(images, labels), digits=(0, 1, 2))
    assert grid.metrics["loss"].shape == (3, 3)
    with pytest.raises(UsageError, match=r"output='features' picks a value that is not a tensor the graph|not one"):
        capture(zoo.KINDS["tuple_out"][0](), (16,), output="features")


@needs_torchvision
def test_the_hooks_command_lists_any_network(capsys):
    from hookedmlp_cli.commands import main

    assert main(["hooks", "--network", "torchvision.models:resnet18", "--input-shape", "3", "32", "32"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["x", "[batch,", "3,", "32,", "32]", "input"]
    add = next(line for line in lines if line.startswith("layer1.0.add "))
    assert "[batch, 64, 8, 8]" in add and "+, resnet.py:" in add
    assert main(["hooks", "--network", "torchvision.models:no_such_net"]) == 2
    assert "cannot find no_such_net in torchvision.models" in capsys.readouterr().err
    assert main(["hooks", "--input-shape", "4"]) == 2
    assert "--input-shape applies to --network only" in capsys.readouterr().err


def test_what_fx_cannot_trace_torch_export_captures():
    net = zoo.EXPORTED["shape_branch"][0]()
    model = capture(net, (1, 4, 4))
    assert model._captured.kind == "export"
    assert model.hook_names == ["x", "flatten", "fc1", "relu", "drop", "fc2"]
    x = torch.rand(3, 1, 4, 4)
    with torch.no_grad():
        _, cache = model.run_with_cache(x)
        assert torch.equal(cache["fc1"], net.fc1(x.flatten(1)))
        assert torch.equal(cache["relu"], torch.relu(net.fc1(x.flatten(1))))
        with model.steer(hookedmlp.SteeringVector({"relu": torch.ones(8)})):
            assert torch.equal(model(x), net.fc2(torch.relu(net.fc1(x.flatten(1))) + 1))
    images, labels = torch.rand(12, 1, 4, 4), torch.arange(12) % 3
    from hookedmlp_analysis.grid import steering_grid

    grid = steering_grid(model, "relu", data=(images, labels), test=(images, labels), digits=(0, 1, 2))
    assert "folded prefix/suffix" in grid.engine
