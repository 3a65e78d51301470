"""analysis.engine: folding, the fast evaluation against the one-pass-per-addition way, metrics, chunking, repeats.

Every fast result is compared with :func:`evaluate_plain` (one full hooked forward pass per
addition) or with a plain-torch computation, on a subset of MNIST test images. Other
networks (CNNs, norms, the residual MLP) are in test_analysis_networks.py.
"""

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hookedmlp import ConfigError, HookedMLP, MLPConfig, ShapeError, SteeringError, UsageError
from hookedmlp.data import load_mnist
from hookedmlp_analysis import engine
from hookedmlp_analysis.engine import Addition, Evaluation, evaluate_additions, evaluate_plain, fold, unsteered
from hookedmlp_analysis.metrics import METRICS

N = 200
PAIRS = [(3, 1), (0, 9), (5, 6), (7, 2), (1, 8)]


@pytest.fixture(scope="module")
def exemplars() -> torch.Tensor:
    """The first training image of each digit 0-9, found from the labels."""
    images, labels = load_mnist("train")
    return torch.cat([images[int((labels == d).nonzero()[0, 0])].unsqueeze(0) for d in range(10)])


@pytest.fixture(scope="module")
def small() -> HookedMLP:
    torch.manual_seed(0)
    return HookedMLP(MLPConfig(d_in=784, d_hidden=(32, 32), d_out=10)).eval()


@pytest.fixture(scope="module")
def dropout_model() -> HookedMLP:
    torch.manual_seed(0)
    return HookedMLP(MLPConfig(d_in=784, d_hidden=(32, 32), d_out=10, dropout=0.1)).eval()


def plain_act(model: HookedMLP, x: torch.Tensor, hook: str) -> torch.Tensor:
    """Activation at ``hook`` from the model's plain nn.Sequential (no hook machinery)."""
    modules = list(model.to_sequential())[1:]  # drop Flatten
    i, where = hook.split(".")
    n = int(i[len("layer") :]) + (where == "post")
    with torch.no_grad():
        for m in modules[:n]:
            x = m(x)
    return x


def additions_at(model: HookedMLP, exemplars: torch.Tensor, hook: str, pairs=PAIRS) -> list[Addition]:
    acts = plain_act(model, exemplars, hook)
    return [Addition(hook, acts[a] - acts[b], a, b) for a, b in pairs]


def assert_same(fast: Evaluation, plain: Evaluation, atol: float) -> None:
    assert set(fast.values) == set(METRICS) == set(plain.values)
    for name in METRICS:
        assert fast.values[name].shape == plain.values[name].shape, name
        np.testing.assert_allclose(fast.values[name], plain.values[name], rtol=0, atol=atol, err_msg=name)
    np.testing.assert_allclose(fast.distributions, plain.distributions, rtol=0, atol=atol)


# -- fold -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hook, expected, linears",
    [
        ("layer0.pre", "layer0.post", [0]),
        ("layer0.post", "layer0.post", []),  # a ReLU follows: stop
        ("layer1.pre", "layer0.post", []),  # the same tensor as layer0.post
        ("layer1.post", "layer2.post", [2]),
        ("layer2.pre", "layer2.post", [2]),  # read as layer1.post, then through Linear 2
        ("layer2.post", "layer2.post", []),
        ("layer3.pre", "layer2.post", []),
        ("layer3.post", "layer4.post", [4]),
        ("layer4.pre", "layer4.post", [4]),
        ("layer4.post", "layer4.post", []),  # the logits
    ],
)
def test_fold_targets(small: HookedMLP, hook: str, expected: str, linears: list[int]) -> None:
    v = torch.randn(3, *small.activation_shape(hook), generator=torch.Generator().manual_seed(0))
    got_hook, got = fold(small, hook, v)
    assert got_hook == expected
    ref = v
    for i in linears:  # L(v) - L(0) = W v
        ref = ref @ getattr(small, f"layer{i}").module.weight.T
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    assert got.shape == (3, *small.activation_shape(expected))


@pytest.mark.parametrize("activation", ["gelu", "tanh", "sigmoid", "leaky_relu", "silu"])
def test_fold_stops_at_any_nonlinearity(activation: str) -> None:
    torch.manual_seed(1)
    m = HookedMLP(MLPConfig(d_in=784, d_hidden=(16, 16), d_out=10, activation=activation)).eval()
    assert fold(m, "layer0.pre", torch.randn(2, 784))[0] == "layer0.post"  # through Linear 0, stopped at the activation
    assert fold(m, "layer1.post", torch.randn(2, 16))[0] == "layer2.post"


def test_fold_dropout_identity_only_in_eval() -> None:
    torch.manual_seed(0)
    m = HookedMLP(MLPConfig(d_in=784, d_hidden=(32, 32), d_out=10, dropout=0.1))
    assert [type(layer.module).__name__ for layer in m.layout.layers] == [
        "Linear",
        "ReLU",
        "Dropout",
        "Linear",
        "ReLU",
        "Dropout",
        "Linear",
    ]
    v = torch.randn(2, 32)
    m.eval()
    hook, w = fold(m, "layer1.post", v)
    assert hook == "layer3.post"
    torch.testing.assert_close(w, v @ m.layer3.module.weight.T, rtol=1e-6, atol=1e-6)
    assert fold(m, "layer2.pre", v)[0] == "layer3.post"
    assert fold(m, "layer4.post", v)[0] == "layer6.post"
    m.train()  # active dropout is random: not affine, stop
    hook, w = fold(m, "layer1.post", v)
    assert hook == "layer1.post"
    torch.testing.assert_close(w, v, rtol=0, atol=0)


def _bn(cls: type, n: int) -> nn.Module:
    bn = cls(n)
    g = torch.Generator().manual_seed(4)
    bn.running_mean.copy_(torch.randn(n, generator=g))
    bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    bn.weight.data.copy_(torch.randn(n, generator=g))
    bn.bias.data.copy_(torch.randn(n, generator=g))
    return bn.eval()


AFFINE = {
    "Linear": (lambda: nn.Linear(12, 5), (12,)),
    "Linear-nobias": (lambda: nn.Linear(12, 5, bias=False), (12,)),
    "Conv1d": (lambda: nn.Conv1d(3, 4, 3, padding=1), (3, 8)),
    "Conv2d": (lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1), (2, 6, 6)),
    "BatchNorm1d": (lambda: _bn(nn.BatchNorm1d, 6), (6,)),
    "BatchNorm2d": (lambda: _bn(nn.BatchNorm2d, 3), (3, 4, 4)),
    "Flatten": (lambda: nn.Flatten(), (2, 3, 3)),
    "Unflatten": (lambda: nn.Unflatten(1, (2, 6)), (12,)),
    "Identity": (lambda: nn.Identity(), (7,)),
    "Dropout-eval": (lambda: nn.Dropout(0.5).eval(), (7,)),
    "AvgPool1d": (lambda: nn.AvgPool1d(2), (3, 8)),
    "AvgPool2d": (lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (2, 7, 7)),
    "AdaptiveAvgPool2d": (lambda: nn.AdaptiveAvgPool2d((2, 3)), (2, 5, 7)),
}


@pytest.mark.parametrize("kind", list(AFFINE))
def test_fold_through_every_affine_module_equals_adding_before_it(kind: str) -> None:
    torch.manual_seed(0)
    make, shape = AFFINE[kind]
    module = make()
    model = HookedMLP.from_module(nn.Sequential(nn.Tanh(), module, nn.Tanh()), input_shape=shape).eval()
    assert model.layer1.module is module
    g = torch.Generator().manual_seed(1)
    x, v = torch.randn(5, *shape, generator=g), 3 * torch.randn(2, *shape, generator=g)
    hook, w = fold(model, "layer1.pre", v)  # read as layer0.post, then through the module
    assert hook == "layer1.post" and w.shape == (2, *model.activation_shape("layer1.post"))
    with torch.no_grad():
        for k in range(2):
            torch.testing.assert_close(module(x + v[k]), module(x) + w[k], rtol=1e-5, atol=1e-5)
            with model.hooks(fwd_hooks=[("layer1.pre", lambda act, hook: act + v[k])]):
                before = model(x)
            with model.hooks(fwd_hooks=[("layer1.post", lambda act, hook: act + w[k])]):
                after = model(x)
            torch.testing.assert_close(before, after, rtol=1e-5, atol=1e-5)


def test_fold_never_passes_a_hooked_point(small: HookedMLP) -> None:
    v = torch.randn(1, 32)
    watch = lambda act, hook: None  # noqa: E731 (any hook: it must see the steered activation)
    for at, hook, expected in [
        ("layer2.pre", "layer1.post", "layer1.post"),
        ("layer2.post", "layer1.post", "layer1.post"),
        ("layer1.pre", "layer1.pre", "layer1.pre"),
        ("layer4.post", "layer3.post", "layer3.post"),
    ]:
        with small.hooks(fwd_hooks=[(at, watch)]):
            assert fold(small, hook, v)[0] == expected, at
    with small.hooks(fwd_hooks=[("layer0.post", watch)]):
        assert fold(small, "layer0.pre", torch.randn(1, 784))[0] == "layer0.pre"
    handle = small.layer2.module.register_forward_hook(lambda m, i, o: None)  # a PyTorch hook on the Linear itself
    try:
        assert fold(small, "layer1.post", v)[0] == "layer1.post"
    finally:
        handle.remove()
    assert fold(small, "layer1.post", v)[0] == "layer2.post"


# -- fast == plain -------------------------------------------------------------------------


def test_fast_equals_plain_at_layer0_post(model, data, exemplars) -> None:
    images, labels = data
    adds = additions_at(model, exemplars, "layer0.post")
    fast = evaluate_additions(model, images, labels, adds)
    assert "stacked" in fast.engine and (fast.distinct, fast.passes) == (5, 5)
    assert_same(fast, evaluate_plain(model, images, labels, adds), 1e-5)


@pytest.fixture(scope="module")
def every_hook(model, data, exemplars) -> tuple[list[Addition], Evaluation]:
    """Additions at all hooks, interleaved (so results must come back in input order), and the plain results."""
    images, labels = data
    by_hook = [additions_at(model, exemplars, h, pairs=PAIRS[:3]) for h in model.hook_names]
    adds = [c for group in zip(*by_hook) for c in group]
    assert len({c.hook for c in adds[:10]}) == 10
    return adds, evaluate_plain(model, images, labels, adds)


@pytest.mark.parametrize("chunk", [1 << 20, 2 * N * 512, 5000])
def test_fast_equals_plain_at_every_hook_and_chunk_size(model, data, every_hook, chunk) -> None:
    images, labels = data
    adds, plain = every_hook
    fast = evaluate_additions(model, images, labels, adds, chunk_elements=chunk)
    assert_same(fast, plain, 1e-4)
    # layer0.pre/post, layer1.pre fold to layer0.post; layer1.post to layer3.pre to layer2.post; the rest to the logits
    assert fast.distinct == 9 and fast.passes == 6


@pytest.mark.parametrize("chunk", [2 * N * 32, 100, 1])
def test_random_vectors_every_hook_small(small, data, chunk) -> None:
    """Large random vectors (not digit contrasts) on a seeded small model, stacked or in chunks down to one image."""
    images, labels = data
    images, labels = (images[:40], labels[:40]) if chunk < 1000 else (images, labels)
    g = torch.Generator().manual_seed(7)
    adds = [
        Addition(h, 3 * torch.randn(small.activation_shape(h), generator=g), a, b)
        for h in small.hook_names
        for a, b in [(2, 5), (9, 0)]
    ]
    assert_same(
        evaluate_additions(small, images, labels, adds, chunk_elements=chunk),
        evaluate_plain(small, images, labels, adds),
        1e-4,
    )


def test_fast_equals_plain_with_eval_dropout(dropout_model, data, exemplars) -> None:
    images, labels = data
    m = dropout_model
    adds = [c for h in m.hook_names for c in additions_at(m, exemplars, h, pairs=[(3, 1), (0, 9)])]
    adds.append(Addition("layer2.post", torch.zeros(32), 4, 2))
    assert_same(
        evaluate_additions(m, images, labels, adds, chunk_elements=3 * N * 32),
        evaluate_plain(m, images, labels, adds),
        1e-4,
    )


def count_suffix_rows(monkeypatch) -> list[int]:
    """Rows of every suffix pass: stacked (``compile_suffix``'s functions) or resumed (``forward(start_at=...)``)."""
    rows: list[int] = []
    forward, compile_suffix = HookedMLP.forward, engine.compile_suffix

    def counting_forward(self, x, start_at=None, stop_at=None, **kwargs):
        if start_at is not None and stop_at is None:
            rows.append(x.shape[0])
        return forward(self, x, start_at, stop_at, **kwargs)

    def counting_compile(modules):
        run = compile_suffix(modules)
        return lambda x: rows.append(x.shape[0]) or run(x)

    monkeypatch.setattr(HookedMLP, "forward", counting_forward)
    monkeypatch.setattr(engine, "compile_suffix", counting_compile)
    return rows


def test_zero_and_duplicate_additions_run_once(model, data, exemplars, monkeypatch) -> None:
    images, labels = data
    base = additions_at(model, exemplars, "layer0.pre")[:2] + additions_at(model, exemplars, "layer2.post")[:2]
    zeros = [
        Addition(h, torch.zeros(model.activation_shape(h)), 3, 1) for h in ("layer0.pre", "layer1.post", "layer4.post")
    ]
    same_vector_other_labels = [Addition(base[0].hook, base[0].vector.clone(), 5, 1)]
    as_layer0_post = [
        Addition(
            "layer0.post",
            plain_act(model, exemplars[3:4], "layer0.post")[0] - plain_act(model, exemplars[1:2], "layer0.post")[0],
            3,
            1,
        )
    ]  # base[0], unfolded
    adds = [
        base[0],
        zeros[0],
        base[1],
        base[0],
        zeros[1],
        base[2],
        base[3],
        base[2],
        zeros[2],
        base[0],
        *same_vector_other_labels,
        *as_layer0_post,
    ]
    rows = count_suffix_rows(monkeypatch)
    fast = evaluate_additions(model, images, labels, adds, chunk_elements=N * 512)
    assert sum(rows) == 4 * N  # 4 distinct non-zero vectors ran a suffix, each once over the N images
    assert (fast.distinct, fast.passes) == (7, 4)  # plus one zero vector at layer0.post, layer2.post and the logits
    assert "12 additions, 7 distinct, 4 passes" in fast.engine
    plain = evaluate_plain(model, images, labels, adds)
    assert_same(fast, plain, 1e-5)
    for i, j in [(0, 3), (0, 9), (5, 7), (1, 4), (1, 8), (0, 11)]:  # repeats give identical rows
        for name in METRICS:
            assert fast.values[name][i] == fast.values[name][j]
    normal = unsteered(model, images, labels, [1])
    for i in (1, 4, 8):  # zero vectors: the unsteered model
        assert fast.values["kl"][i] == 0.0
        assert fast.values["loss"][i] == pytest.approx(float(normal["loss"][0]), abs=1e-6)
    # same vector, other labels: the same logits, so the same loss; the flip rate counts 1s called 5 instead of 3
    assert fast.values["loss"][10] == fast.values["loss"][0]
    assert fast.values["flip_rate"][10] == plain.values["flip_rate"][10]


# -- metrics against plain torch -------------------------------------------------------


def test_metrics_match_hand_computation(model, data, exemplars) -> None:
    images, labels = data
    seq = model.to_sequential()
    acts = plain_act(model, exemplars, "layer0.post")
    a, b = 7, 2
    v = acts[a] - acts[b]
    with torch.no_grad():
        base = seq(images)
        steered = seq[2:](seq[:2](images) + v)
    keep = labels != b
    ce = F.cross_entropy(steered[keep], labels[keep])
    flip = (steered[~keep].argmax(1) == a).float().mean()
    acc = (steered[keep].argmax(1) == labels[keep]).float().mean()
    kl = (
        F.kl_div(F.log_softmax(steered[keep], 1), F.log_softmax(base[keep], 1), log_target=True, reduction="none")
        .sum(1)
        .mean()
    )
    for out in (
        evaluate_additions(model, images, labels, [Addition("layer0.post", v, a, b)]),
        evaluate_plain(model, images, labels, [Addition("layer0.post", v, a, b)]),
    ):
        assert out.values["loss"][0] == pytest.approx(float(ce), abs=1e-5)
        assert out.values["flip_rate"][0] == pytest.approx(float(flip), abs=1e-7)
        assert out.values["accuracy_other"][0] == pytest.approx(float(acc), abs=1e-7)
        assert out.values["kl"][0] == pytest.approx(float(kl), abs=1e-5)
        dist = out.distributions[0]
        assert dist.shape == (10, 10)
        for d in range(10):
            np.testing.assert_allclose(dist[d], F.softmax(steered[labels == d].mean(0), -1).numpy(), atol=1e-6)


def test_unsteered_matches_hand_computation(model, data) -> None:
    images, labels = data
    with torch.no_grad():
        logits = model.to_sequential()(images)
    normal = unsteered(model, images, labels, list(range(10)))
    assert set(normal) == set(METRICS)
    for b in range(10):
        keep = labels != b
        assert normal["loss"][b] == pytest.approx(float(F.cross_entropy(logits[keep], labels[keep])), abs=1e-6)
        assert normal["accuracy_other"][b] == pytest.approx(
            float((logits[keep].argmax(1) == labels[keep]).float().mean()), abs=1e-7
        )
        assert normal["kl"][b] == 0.0
        assert normal["flip_rate"][b] == pytest.approx(
            float((logits[~keep].argmax(1) == b).float().mean()), abs=1e-7
        )  # a == b


# -- hooks attached, bad input ---------------------------------------------------------------


def test_fast_equals_plain_with_an_intervention_attached(model, data, exemplars) -> None:
    images, labels = data
    adds = additions_at(model, exemplars, "layer0.pre", pairs=[(3, 1)]) + additions_at(
        model, exemplars, "layer2.post", [(0, 9)]
    )
    with model.clamp("layer0.post", list(range(256)), 0.0):
        fast = evaluate_additions(model, images, labels, adds)
        plain = evaluate_plain(model, images, labels, adds)
    assert_same(fast, plain, 1e-4)
    assert "layer0.pre (hooks are attached at layer0.post)" in fast.engine and "layer2.post" not in fast.engine


def test_evaluation_leaves_model_unchanged(model, data, exemplars) -> None:
    images, labels = data
    with torch.no_grad():
        before = model(images)
    evaluate_additions(model, images, labels, additions_at(model, exemplars, "layer1.post"))
    evaluate_plain(model, images, labels, additions_at(model, exemplars, "layer1.post")[:1])
    assert not model.attached_hooks()
    with torch.no_grad():
        torch.testing.assert_close(model(images), before, rtol=0, atol=0)


def test_bad_arguments(model, data, exemplars) -> None:
    images, labels = data
    adds = additions_at(model, exemplars, "layer0.post")[:1]
    for bad in (0, -5, True):
        with pytest.raises(ConfigError, match="chunk_elements must be"):
            evaluate_additions(model, images, labels, adds, chunk_elements=bad)
    for fn in (evaluate_additions, evaluate_plain):
        with pytest.raises(UsageError, match="no additions to evaluate"):
            fn(model, images, labels, [])
        with pytest.raises(
            ShapeError,
            match=r"the vector added at 'layer0.post' has shape \[784\]; one example's "
            r"activation there is \[512\]",
        ):
            fn(model, images, labels, [Addition("layer0.post", torch.zeros(784), 3, 1)])
        with pytest.raises(UsageError, match="labels must be classes 0 to 9 .* got labels from 0 to 12"):
            fn(model, images, torch.where(labels == 3, 12, labels), adds)
        with pytest.raises(ShapeError, match=r"expected images \[n, ...\] and labels \[n\]"):
            fn(model, images, labels[:-1], adds)
        with pytest.raises(KeyError, match="did you mean 'layer0.post'"):
            fn(model, images, labels, [Addition("layer0.pst", torch.zeros(512), 3, 1)])


def test_a_float64_model_scores_float32_images(model, data, exemplars) -> None:
    images, labels = data
    adds = additions_at(model, exemplars, "layer0.post", pairs=PAIRS[:2])
    wide = HookedMLP.from_pretrained("mnist-mlp").eval().double()
    fast = evaluate_additions(wide, images, labels, adds)  # images and vectors are moved to the model's dtype
    assert fast.values["loss"].dtype == np.float64
    assert_same(fast, evaluate_additions(model, images, labels, adds), 1e-5)


@pytest.mark.parametrize("hook", ["layer0.post", "layer2.pre"])
def test_logits_that_overflow_are_refused_not_scored(tiny, tiny_x, hook):
    """A finite vector whose effect overflows the dtype downstream gives inf logits: one clear error, not inf cells."""
    labels = torch.tensor([0, 1, 2, 0, 1])
    ok = Addition(hook, torch.ones(8), 2, 0)
    huge = Addition(hook, torch.full((8,), 3e38), 1, 0)
    assert torch.isinf(tiny.run_with_hooks(tiny_x, fwd_hooks=[(hook, lambda act, hook: act + huge.vector)])).any()
    with pytest.raises(
        SteeringError,
        match=re.escape(
            f"the vector for 1 - 0 added at {fold(tiny, hook, huge.vector[None])[0]} makes the logits overflow "
            "torch.float32 (inf or NaN): its activations grow past the dtype's range after that hook point; use a "
            "smaller coefficient"
        ),
    ):
        evaluate_additions(tiny, tiny_x, labels, [ok, huge])
