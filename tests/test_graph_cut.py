"""hookedmlp.models.cut: the graph cut and folding, on networks with skip connections, against full passes.

The prefix (the value at a hook point and the externals) then the suffix equals the whole pass;
a vector folded through affine modules equals the vector added where it was; the steering grid
through the cut equals the plain loop of full hooked passes to 1e-4 on the residual MLP and
torchvision's resnet18.
"""

import pytest
import torch
import zoo

from hookedmlp import ResidualConfig, ResidualMLP, SteeringVector, capture
from hookedmlp.models.cut import Cut, fold, graph_view
from hookedmlp_analysis.additions import all_pairs, pair_additions
from hookedmlp_analysis.engine import evaluate_additions, evaluate_plain
from hookedmlp_analysis.metrics import METRICS

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def resnet():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    return capture(torchvision.models.resnet18(num_classes=10).eval(), (3, 32, 32))


@pytest.fixture(scope="module")
def residual():
    torch.manual_seed(0)
    return ResidualMLP(ResidualConfig(d_in=16, d_model=8, d_mlp=12, n_blocks=2, d_out=3)).eval()


def _x(shape, n=3, seed=0):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("hook", ["layer1.0.bn2", "layer2.0.relu", "layer2.1.add", "layer4.1.relu_1", "fc"])
def test_prefix_then_suffix_is_the_whole_pass(resnet, hook):
    view = graph_view(resnet)
    cut = Cut(view, hook, hooked=False)
    x = _x((3, 32, 32))
    with torch.no_grad():
        value, *externals = cut.prefix(x)
        assert torch.equal(cut.suffix(value, *externals), resnet(x))
    inside_a_block = hook in ("layer1.0.bn2", "layer2.0.relu")
    assert bool(cut.externals) == inside_a_block  # the block's input, for its skip connection


def test_the_residual_mlps_cut_takes_the_residual_stream_from_the_prefix(residual):
    view = graph_view(residual)
    cut = Cut(view, "blocks.0.hook_mlp_out", hooked=False)
    assert [e.name for e in cut.externals] == ["blocks_0_hook_resid_pre"] and cut.stackable
    x = _x((16,))
    with torch.no_grad():
        value, *externals = cut.prefix(x)
        assert torch.equal(cut.suffix(value + 1, *externals), _steered(residual, "blocks.0.hook_mlp_out", 1, x))


def _steered(model, hook, v, x):
    shape = model.activation_shape(hook)
    with torch.no_grad(), model.steer(SteeringVector({hook: torch.full(shape, float(v))})):
        return model(x)


def test_folding_through_affine_modules_equals_the_vector_where_it_was_added(resnet):
    view = graph_view(resnet)
    v = torch.randn(2, *resnet.activation_shape("layer3.0.relu"), generator=torch.Generator().manual_seed(1))
    node, folded = fold(view, view.node_of["layer3.0.relu"], v)
    assert node == "layer3_0_bn2"  # through conv2 (a convolution) and bn2 (eval-mode batch norm), to the add
    x = _x((3, 32, 32))
    for k in range(2):
        with torch.no_grad():
            with resnet.steer(SteeringVector({"layer3.0.relu": v[k]})):
                want = resnet(x)
            with resnet.steer(SteeringVector({"layer3.0.bn2": folded[k]})):
                got = resnet(x)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_a_training_mode_batch_norm_downstream_keeps_vectors_apart(resnet):
    view = graph_view(resnet)
    resnet.layer4[0].bn1.train()
    try:
        cut = Cut(view, "layer3.1.add", hooked=False)
        assert cut.why_not_stackable == "module layer4.0.bn1 (BatchNorm2d) is in training mode"
    finally:
        resnet.layer4[0].bn1.eval()
    assert Cut(view, "layer3.1.add", hooked=False).stackable


def _assert_same(fast, plain):
    for m in METRICS:
        torch.testing.assert_close(torch.tensor(fast.values[m]), torch.tensor(plain.values[m]), rtol=0, atol=1e-4)


def test_grid_cells_equal_the_plain_loop_on_resnet18(resnet):
    images = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    labels = torch.arange(12) % 4
    hooks = ["layer2.0.relu", "layer3.1.add", "avgpool"]
    adds = pair_additions(resnet, hooks, all_pairs(range(4)), data=(images, labels))
    fast = evaluate_additions(resnet, images, labels, adds, chunk_elements=4096)
    assert "folded prefix/suffix, stacked" in fast.engine
    _assert_same(fast, evaluate_plain(resnet, images, labels, adds))


def test_grid_cells_equal_the_plain_loop_on_the_residual_mlp(residual):
    images = torch.rand(30, 16, generator=torch.Generator().manual_seed(3))
    labels = torch.arange(30) % 3
    adds = pair_additions(residual, residual.hook_names, all_pairs(range(3)), data=(images, labels))
    fast = evaluate_additions(residual, images, labels, adds)
    assert fast.passes < len(adds) and "folded prefix/suffix" in fast.engine
    _assert_same(fast, evaluate_plain(residual, images, labels, adds))


def test_a_network_that_cannot_be_captured_runs_full_passes():
    net = zoo.REFUSED["data_dependent"][0]()

    from hookedmlp import HookedRoot, HookPoint

    class Hand(HookedRoot):
        def __init__(self):
            super().__init__()
            self.net, self.hook_h = net, HookPoint()
            self.setup()

        def forward(self, x):
            h = self.hook_h(self.net.fc1(x))
            if h.sum() > 0:
                h = torch.relu(h)
            return self.net.fc2(h)

    model = Hand().eval()
    assert graph_view(model) is None
    images, labels = torch.rand(6, 16), torch.arange(6) % 3
    adds = pair_additions(model, ["hook_h"], all_pairs(range(3)), data=(images, labels))
    fast = evaluate_additions(model, images, labels, adds)
    assert fast.engine.startswith("full passes, one per distinct addition (Hand's forward could not be captured)")
    _assert_same(fast, evaluate_plain(model, images, labels, adds))
