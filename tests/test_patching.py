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

from hookedmlp import (
    ArgumentTypeError,
    ConfigError,
    HookedMLP,
    HookedRoot,
    HookNameError,
    HookPoint,
    ResidualConfig,
    ResidualMLP,
    ShapeError,
    SizeError,
    SteeringError,
    UsageError,
    capture,
)
from hookedmlp.models.cut import graph_view
from hookedmlp.patching import PER, activation_patch, attribution_patch, plain_activation_patch
from hookedmlp.sizes import human, memory_budget

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


# -- bad input ------------------------------------------------------------------------------------------


def test_clean_and_corrupt_of_different_shapes_are_refused() -> None:
    model = build("mlp")
    clean, corrupt = inputs(model)
    with pytest.raises(ShapeError, match=r"clean has shape \[6, 1, 4, 4\] and corrupt \[5, 1, 4, 4\]; patching pairs"):
        activation_patch(model, clean, corrupt[:5], diff01)
    with pytest.raises(ShapeError, match=r"clean has shape \[6, 1, 4, 4\] and corrupt list"):
        attribution_patch(model, clean, [1.0], diff01)


@pytest.mark.parametrize(
    "metric, error, message",
    [
        (lambda logits: logits[:, 0], ShapeError, r"must return one number for a batch of logits, got shape \[6\]"),
        (
            lambda logits: logits.sum() / 0 * 0,
            SteeringError,
            "the metric's value on the unpatched (base|source) run must",
        ),
        (lambda logits: "high", ArgumentTypeError, "must return a number or a tensor, got str"),
    ],
    ids=["not-a-scalar", "not-finite", "not-a-number"],
)
def test_a_metric_that_is_not_one_finite_number_is_refused(metric, error, message) -> None:
    model = build("mlp")
    clean, corrupt = inputs(model)
    for patch in (activation_patch, attribution_patch):
        with pytest.raises(error, match=message):
            patch(model, clean, corrupt, metric)


def test_a_metric_that_turns_non_finite_only_when_patched_names_the_hook() -> None:
    model = build("mlp")
    clean, corrupt = inputs(model)
    with torch.no_grad():
        unpatched = [float(diff01(model(x))) for x in (clean, corrupt)]

    def metric(logits):  # finite on the unpatched runs only
        value = diff01(logits)
        return value if min(abs(float(value) - u) for u in unpatched) < 1e-6 else value / 0

    with pytest.raises(SteeringError, match=r"the metric's value with layer\d.\w+ patched must be finite, got -?inf"):
        activation_patch(model, clean, corrupt, metric, per="unit")


def test_an_unknown_hook_name_says_did_you_mean() -> None:
    model = build("mlp")
    clean, corrupt = inputs(model)
    with pytest.raises(HookNameError, match="did you mean 'layer1.post'"):
        activation_patch(model, clean, corrupt, diff01, hooks="layer1.pots")


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(per="neuron"), ConfigError, "per must be one of 'hook', 'unit', 'position', got 'neuron'"),
        (dict(direction="denoising"), ConfigError, "did you mean 'denoise'"),
        (dict(chunk_elements=0), ConfigError, "chunk_elements must be >= 1, got 0"),
    ],
)
def test_bad_options_are_refused(kwargs, error, message) -> None:
    model = build("mlp")
    clean, corrupt = inputs(model)
    with pytest.raises(error, match=message):
        activation_patch(model, clean, corrupt, diff01, **kwargs)


def test_named_metrics_need_labels_that_fit() -> None:
    model = build("mlp")
    clean, corrupt = inputs(model)
    with pytest.raises(UsageError, match=r"metric 'loss' needs labels=\(clean_labels, corrupt_labels\)"):
        activation_patch(model, clean, corrupt, "loss")
    with pytest.raises(ConfigError, match="metric must be one of 'logit_diff', 'loss', 'flip_rate', got 'logit_dif'"):
        activation_patch(model, clean, corrupt, "logit_dif", labels=(0, 1))
    with pytest.raises(UsageError, match=r"clean labels must be classes 0 to 2 \(the model has 3 outputs\)"):
        activation_patch(model, clean, corrupt, "logit_diff", labels=(3, 1))
    with pytest.raises(ShapeError, match=r"corrupt labels has shape \[2\]; expected one label per pair, \[6\]"):
        activation_patch(model, clean, corrupt, "logit_diff", labels=(0, torch.tensor([1, 2])))


def test_pairs_whose_activations_exceed_the_budget_are_refused_up_front_with_the_estimate() -> None:
    model = HookedMLP.from_module(nn.Sequential(nn.Linear(16, 512), nn.ReLU(), nn.Linear(512, 3))).eval()
    clean, corrupt = inputs(model)
    units = 16 + 4 * 512 + 3  # layer0.pre, layer0.post = layer1.pre, layer1.post = layer2.pre, layer2.post
    needed = 3 * 4 * 6 * units + 8 * units  # 3 float32 copies (source, base, one patched) of 6 pairs; the results
    with memory_budget(needed - 1), pytest.raises(SizeError) as info:
        activation_patch(model, clean, corrupt, diff01, per="unit")
    assert str(info.value).startswith(
        f"activation patching of 6 pairs at 6 hook point(s) needs {human(needed)} ({needed:,} bytes), above"
    )
    assert "patch fewer pairs or hook points at a time" in str(info.value)
    with memory_budget(needed):
        assert activation_patch(model, clean, corrupt, diff01, per="unit").values.shape == (units,)
