"""Activation patching equals one full forward pass per (hook, entry), patched with a plain PyTorch hook.

Networks: a tiny MLP (whose reference also runs on the raw ``nn.Sequential``), a tiny LeNet-style
CNN, a tiny ``ResidualMLP`` (a hand-written HookedRoot), a functional network opened with
``capture``, and a hand-written HookedRoot whose forward cannot be captured (full passes).
"""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zoo import Functional

from hookedmlp import HookedMLP, HookedRoot, HookPoint, ResidualConfig, ResidualMLP, capture
from hookedmlp.models.cut import graph_view
from hookedmlp.patching import PER, activation_patch, plain_activation_patch

pytestmark = pytest.mark.usefixtures("one_thread")

N = 6


class Branchy(HookedRoot):
    """A hand-written HookedRoot whose forward branches on the data: no graph, so patching runs full passes."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 8), nn.Linear(8, 3)
        self.hook_hidden, self.hook_out = HookPoint(), HookPoint()
        self.setup()

    def forward(self, x):
        h = self.hook_hidden(torch.relu(self.fc1(x)))
        if h.sum() > -1:  # always true, but torch.fx cannot trace a branch on the data
            h = h * 1.5
        return self.hook_out(self.fc2(h))


def build(name: str) -> HookedRoot:
    torch.manual_seed(0)
    if name == "mlp":
        return HookedMLP.from_module(
            nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
        ).eval()
    if name == "cnn":
        net = nn.Sequential(
            nn.Conv2d(1, 3, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(3, 4, 3),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16, 3),
        )
        return HookedMLP.from_module(net, input_shape=(1, 8, 8)).eval()
    if name == "residual":
        return ResidualMLP(ResidualConfig(d_in=16, d_model=8, d_mlp=8, n_blocks=2, d_out=3)).eval()
    if name == "functional":
        return capture(Functional().eval(), input_shape=(16,))
    return Branchy().eval()


NETS = ["mlp", "cnn", "residual", "functional", "branchy"]


def inputs(model: HookedRoot) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    shape = getattr(model, "input_shape", (16,))
    return torch.rand(N, *shape, generator=g), torch.rand(N, *shape, generator=g) * 2 - 0.5


def diff01(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, 0] - logits[:, 1]).mean()


def entries(shape: tuple[int, ...], per: str) -> list[tuple]:
    """The index of each entry into one batch's activation ``[n, *shape]`` (written without the library's masks)."""
    if per == "hook":
        return [(slice(None),)]
    if per == "unit":
        return [(slice(None), u) for u in range(shape[0])]
    if len(shape) == 1:
        return [(slice(None),)]
    grid = [range(s) for s in shape[1:]]
    return [(slice(None), slice(None), *p) for p in itertools.product(*grid)]


def reference(model, base, source, hook, per, metric) -> list[float]:
    """One full forward pass of ``base`` per entry, the entry's values swapped in by a PyTorch forward hook."""
    point = model.hook_dict[hook]
    seen = []
    handle = point.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    with torch.no_grad():
        model(source)
    handle.remove()
    values = []
    for index in entries(tuple(seen[0].shape[1:]), per):

        def swap(m, i, o, index=index):
            o = o.clone()
            o[index] = seen[0][index]
            return o

        handle = point.register_forward_hook(swap)
        with torch.no_grad():
            values.append(float(metric(model(base))))
        handle.remove()
    return values


@pytest.fixture(scope="module", params=NETS)
def net(request):
    model = build(request.param)
    return request.param, model, *inputs(model)


@pytest.mark.parametrize("per", PER)
@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_patching_equals_a_full_pass_per_entry_with_a_pytorch_hook(net, per, direction) -> None:
    name, model, clean, corrupt = net
    result = activation_patch(model, clean, corrupt, diff01, per=per, direction=direction)
    base, source = (corrupt, clean) if direction == "denoise" else (clean, corrupt)
    expected = [v for h in model.hook_names for v in reference(model, base, source, h, per, diff01)]
    torch.testing.assert_close(result.values, torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-5)
    assert result.hooks == model.hook_names and result.n == N
    with torch.no_grad():
        assert result.base == pytest.approx(float(diff01(model(base))), abs=1e-6)
        assert result.source == pytest.approx(float(diff01(model(source))), abs=1e-6)
    assert result.engine.startswith("graph cut" if name != "branchy" else "no graph of Branchy")


def test_the_mlp_reference_also_holds_on_the_raw_sequential() -> None:
    """The raw nn.Sequential with a hook on its ReLU module: no hookedmlp code in the reference at all."""
    model = build("mlp")
    raw = model.layer1.module  # the second module of the Sequential: the ReLU whose output is layer1.post
    clean, corrupt = (x.reshape(N, -1) for x in inputs(model))
    seq = nn.Sequential(*[layer.module for layer in model.layout.layers])
    with torch.no_grad():
        source = seq[:2](clean)
    expected = []
    for u in range(8):

        def swap(m, i, o, u=u):
            o = o.clone()
            o[:, u] = source[:, u]
            return o

        handle = raw.register_forward_hook(swap)
        with torch.no_grad():
            expected.append(float(diff01(seq(corrupt))))
        handle.remove()
    result = activation_patch(model, clean, corrupt, diff01, per="unit", hooks="layer1.post")
    torch.testing.assert_close(result.values, torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-5)
    assert "units folded to layer2.post" in result.engine


def test_the_plain_loop_equals_the_fast_engine(net) -> None:
    _, model, clean, corrupt = net
    hook = model.hook_names[len(model.hook_names) // 2]
    fast = activation_patch(model, clean, corrupt, diff01, per="unit", hooks=hook)
    plain = plain_activation_patch(model, clean, corrupt, diff01, per="unit", hooks=hook)
    torch.testing.assert_close(fast.values, plain.values, rtol=1e-5, atol=1e-5)
    assert plain.engine == "full hooked passes, one per entry"


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 18])
def test_chunk_sizes_give_the_same_values(chunk) -> None:
    model = build("cnn")
    clean, corrupt = inputs(model)
    hooks = ["layer0.post", "layer3.post"]  # [3, 8, 8] before the pool, [4, 2, 2] after the second conv
    every = activation_patch(model, clean, corrupt, diff01, hooks=hooks, per="position", chunk_elements=chunk)
    once = activation_patch(model, clean, corrupt, diff01, hooks=hooks, per="position", chunk_elements=1 << 30)
    torch.testing.assert_close(every.values, once.values, rtol=1e-6, atol=1e-6)


def test_graphs_are_known_where_expected() -> None:
    assert all(graph_view(build(n)) is not None for n in NETS[:-1]) and graph_view(build("branchy")) is None


def test_hooks_attached_elsewhere_run_in_every_patched_pass() -> None:
    model = build("mlp")
    clean, corrupt = inputs(model)
    double = lambda act, hook: act * 2  # noqa: E731
    with model.hooks(fwd_hooks=[("layer3.post", double)]):
        result = activation_patch(model, clean, corrupt, diff01, per="unit", hooks="layer1.post")
        expected = reference(model, corrupt, clean, "layer1.post", "unit", diff01)
    torch.testing.assert_close(result.values, torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-5)


def _metric_by_hand(name: str, logits: torch.Tensor, clean: torch.Tensor, corrupt: torch.Tensor) -> float:
    rows = torch.arange(len(logits))
    if name == "logit_diff":
        return float((logits[rows, clean] - logits[rows, corrupt]).mean())
    if name == "loss":
        return float(F.cross_entropy(logits, clean))
    return float((logits.argmax(-1) == clean).double().mean())


@pytest.mark.parametrize("metric", ["logit_diff", "loss", "flip_rate"])
def test_named_metrics_are_their_formulas(metric) -> None:
    model = build("mlp")
    clean, corrupt = inputs(model)
    labels = (torch.tensor([0, 1, 2, 0, 1, 2]), 1)
    result = activation_patch(model, clean, corrupt, metric, labels=labels, hooks=["layer2.post", "layer4.post"])
    by_hand = lambda logits: _metric_by_hand(metric, logits, labels[0], torch.full((N,), 1))  # noqa: E731
    with torch.no_grad():
        assert result.base == pytest.approx(by_hand(model(corrupt)), abs=1e-6)
        assert result.source == pytest.approx(by_hand(model(clean)), abs=1e-6)
    expected = [v for h in result.hooks for v in reference(model, corrupt, clean, h, "hook", by_hand)]
    torch.testing.assert_close(result.values, torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-5)


def test_the_result_is_labelled(net) -> None:
    _, model, clean, corrupt = net
    result = activation_patch(model, clean, corrupt, diff01, per="unit")
    _, cache = model.run_with_cache(clean)
    assert result.grids == [(cache[h].shape[1],) for h in model.hook_names]
    assert len(result.index) == len(result.values) == sum(math.prod(g) for g in result.grids)
    first = result.hooks[0]
    assert result.index[0] == (first, (0,))
    assert torch.equal(result.by_hook(first, "values"), result.values[: result.grids[0][0]])
    top = result.top(3)
    assert [abs(e.effect) for e in top] == sorted((abs(e.effect) for e in top), reverse=True)
    assert top[0].effect == pytest.approx(float(result.effect.abs().max()) * (1 if top[0].effect > 0 else -1))
    matrix = result.matrix()
    assert matrix.shape == (len(result.hooks), max(g[0] for g in result.grids))
    assert torch.equal(matrix[0, : result.grids[0][0]], result.by_hook(first))
    assert result.summary(2).splitlines()[0].startswith(f"activation patching, per unit, denoise, {N} pairs")
    torch.testing.assert_close(result.normalized(), result.effect / (result.source - result.base))
