"""analysis.engine: folding, the batched evaluation against the one-pass-per-vector way, metrics.

Every batched result is compared with :func:`evaluate_plain` (one full hooked forward
pass per contrast) or with a plain-torch computation, on a subset of MNIST test images.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis.engine import METRICS, Contrast, evaluate_contrasts, evaluate_plain, fold, unsteered_metrics
from hookedmlp import HookedMLP, MLPConfig
from hookedmlp.data import load_mnist

N = 200
PAIRS = [(3, 1), (0, 9), (5, 6), (7, 2), (1, 8)]
ALL = (*METRICS, "distributions")


@pytest.fixture(scope="module")
def exemplars() -> torch.Tensor:
    """The first training image of each digit 0-9, found from the labels."""
    images, labels = load_mnist("train")
    return torch.cat([images[int((labels == d).nonzero()[0, 0])].unsqueeze(0) for d in range(10)])


@pytest.fixture(scope="module")
def dropout_model() -> HookedMLP:
    torch.manual_seed(0)
    return HookedMLP(MLPConfig(d_in=784, d_hidden=(32, 32), d_out=10, dropout=0.1)).eval()


def plain_act(model: HookedMLP, x: torch.Tensor, hook: str) -> torch.Tensor:
    """Activation at ``hook`` from the model's plain nn.Sequential (no hook machinery)."""
    modules = list(model.to_sequential())[1:]  # drop Flatten
    i, where = hook.split(".")
    n = int(i[len("layer"):]) + (where == "post")
    with torch.no_grad():
        for m in modules[:n]:
            x = m(x)
    return x


def contrasts_at(model: HookedMLP, exemplars: torch.Tensor, hook: str, pairs=PAIRS) -> list[Contrast]:
    acts = plain_act(model, exemplars, hook)
    return [Contrast(hook, acts[a] - acts[b], a, b) for a, b in pairs]


def assert_same(batched: dict, plain: dict, atol: float) -> None:
    assert set(batched) == set(ALL) == set(plain)
    for name in ALL:
        assert batched[name].shape == plain[name].shape, name
        np.testing.assert_allclose(batched[name], plain[name], rtol=0, atol=atol, err_msg=name)


# -- fold -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> HookedMLP:
    torch.manual_seed(0)
    return HookedMLP(MLPConfig(d_in=784, d_hidden=(32, 32), d_out=10)).eval()


@pytest.mark.parametrize("hook", ["layer0.pre", "layer2.pre", "layer4.pre"])
def test_fold_is_the_linear_identity(tiny: HookedMLP, hook: str) -> None:
    """Adding v before a Linear L equals adding W v after it: L(x + v) = L(x) + W v."""
    i = int(hook[5])
    lin = getattr(tiny, f"layer{i}").module
    assert isinstance(lin, nn.Linear)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, lin.in_features, generator=g)
    v = torch.randn(4, lin.in_features, generator=g)
    folded_hook, w = fold(tiny, hook, v)
    assert folded_hook == f"layer{i}.post"
    assert w.shape == (4, lin.out_features)
    with torch.no_grad():
        for k in range(4):
            torch.testing.assert_close(lin(x + v[k]), lin(x) + w[k], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(w, v @ lin.weight.T, rtol=0, atol=0)


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
def test_fold_targets(tiny: HookedMLP, hook: str, expected: str, linears: list[int]) -> None:
    width = tiny.activation_width(hook)
    v = torch.randn(3, width, generator=torch.Generator().manual_seed(0))
    got_hook, got = fold(tiny, hook, v)
    assert got_hook == expected
    ref = v
    for i in linears:
        ref = ref @ getattr(tiny, f"layer{i}").module.weight.T
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    assert got.shape == (3, tiny.activation_width(expected))


def test_fold_stops_at_any_nonlinearity() -> None:
    torch.manual_seed(1)
    for act in ("gelu", "tanh", "sigmoid", "leaky_relu"):
        m = HookedMLP(MLPConfig(d_in=784, d_hidden=(16, 16), d_out=10, activation=act)).eval()
        v = torch.randn(2, 784)
        hook, w = fold(m, "layer0.pre", v)
        assert hook == "layer0.post"  # through Linear 0, stopped at the activation
        hook, w2 = fold(m, "layer1.post", torch.randn(2, 16))
        assert hook == "layer2.post"


def test_fold_dropout_identity_only_in_eval() -> None:
    torch.manual_seed(0)
    m = HookedMLP(MLPConfig(d_in=784, d_hidden=(32, 32), d_out=10, dropout=0.1))
    # modules: 0 Linear, 1 ReLU, 2 Dropout, 3 Linear, 4 ReLU, 5 Dropout, 6 Linear
    assert [s.kind for s in m.specs] == ["linear", "relu", "dropout", "linear", "relu", "dropout", "linear"]
    v = torch.randn(2, 32)
    m.eval()
    hook, w = fold(m, "layer1.post", v)
    assert hook == "layer3.post"
    torch.testing.assert_close(w, v @ m.layer3.module.weight.T, rtol=0, atol=0)
    assert fold(m, "layer2.pre", v)[0] == "layer3.post"
    assert fold(m, "layer4.post", v)[0] == "layer6.post"
    m.train()
    hook, w = fold(m, "layer1.post", v)
    assert hook == "layer1.post"  # active dropout is not affine-deterministic: stop
    torch.testing.assert_close(w, v, rtol=0, atol=0)
    m.eval()


# -- batched == plain -----------------------------------------------------------------


def test_batched_equals_plain_at_layer0_post(model, data, exemplars) -> None:
    images, labels = data
    contrasts = contrasts_at(model, exemplars, "layer0.post")
    assert_same(evaluate_contrasts(model, images, labels, contrasts), evaluate_plain(model, images, labels, contrasts), 1e-5)


@pytest.fixture(scope="module")
def every_hook(model, data, exemplars) -> tuple[list[Contrast], dict]:
    """Contrasts at all hooks, interleaved (so results must come back in input order), and the plain results."""
    images, labels = data
    by_hook = [contrasts_at(model, exemplars, h, pairs=PAIRS[:3]) for h in model.hook_names]
    contrasts = [c for group in zip(*by_hook) for c in group]
    assert len({c.hook for c in contrasts[:10]}) == 10
    return contrasts, evaluate_plain(model, images, labels, contrasts)


@pytest.mark.parametrize("chunk_rows", [65_536, 2 * N, 1])
def test_batched_equals_plain_at_every_hook(model, data, every_hook, chunk_rows) -> None:
    images, labels = data
    contrasts, plain = every_hook
    batched = evaluate_contrasts(model, images, labels, contrasts, chunk_rows=chunk_rows)
    assert_same(batched, plain, 1e-4)


def test_zero_and_duplicate_contrasts(model, data, exemplars) -> None:
    images, labels = data
    base = contrasts_at(model, exemplars, "layer0.pre")[:2] + contrasts_at(model, exemplars, "layer2.post")[:2]
    zeros = [Contrast(h, torch.zeros(model.activation_width(h)), 3, 1) for h in ("layer0.pre", "layer1.post", "layer4.post")]
    same_vector_other_labels = [Contrast(base[0].hook, base[0].vector.clone(), 5, 1)]
    contrasts = [base[0], zeros[0], base[1], base[0], zeros[1], base[2], base[3], base[2], zeros[2], base[0]] + same_vector_other_labels
    batched = evaluate_contrasts(model, images, labels, contrasts, chunk_rows=N)
    plain = evaluate_plain(model, images, labels, contrasts)
    assert_same(batched, plain, 1e-5)
    for i, j in [(0, 3), (0, 9), (5, 7), (1, 4), (1, 8)]:  # duplicates give identical rows
        for name in ALL:
            np.testing.assert_array_equal(batched[name][i], batched[name][j])
    normal = unsteered_metrics(model, images, labels, [1])
    for i in (1, 4, 8):  # zero vectors: the unsteered model
        assert batched["kl"][i] == 0.0
        assert batched["loss"][i] == pytest.approx(float(normal["loss"][0]), abs=1e-6)
        assert batched["accuracy_other"][i] == pytest.approx(float(normal["accuracy_other"][0]), abs=1e-7)
    # same vector, other labels: loss identical, flip rate counts 1s called 5 instead of 3
    assert batched["loss"][10] == pytest.approx(batched["loss"][0], abs=1e-6)
    assert batched["flip_rate"][10] == pytest.approx(plain["flip_rate"][10], abs=0)


def test_batched_equals_plain_with_eval_dropout(dropout_model, data, exemplars) -> None:
    images, labels = data
    m = dropout_model
    contrasts = [c for h in m.hook_names for c in contrasts_at(m, exemplars, h, pairs=[(3, 1), (0, 9)])]
    contrasts.append(Contrast("layer2.post", torch.zeros(32), 4, 2))
    batched = evaluate_contrasts(m, images, labels, contrasts, chunk_rows=3 * N)
    plain = evaluate_plain(m, images, labels, contrasts)
    assert_same(batched, plain, 1e-4)


def test_random_vectors_every_hook_tiny(tiny, data) -> None:
    """Large random vectors (not digit contrasts) on a seeded tiny model, several chunks."""
    images, labels = data
    g = torch.Generator().manual_seed(7)
    contrasts = [Contrast(h, 3 * torch.randn(tiny.activation_width(h), generator=g), int(a), int(b))
                 for h in tiny.hook_names for a, b in [(2, 5), (9, 0)]]
    assert_same(evaluate_contrasts(tiny, images, labels, contrasts, chunk_rows=2 * N),
                evaluate_plain(tiny, images, labels, contrasts), 1e-4)


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
    kl = F.kl_div(F.log_softmax(steered[keep], 1), F.log_softmax(base[keep], 1), log_target=True, reduction="none").sum(1).mean()
    out = evaluate_contrasts(model, images, labels, [Contrast("layer0.post", v, a, b)])
    assert out["loss"][0] == pytest.approx(float(ce), abs=1e-5)
    assert out["flip_rate"][0] == pytest.approx(float(flip), abs=1e-7)
    assert out["accuracy_other"][0] == pytest.approx(float(acc), abs=1e-7)
    assert out["kl"][0] == pytest.approx(float(kl), abs=1e-5)
    dist = out["distributions"][0]
    assert dist.shape == (10, 10)
    for d in range(10):
        ref = F.softmax(steered[labels == d].mean(0), -1).numpy()
        np.testing.assert_allclose(dist[d], ref, atol=1e-6)


def test_unsteered_metrics_match_hand_computation(model, data) -> None:
    images, labels = data
    with torch.no_grad():
        logits = model.to_sequential()(images)
    normal = unsteered_metrics(model, images, labels, list(range(10)))
    for b in range(10):
        keep = labels != b
        assert normal["loss"][b] == pytest.approx(float(F.cross_entropy(logits[keep], labels[keep])), abs=1e-6)
        assert normal["accuracy_other"][b] == pytest.approx(float((logits[keep].argmax(1) == labels[keep]).float().mean()), abs=1e-7)
        assert normal["kl"][b] == 0.0


def test_chunk_rows_must_be_positive(model, data, exemplars) -> None:
    images, labels = data
    with pytest.raises(ValueError, match="chunk_rows"):
        evaluate_contrasts(model, images, labels, contrasts_at(model, exemplars, "layer0.post")[:1], chunk_rows=0)


def test_evaluation_leaves_model_unchanged(model, data, exemplars) -> None:
    images, labels = data
    with torch.no_grad():
        before = model(images)
    evaluate_contrasts(model, images, labels, contrasts_at(model, exemplars, "layer1.post"))
    evaluate_plain(model, images, labels, contrasts_at(model, exemplars, "layer1.post")[:1])
    assert not model.attached_hooks()
    with torch.no_grad():
        torch.testing.assert_close(model(images), before, rtol=0, atol=0)


def test_batched_equals_plain_with_an_intervention_attached(model, data, exemplars) -> None:
    images, labels = data
    contrasts = contrasts_at(model, exemplars, "layer0.pre", pairs=[(3, 1)])
    with model.clamp("layer0.post", list(range(256)), 0.0):
        batched = evaluate_contrasts(model, images, labels, contrasts)
        plain = evaluate_plain(model, images, labels, contrasts)
    assert_same(batched, plain, 1e-4)
