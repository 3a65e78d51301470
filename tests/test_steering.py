"""Steering vectors on the shipped model against an independent plain-torch computation of the
study's method: building them (first example, class mean, inputs, several hooks), their
provenance, and applying and nesting them. Arithmetic and files: test_steering_vector.py; bad
input: test_steering_errors.py; contexts: test_steering_contexts.py.

The reference never goes through hookedmlp's forward, hooks or ``first_example``: the
exemplar indices come from the raw label list, and the network is a fresh
``nn.Sequential`` into which the shipped weights are copied.
"""

import re

import pytest
import torch
from torch import nn

from hookedmlp import SteeringVector
from hookedmlp.data import load_mnist
from hookedmlp.steering import model_fingerprint

STUDY_HOOKS = ["layer0.post", "layer1.post", "layer2.pre", "layer3.post"]


# -- fixtures and the plain-torch reference ---------------------------------------------


@pytest.fixture(scope="module")
def plain(model) -> nn.Sequential:
    """A fresh Sequential (no module shared with ``model``) holding copies of its weights."""
    seq = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
    )
    sd = model.state_dict()
    with torch.no_grad():
        for i, k in ((1, 0), (3, 2), (5, 4)):
            seq[i].weight.copy_(sd[f"layer{k}.module.weight"])
            seq[i].bias.copy_(sd[f"layer{k}.module.bias"])
    assert all(p.data_ptr() != q.data_ptr() for p in seq.parameters() for q in model.parameters())
    return seq.eval()


@pytest.fixture(scope="module")
def train():
    images, labels = load_mnist("train")
    return images, labels


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """The first 500 test images, for the comparisons with plain torch."""
    return load_mnist("test")[0][:500].clone()


@pytest.fixture(scope="module")
def x(images) -> torch.Tensor:
    """A smaller batch for checks that the model is unchanged."""
    return images[:64].clone()


def first_index(labels: torch.Tensor, digit: int) -> int:
    return labels.tolist().index(digit)


def split(hook: str) -> int:
    """Index into ``plain`` (Flatten first) right after which the activation at ``hook`` lives."""
    layer, where = hook.split(".")
    i = int(layer.removeprefix("layer"))
    return i + 1 if where == "pre" else i + 2


def plain_forward(seq: nn.Sequential, x: torch.Tensor, edits=None) -> torch.Tensor:
    """Module by module through ``seq`` (after its Flatten); ``edits[hook](act)`` at hooks."""
    edits = edits or {}
    h = x.reshape(x.shape[0], -1)
    with torch.no_grad():
        for i, m in enumerate(list(seq)[1:]):
            if f"layer{i}.pre" in edits:
                h = edits[f"layer{i}.pre"](h)
            h = m(h)
            if f"layer{i}.post" in edits:
                h = edits[f"layer{i}.post"](h)
    return h


def reference_vector(seq, train, a: int, b: int, hook: str) -> torch.Tensor:
    imgs, labels = train
    head = seq[: split(hook)]
    with torch.no_grad():
        act_a = head(imgs[first_index(labels, a)].unsqueeze(0))[0]
        act_b = head(imgs[first_index(labels, b)].unsqueeze(0))[0]
    return act_a - act_b


def reference_steered(seq, train, images, a, b, hook) -> torch.Tensor:
    """The study's method in plain torch: run to the hook, add the difference, run on."""
    v = reference_vector(seq, train, a, b, hook)
    k = split(hook)
    with torch.no_grad():
        return seq[k:](seq[:k](images) + v)


def assert_untouched(model, x, base):
    assert model.attached_hooks() == []
    assert torch.equal(model(x), base)


# -- the study's method, bit for bit ------------------------------------------------------


def test_first_exemplars_are_indices_7_and_3(train):
    _, labels = train
    assert first_index(labels, 3) == 7
    assert first_index(labels, 1) == 3


def test_plain_reference_is_the_model(model, plain, images):
    with torch.no_grad():
        assert torch.equal(plain(images), model(images))


@pytest.mark.parametrize("hook", STUDY_HOOKS)
def test_steer_equals_plain_torch_bit_for_bit(model, plain, train, images, hook):
    ref = reference_steered(plain, train, images, 3, 1, hook)
    v = model.steering_vector(3, 1, hook)
    assert torch.equal(v[hook], reference_vector(plain, train, 3, 1, hook))
    with model.steer(v):
        steered = model(images)
    with model.steer(a=3, b=1, hook=hook):
        steered_ab = model(images)
    assert torch.equal(steered, ref)
    assert torch.equal(steered_ab, ref)
    assert not torch.equal(ref, plain(images))  # the steering does something
    assert model.attached_hooks() == []


def test_steer_exactly_as_in_the_issue(model, plain, train, images):
    with model.steer(a=3, b=1, hook="layer0.post"):
        logits = model(images)
    assert torch.equal(logits, reference_steered(plain, train, images, 3, 1, "layer0.post"))


@pytest.mark.parametrize("hook", STUDY_HOOKS)
def test_steering_the_b_exemplar_gives_the_a_exemplar(model, train, hook):
    """act(1) + (act(3) - act(1)) = act(3): the steered first 1 is classified like the first 3."""
    imgs, labels = train
    one, three = imgs[first_index(labels, 1)].unsqueeze(0), imgs[first_index(labels, 3)].unsqueeze(0)
    with model.steer(a=3, b=1, hook=hook):
        out = model(one)
    torch.testing.assert_close(out, model(three), rtol=1e-5, atol=1e-4)
    assert int(out.argmax()) == int(model(three).argmax())


@pytest.mark.parametrize("k", [1, 5])
def test_exemplar_k_takes_the_kth_training_image_of_each_digit(model, plain, train, images, k):
    imgs, labels = train
    rows = [[i for i, c in enumerate(labels.tolist()) if c == d][k] for d in (3, 1)]
    head = plain[: split("layer0.post")]
    with torch.no_grad():
        expected = head(imgs[rows[0]].unsqueeze(0))[0] - head(imgs[rows[1]].unsqueeze(0))[0]
    v = model.steering_vector(3, 1, "layer0.post", exemplar=k)
    assert torch.equal(v["layer0.post"], expected)
    assert (v.meta["exemplar"], v.meta["data"], v.meta["n_examples"]) == (k, "MNIST train", [1, 1])
    assert f"from example {k + 1} of 3 and of 1 in MNIST train (method=first, exemplar={k})" in repr(v)
    with model.steer(a=3, b=1, hook="layer0.post", exemplar=k):
        steered = model(images)
    with torch.no_grad():
        assert torch.equal(steered, plain[2:](plain[:2](images) + expected))


# -- other ways to build a vector -------------------------------------------------------


def test_mean_method_equals_class_means_by_hand(model, plain, train):
    imgs, labels = train
    hooks = ["layer0.post", "layer3.post"]
    v = model.steering_vector(3, 1, hooks, method="mean")
    for hook in hooks:
        head = plain[: split(hook)]
        with torch.no_grad():
            ref = head(imgs[labels == 3]).mean(0) - head(imgs[labels == 1]).mean(0)
        torch.testing.assert_close(v[hook], ref, rtol=1e-5, atol=1e-5)
    assert v.meta["method"] == "mean"
    assert v.meta["n_examples"] == [int((labels == 3).sum()), int((labels == 1).sum())]
    assert not torch.allclose(v["layer0.post"], model.steering_vector(3, 1, "layer0.post")["layer0.post"])


@pytest.mark.parametrize("shape", [(784,), (1, 28, 28), (28, 28), (1, 784), (1, 1, 28, 28)])
def test_single_image_tensor_inputs(model, train, shape):
    imgs, labels = train
    three, one = imgs[first_index(labels, 3)], imgs[first_index(labels, 1)]
    v = model.steering_vector(three.reshape(shape), one.reshape(shape), "layer0.post")
    torch.testing.assert_close(
        v["layer0.post"], model.steering_vector(3, 1, "layer0.post")["layer0.post"], rtol=0, atol=1e-6
    )
    assert v.meta["n_examples"] == [1, 1]
    assert v.label == "input(n=1) - input(n=1)"


def test_batch_tensor_inputs_are_averaged(model, plain, train):
    imgs, labels = train
    threes, ones = imgs[labels == 3][:7], imgs[labels == 1][:4]
    v = model.steering_vector(threes.reshape(7, 28, 28), ones.reshape(4, 1, 28, 28), ["layer0.post", "layer3.post"])
    for hook in ("layer0.post", "layer3.post"):
        head = plain[: split(hook)]
        with torch.no_grad():
            ref = head(threes).mean(0) - head(ones).mean(0)
        torch.testing.assert_close(v[hook], ref, rtol=1e-6, atol=1e-6)
    assert v.meta["n_examples"] == [7, 4]
    mixed = model.steering_vector(imgs[first_index(labels, 3)], 1, "layer0.post")
    torch.testing.assert_close(
        mixed["layer0.post"], model.steering_vector(3, 1, "layer0.post")["layer0.post"], rtol=0, atol=1e-6
    )
    assert mixed.label == "input(n=1) - 1"


@pytest.mark.parametrize("coeff", [2.5, -1.0, 0.0, 3])
def test_coeff_scales(model, coeff):
    v = model.steering_vector(3, 1, "layer2.pre")
    scaled = model.steering_vector(3, 1, "layer2.pre", coeff=coeff)
    assert torch.equal(scaled["layer2.pre"], float(coeff) * v["layer2.pre"])
    assert scaled.meta["coeff"] == coeff


def test_multiple_hooks_give_one_vector(model, plain, train, images):
    hooks = ["layer0.post", "layer2.pre", "layer3.post"]
    v = model.steering_vector(3, 1, hooks)
    assert list(v) == hooks and len(v) == 3
    for hook in hooks:
        assert torch.equal(v[hook], model.steering_vector(3, 1, hook)[hook])
    ref = plain_forward(plain, images, {h: (lambda act, h=h: act + v[h]) for h in hooks})
    with model.steer(v):
        assert torch.equal(model(images), ref)
        assert len(model.attached_hooks()) == 3
    glob = model.steering_vector(3, 1, "layer[0-3].post")
    assert list(glob) == [f"layer{i}.post" for i in range(4)]


def test_multiple_hooks_of_different_widths_from_tensors(model, train):
    imgs, labels = train
    three, one = imgs[first_index(labels, 3)], imgs[first_index(labels, 1)]
    v = model.steering_vector(three, one, ["layer0.post", "layer4.post"])
    assert [t.shape[0] for t in v.values()] == [512, 10]


@pytest.mark.parametrize("method", ["first", "mean"])
def test_multiple_hooks_of_different_widths_from_digits(model, method):
    v = model.steering_vector(3, 1, ["layer0.post", "layer4.post"], method=method)
    assert [t.shape[0] for t in v.values()] == [512, 10]


def test_vector_is_computed_without_active_hooks(model):
    v = model.steering_vector(3, 1, ["layer0.post", "layer3.post"])
    with model.steer(v), model.hooks(fwd_hooks=[("layer2.post", lambda act, hook: act * 0)]):
        inside = model.steering_vector(3, 1, ["layer0.post", "layer3.post"])
    for hook in v:
        assert torch.equal(inside[hook], v[hook])


def test_provenance_in_meta_and_repr(model):
    v = model.steering_vector(3, 1, "layer0.post")
    norm = float(v["layer0.post"].norm())
    assert v.meta["hooks"] == ["layer0.post"]
    assert (v.meta["a"], v.meta["b"], v.meta["method"]) == ("3", "1", "first")
    assert v.meta["n_examples"] == [1, 1]
    assert v.meta["norm"]["layer0.post"] == pytest.approx(norm, abs=1e-5)
    assert v.meta["model"] == model_fingerprint(model)
    assert re.fullmatch(r"[0-9a-f]{12}", v.meta["model"])
    assert v.label == "3 - 1"
    r = repr(v)
    assert r == (
        "SteeringVector('3 - 1', at layer0.post [512], from the first example of 3 and of 1 in MNIST train "
        f"(method=first), coeff=1.0, model={model_fingerprint(model)}, norm={norm:.4g})"
    )  # where the exemplars came from, in words: MNIST's training images unless data= says otherwise
    m = model.steering_vector(4, 9, "layer3.post", method="mean", coeff=2.0)
    n4, n9 = m.meta["n_examples"]
    assert (n4, n9) == (5842, 5949)
    assert f"from the mean of {n4} examples of 4 and {n9} of 9 in MNIST train (method=mean), coeff=2.0" in repr(m)
    assert "from the mean of 5842 examples of 4 and 5949 of 9 in MNIST train (method=mean), coeff: 2.0" in (
        m._repr_html_()
    )
    assert "from" not in repr(v + m) and "from" not in repr(SteeringVector({"layer0.post": torch.ones(3)}))


# -- applying -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def v1(model):
    return model.steering_vector(3, 1, "layer0.post")


@pytest.fixture(scope="module")
def v2(model):
    return model.steering_vector(4, 9, ["layer0.post", "layer2.pre"])


def test_three_ways_to_apply_agree(model, v1, x):
    base = model(x)
    with v1.apply(model) as m:
        assert m is model
        out_apply = model(x)
    with model.steer(v1):
        out_steer = model(x)
    with model.steer(a=3, b=1, hook="layer0.post", coeff=1.0, method="first"):
        out_ab = model(x)
    assert torch.equal(out_apply, out_steer) and torch.equal(out_steer, out_ab)
    assert not torch.equal(out_apply, base)
    assert_untouched(model, x, base)


def test_coeff_when_applying(model, v1, x):
    with model.steer(2 * v1):
        ref = model(x)
    with model.steer(v1, coeff=2.0):
        assert torch.equal(model(x), ref)
    with v1.apply(model, coeff=2.0):
        assert torch.equal(model(x), ref)
    with model.steer(a=3, b=1, hook="layer0.post", coeff=2.0):
        assert torch.equal(model(x), ref)


def test_nested_contexts_add_up_at_one_hook(model, v1, v2, x):
    with model.steer(v1 + v2):
        ref = model(x)
    with model.steer(v1):
        with model.steer(v2):
            out = model(x)
            assert len(model.attached_hooks()) == 3
        assert len(model.attached_hooks()) == 1
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_nested_contexts_at_different_hooks_exact(model, plain, x):
    a = model.steering_vector(3, 1, "layer0.post")
    b = model.steering_vector(7, 2, "layer3.post")
    ref = plain_forward(
        plain, x, {"layer0.post": lambda h: h + a["layer0.post"], "layer3.post": lambda h: h + b["layer3.post"]}
    )
    with model.steer(a), model.steer(b):
        assert torch.equal(model(x), ref)
    with model.steer(b), model.steer(a):
        assert torch.equal(model(x), ref)
    with model.steer(a + b):
        assert torch.equal(model(x), ref)
