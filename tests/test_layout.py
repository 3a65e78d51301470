"""Layout: hook positions, shapes and spans in one place, derived from the live modules (a swapped module or a mode
change is reflected by the layout, forward, caches, to_sequential and the hook table)."""

import re

import pytest
import torch
from torch import nn

from hookedmlp import HookedLayer, HookedMLP, HookNameError, Layout, ShapeError, UsageError
from hookedmlp.models.layout import Site, Span


@pytest.fixture
def chain():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)).eval()
    return HookedMLP.from_module(net)


@pytest.fixture
def x():
    return torch.rand(4, 6, generator=torch.Generator().manual_seed(1))


def test_sites_positions_and_shapes(chain):
    layout = chain.layout
    assert layout.names == chain.hook_names == [f"layer{i}.{s}" for i in range(5) for s in ("pre", "post")]
    assert layout.sites[3] == Site("layer1.post", 3, 1, "post", (5,))
    assert [s.shape for s in layout.sites] == [(6,), (5,), (5,), (5,), (5,), (4,), (4,), (4,), (4,), (3,)]
    assert layout.output_shape == (3,)
    assert [(layer.index, layer.path, layer.affine) for layer in layout.layers] == [
        (0, "0", True),
        (1, "1", False),
        (2, "2", True),
        (3, "3", False),
        (4, "4", True),
    ]
    assert layout is chain.layout  # rebuilt only when something changes


def test_navigation(chain):
    layout = chain.layout
    assert layout.next_layer("layer1.pre") == 1 and layout.next_layer("layer1.post") == 2
    assert layout.next_layer("layer4.post") == 5
    assert layout.carrier("layer2.pre") == "layer1.post"  # the same tensor, recorded first there
    assert layout.carrier("layer0.pre") == "layer0.pre" and layout.carrier("layer2.post") == "layer2.post"
    assert layout.post(3) == "layer3.post"
    with pytest.raises(HookNameError, match=re.escape("unknown hook 'layer1.pots'; did you mean 'layer1.post'?")):
        layout.site("layer1.pots")


@pytest.mark.parametrize(
    "kwargs,span",
    [
        ({}, Span(0, 10, False)),
        ({"stop_at": "layer1.post"}, Span(0, 4, False)),
        ({"start_at": "layer1.post"}, Span(4, 10, True)),
        ({"start_at": "layer2.pre", "stop_at": "layer2.pre"}, Span(5, 5, True)),
        ({"start_at_layer": 0}, Span(0, 10, False)),
        ({"start_at_layer": 2}, Span(4, 10, True)),
        ({"start_at_layer": -1}, Span(8, 10, True)),
        ({"stop_at_layer": 2}, Span(0, 4, False)),
        ({"stop_at_layer": -1}, Span(0, 8, False)),
        ({"stop_at_layer": 5}, Span(0, 10, False)),
    ],
)
def test_spans(chain, kwargs, span):
    got = chain.layout.span(**kwargs)
    assert got == span
    assert list(got.layers) == list(range(span.first // 2, span.last // 2))


def test_span_refusals(chain):
    layout = chain.layout
    with pytest.raises(
        UsageError,
        match=re.escape(
            "stop_at='layer0.post' comes before start_at='layer1.post', so the pass would stop before it starts; hook "
            "order is layer0.pre, layer0.post, layer1.pre"
        ),
    ):
        layout.span(start_at="layer1.post", stop_at="layer0.post")
    with pytest.raises(UsageError, match=re.escape("stop_at_layer=1 comes before start_at_layer=3")):
        layout.span(start_at_layer=3, stop_at_layer=1)
    with pytest.raises(
        UsageError, match=re.escape("pass start_at or start_at_layer (and stop_at or stop_at_layer), not both")
    ):
        layout.span(start_at="layer1.post", start_at_layer=1)
    with pytest.raises(
        UsageError, match=re.escape("start_at_layer must be an int from -5 to 4 (this chain has 5 layers), got 5")
    ):
        layout.span(start_at_layer=5)
    with pytest.raises(
        UsageError, match=re.escape("stop_at_layer must be an int from -5 to 5 (this chain has 5 layers), got True")
    ):
        layout.span(stop_at_layer=True)


# -- the layout follows the live modules --------------------------------------------------------


def test_swapping_a_module_is_reflected_everywhere(chain, x):
    before = chain.layout
    new = nn.Linear(4, 7)
    chain.layer4.module = new
    assert chain.layout is not before
    assert chain.layout.layers[4].module is new and chain.layout.output_shape == (7,) and chain.d_out == 7
    assert chain.activation_shape("layer4.post") == (7,)
    seq = chain.to_sequential()
    assert seq[-1] is new
    with torch.no_grad():
        expected = new(seq[:-1](x))
        assert torch.equal(chain(x), expected)
        out, cache = chain.run_with_cache(x)
    assert torch.equal(out, expected) and cache["layer4.post"].shape == (4, 7)
    assert (
        "layer4.post",
        "[batch, 7]",
        "output of Linear(in_features=4, out_features=7, bias=True)",
    ) in chain.hook_table()
    assert (
        "\n  layer4.post   [batch, 7]           output of Linear(in_features=4, out_features=7, bias=True)\n)"
        in repr(chain)
    )


def test_swapping_in_a_module_of_another_kind(chain, x):
    block = nn.Sequential(nn.Linear(5, 9), nn.Tanh(), nn.Linear(9, 5))  # opaque as one module
    chain.layer1.module = block
    assert not chain.layout.layers[1].affine and chain.layout.sites[3].shape == (5,)
    with torch.no_grad():
        assert torch.equal(
            chain(x), chain.layer4.module(torch.relu(chain.layer2.module(block(chain.layer0.module(x)))))
        )
    assert chain.hook_table()[2] == (
        "layer1.pre",
        "[batch, 5]",
        "input of Sequential(...); the same tensor as layer0.post",
    )


def test_swapping_in_a_module_that_does_not_fit(chain, x):
    chain.layer2.module = nn.Linear(4, 4)
    message = (
        "layer2 (Linear) reads 4 features, but its input has shape [5] per example; replace it with a module that "
        "takes [5], or fix the module before it"
    )
    with pytest.raises(ShapeError, match=re.escape(message)):
        chain.layout
    assert repr(chain) == f"HookedMLP(5 layers, not a working chain: {message})"
    chain.layer2.module = nn.Linear(5, 4)
    assert chain(x).shape == (4, 3)


def test_replacing_a_whole_layer(chain, x):
    chain.layer1 = HookedLayer(nn.Tanh(), "tanh")
    assert chain.hook_dict["layer1.post"] is chain.layer1.post and chain.layout.layers[1].path == "tanh"
    with torch.no_grad(), chain.hooks(fwd_hooks=[("layer1.post", lambda act, hook: act * 0)]):
        assert torch.equal(chain(x), chain.layer4.module(torch.relu(chain.layer2.module(torch.zeros(4, 5)))))
    with pytest.raises(
        UsageError,
        match=re.escape(
            "model.layer3 is the HookedLayer holding module layer3 between its two hook points; to swap the module, "
            "set model.layer3.module = GELU(...) instead"
        ),
    ):
        chain.layer3 = nn.GELU()


def test_mode_changes_change_which_modules_are_affine():
    model = HookedMLP.from_module(nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.Dropout(0.3), nn.Linear(5, 3)))
    assert model.training
    assert [layer.affine for layer in model.layout.layers] == [True, False, False, True]
    model.eval()
    assert [layer.affine for layer in model.layout.layers] == [True, True, True, True]
    model.layer2.module.train()  # one module alone
    assert [layer.affine for layer in model.layout.layers] == [True, True, False, True]
    bn = nn.BatchNorm1d(5, track_running_stats=False).eval()  # batch statistics even in eval mode
    model.layer1.module = bn
    assert not model.layout.layers[1].affine


def test_layout_of_a_broken_chain_names_the_layer_and_its_path():
    with pytest.raises(
        ShapeError,
        match=re.escape("layer1 (Linear, from fc) reads 4 features, but its input has shape [5] per example"),
    ):
        Layout([nn.Linear(6, 5), nn.Linear(4, 3)], ["0", "fc"], (6,))
    with pytest.raises(
        ShapeError, match=re.escape("layer1 (Conv2d) cannot take an input of shape [5] per example (RuntimeError: ")
    ):
        Layout([nn.Linear(6, 5), nn.Conv2d(1, 1, 3)], ["0", "1"], (6,))


def test_layout_of_a_huge_parameterless_chain_allocates_nothing():
    """Shapes of torch.nn modules without real weights come from the meta device."""
    layout = Layout([nn.Unflatten(1, (10**5, 10**5)), nn.AvgPool1d(2), nn.Flatten()], ["0", "1", "2"], (10**10,))
    assert layout.output_shape == (10**5 * 10**5 // 2,)


def test_a_swapped_in_norm_must_fit_the_activation(chain):
    chain.layer1.module = nn.LayerNorm(7)
    with pytest.raises(
        ShapeError, match=re.escape("layer1 (LayerNorm) cannot take an input of shape [5] per example (")
    ):
        chain.layout
    chain.layer1.module = nn.PReLU(4)
    with pytest.raises(ShapeError, match=re.escape("layer1 (PReLU) cannot take an input of shape [5] per example (")):
        chain.layout


class Block(nn.Module):
    """An opaque module holding a batch norm."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(5)

    def forward(self, x):
        return self.bn(x).repeat(1, 2)


@pytest.mark.parametrize("module", [nn.BatchNorm1d(5), Block()], ids=["torch.nn", "opaque"])
def test_computing_the_layout_leaves_training_mode_batch_norms_alone(chain, module):
    chain.train()
    chain.layer1.module = module
    chain.layer2.module = nn.Linear(5 if isinstance(module, nn.BatchNorm1d) else 10, 4)
    bn = module if isinstance(module, nn.BatchNorm1d) else module.bn
    assert chain.activation_shape("layer1.post") == ((5,) if module is bn else (10,))
    assert int(bn.num_batches_tracked) == 0 and torch.equal(bn.running_mean, torch.zeros(5))
    assert bn.training and module.training
