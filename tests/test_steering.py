"""Steering vectors against an independent plain-torch computation of the study's method,
SteeringVector arithmetic / files / provenance, applying and nesting, and bad input.

The reference never goes through hookedmlp's forward, hooks or ``first_example``: the
exemplar indices come from the raw label list, and the network is a fresh
``nn.Sequential`` into which the shipped weights are copied.
"""

import math
import pickle
import re

import pytest
import torch
from torch import nn

from hookedmlp import (
    CheckpointError,
    HookedMLP,
    HookNameError,
    InputDtypeError,
    ShapeError,
    SteeringError,
    SteeringVector,
    SteeringWarning,
)
from hookedmlp.data import load_mnist
from hookedmlp.steering import model_fingerprint

STUDY_HOOKS = ["layer0.post", "layer1.post", "layer2.pre", "layer3.post"]


# -- fixtures and the plain-torch reference ---------------------------------------------

@pytest.fixture(scope="module")
def plain(model) -> nn.Sequential:
    """A fresh Sequential (no module shared with ``model``) holding copies of its weights."""
    seq = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
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
    torch.testing.assert_close(v["layer0.post"], model.steering_vector(3, 1, "layer0.post")["layer0.post"], rtol=0, atol=1e-6)
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
    torch.testing.assert_close(mixed["layer0.post"], model.steering_vector(3, 1, "layer0.post")["layer0.post"], rtol=0, atol=1e-6)
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
    for part in ("'3 - 1'", "layer0.post [512]", "method=first", "n_examples=[1, 1]",
                 f"model={model_fingerprint(model)}", f"norm={norm:.4g}"):
        assert part in r, (part, r)
    m = model.steering_vector(4, 9, "layer3.post", method="mean", coeff=2.0)
    assert "method=mean" in repr(m) and "coeff=2.0" in repr(m) and "'4 - 9'" in repr(m)


def test_fingerprint_depends_on_weights(model):
    other = HookedMLP.from_pretrained("mnist-mlp")
    assert model_fingerprint(other) == model_fingerprint(model)
    with torch.no_grad():
        other.layer4.module.bias[0] += 1e-3
    assert model_fingerprint(other) != model_fingerprint(model)


# -- arithmetic -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def v1(model):
    return model.steering_vector(3, 1, "layer0.post")


@pytest.fixture(scope="module")
def v2(model):
    return model.steering_vector(4, 9, ["layer0.post", "layer2.pre"])


def test_add_unites_hooks_and_sums_shared(v1, v2, model):
    s = v1 + v2
    assert list(s) == ["layer0.post", "layer2.pre"]
    assert torch.equal(s["layer0.post"], v1["layer0.post"] + v2["layer0.post"])
    assert torch.equal(s["layer2.pre"], v2["layer2.pre"])
    assert s.label == "(3 - 1) + (4 - 9)"
    assert s.meta["model"] == model_fingerprint(model)
    assert torch.equal(v1["layer0.post"], model.steering_vector(3, 1, "layer0.post")["layer0.post"])  # operands unchanged


def test_sub(v1, v2):
    d = v1 - v2
    assert list(d) == ["layer0.post", "layer2.pre"]
    assert torch.equal(d["layer0.post"], v1["layer0.post"] - v2["layer0.post"])
    assert torch.equal(d["layer2.pre"], -v2["layer2.pre"])
    z = v1 - v1
    assert torch.equal(z["layer0.post"], torch.zeros(512))


def test_scalar_multiplication_and_negation(v2):
    for w in (2.5 * v2, v2 * 2.5):
        assert list(w) == list(v2)
        for hook in v2:
            assert torch.equal(w[hook], 2.5 * v2[hook])
        assert w.meta["coeff"] == 2.5
        assert w.label == "2.5*(4 - 9)"
    n = -v2
    for hook in v2:
        assert torch.equal(n[hook], -v2[hook])
    assert torch.equal((2 * v2)["layer0.post"], 2 * v2["layer0.post"])
    with pytest.raises(SteeringError, match="finite"):
        v2 * math.nan
    with pytest.raises(TypeError):
        v2 + 1.0


def test_combining_different_widths_at_one_hook_fails():
    a = SteeringVector({"layer0.post": torch.ones(3)})
    b = SteeringVector({"layer0.post": torch.ones(4)})
    with pytest.raises(ShapeError, match=r"\[3\] and \[4\]"):
        a + b


def test_to_dtype_and_device(v2):
    d = v2.to(dtype=torch.float64)
    for hook in v2:
        assert d[hook].dtype == torch.float64
        assert torch.equal(d[hook], v2[hook].double())
        assert v2[hook].dtype == torch.float32
    for dev in ("cpu", torch.device("cpu")):
        c = v2.to(dev)
        assert all(c[h].device.type == "cpu" and torch.equal(c[h], v2[h]) for h in v2)
    assert d.label == v2.label and d.meta["model"] == v2.meta["model"]


def test_constructor_checks():
    with pytest.raises(SteeringError, match="at least one hook"):
        SteeringVector({})
    with pytest.raises(ShapeError, match=r"1-D float tensor \[d\], got shape \[2, 3\]"):
        SteeringVector({"layer0.post": torch.ones(2, 3)})
    with pytest.raises(ShapeError, match="1-D float tensor"):
        SteeringVector({"layer0.post": torch.ones(3, dtype=torch.int64)})
    with pytest.raises(SteeringError, match="NaN or infinite"):
        SteeringVector({"layer0.post": torch.tensor([1.0, math.inf])})
    with pytest.raises(HookNameError, match="did you mean 'layer0.post'"):
        SteeringVector({"layer0.post": torch.ones(3)})["layer0.pst"]


# -- files ----------------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path, v1, v2, model, images):
    for v in (v1, 2.5 * v1 + v2, v2.to(dtype=torch.float64)):
        path = tmp_path / "vec.pt"
        v.save(path)
        w = SteeringVector.load(path)
        assert list(w) == list(v)
        for hook in v:
            assert w[hook].dtype == v[hook].dtype
            assert torch.equal(w[hook], v[hook])
        assert w.meta == v.meta
        assert repr(w) == repr(v)
    w = SteeringVector.load(path, device="cpu")
    assert all(w[h].device.type == "cpu" for h in w)
    with model.steer(v1 + v2):
        expected = model(images)
    v = v1 + v2
    v.save(tmp_path / "sum.pt")
    with model.steer(SteeringVector.load(tmp_path / "sum.pt")):
        assert torch.equal(model(images), expected)


class _Payload:
    """Unpickling this calls open(marker, "w"), i.e. creates the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_load_refuses_pickled_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "hookedmlp.steering_vector", "version": 1,
                "vectors": {"layer0.post": _Payload(str(marker))}, "meta": "{}"}, evil)
    with pytest.raises(CheckpointError, match="refusing to load"):
        SteeringVector.load(evil)
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(_Payload(str(marker)), protocol=2))
    with pytest.raises(CheckpointError):
        SteeringVector.load(raw)
    assert not marker.exists()
    # the payload is live: an unsafe load does create the marker
    control = tmp_path / "control"
    torch.save(_Payload(str(control)), tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False).close()
    assert control.exists()


def test_load_truncated_or_foreign_files(tmp_path, v2):
    good = tmp_path / "good.pt"
    v2.save(good)
    data = good.read_bytes()
    for n in (len(data) // 2, 100, 0):
        bad = tmp_path / f"cut{n}.pt"
        bad.write_bytes(data[:n])
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            SteeringVector.load(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(3)}, other)
    with pytest.raises(CheckpointError, match="not a hookedmlp steering vector"):
        SteeringVector.load(other)
    with pytest.raises(CheckpointError, match="does not exist"):
        SteeringVector.load(tmp_path / "missing.pt")


# -- applying -------------------------------------------------------------------------------

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
    ref = plain_forward(plain, x, {"layer0.post": lambda h: h + a["layer0.post"],
                                        "layer3.post": lambda h: h + b["layer3.post"]})
    with model.steer(a), model.steer(b):
        assert torch.equal(model(x), ref)
    with model.steer(b), model.steer(a):
        assert torch.equal(model(x), ref)
    with model.steer(a + b):
        assert torch.equal(model(x), ref)


def test_leaving_restores_bit_for_bit_also_on_exception(model, v2, x):
    base = model(x)
    before = model.attached_hooks()
    with model.steer(v2):
        assert not torch.equal(model(x), base)
    assert_untouched(model, x, base)
    with pytest.raises(RuntimeError, match="boom"):
        with model.steer(v2), model.steer(a=3, b=1, hook="layer3.post"):
            model(x)
            raise RuntimeError("boom")
    assert model.attached_hooks() == before
    assert_untouched(model, x, base)


def test_user_and_permanent_hooks_survive(model, plain, v1, x):
    def halve(act, hook):
        return act * 0.5

    def shift(act, hook):
        return act + 0.25

    user = model.add_hook("layer2.post", halve)
    perm = model.add_hook("layer3.pre", shift, is_permanent=True)
    try:
        before = model.attached_hooks()
        base = model(x)
        assert torch.equal(base, plain_forward(plain, x, {"layer2.post": lambda h: h * 0.5, "layer3.pre": lambda h: h + 0.25}))
        with model.steer(v1):
            ref = plain_forward(plain, x, {"layer0.post": lambda h: h + v1["layer0.post"],
                                                "layer2.post": lambda h: h * 0.5, "layer3.pre": lambda h: h + 0.25})
            assert torch.equal(model(x), ref)
        with pytest.raises(KeyError):
            with model.steer(v1):
                raise KeyError("inside")
        after = model.attached_hooks()
        assert after == before and [h.id for h in after] == [user.id, perm.id]
        assert user.attached and perm.attached
        assert torch.equal(model(x), base)
    finally:
        user.remove()
        perm.remove()
    assert model.attached_hooks() == []


# -- bad input: a clear error, and nothing changed -------------------------------------------

@pytest.fixture
def base(model, x):
    return model(x)


@pytest.mark.parametrize("bad", [10, -1, True, False, 3.5, "3", None])
@pytest.mark.parametrize("where", ["a", "b"])
def test_bad_digit(model, x, base, bad, where):
    kwargs = {"a": 3, "b": 1, where: bad}
    if bad is None:
        with pytest.raises(TypeError, match=f"missing {where}"):
            model.steer(**kwargs, hook="layer0.post")
        assert_untouched(model, x, base)
        return
    # 10, -1, True: SteeringError. 3.5 and "3" also violate the annotation a: int | Tensor,
    # which the test run's runtime type checks (jaxtyping + typeguard) report first.
    pattern = r"digit must be in 0-9|must be digits 0-9 or input tensors|parameter '" + where + "'"
    for build in (lambda: model.steering_vector(kwargs["a"], kwargs["b"], "layer0.post"),
                  lambda: model.steer(**kwargs, hook="layer0.post").__enter__()):
        with pytest.raises((SteeringError, TypeError), match=pattern) as info:
            build()
        if isinstance(bad, int):
            assert isinstance(info.value, SteeringError)
    assert_untouched(model, x, base)


@pytest.mark.parametrize("shape", [(5,), (27, 28), (2, 1, 27, 28), (783,), (2, 3, 28, 28)])
def test_bad_image_shape(model, x, base, shape):
    with pytest.raises(ShapeError, match=r"expected input of shape .*got " + re.escape(str(list(shape)))):
        model.steering_vector(torch.zeros(shape), 1, "layer0.post")
    with pytest.raises(ShapeError):
        model.steer(a=3, b=torch.zeros(shape), hook="layer0.post").__enter__()
    assert_untouched(model, x, base)


def test_bad_image_dtype(model, x, base):
    with pytest.raises(InputDtypeError, match="floating-point"):
        model.steering_vector(torch.zeros(784, dtype=torch.uint8), 1, "layer0.post")
    with pytest.raises(InputDtypeError, match="float64"):
        model.steering_vector(torch.zeros(784, dtype=torch.float64), 1, "layer0.post")
    assert_untouched(model, x, base)


@pytest.mark.parametrize("hook", ["layer0.pst", ["layer0.post", "layer0.pst"], "layer0.pst*"])
def test_unknown_hook(model, x, base, hook):
    with pytest.raises(HookNameError, match=r"did you mean 'layer0.post'"):
        model.steering_vector(3, 1, hook)
    with pytest.raises(HookNameError, match=r"did you mean 'layer0.post'"):
        model.steer(a=3, b=1, hook=hook).__enter__()
    assert_untouched(model, x, base)


def test_empty_hook_list(model, x, base):
    with pytest.raises((HookNameError, SteeringError), match="empty|no hook|at least one"):
        model.steering_vector(3, 1, [])
    with pytest.raises((HookNameError, SteeringError), match="empty|no hook|at least one"):
        model.steer(a=3, b=1, hook=[]).__enter__()
    assert_untouched(model, x, base)


@pytest.mark.parametrize("coeff", [math.nan, math.inf, -math.inf])
def test_non_finite_coeff(model, v1, x, base, coeff):
    with pytest.raises(SteeringError, match="coeff must be finite"):
        model.steering_vector(3, 1, "layer0.post", coeff=coeff)
    with pytest.raises(SteeringError, match="coeff must be finite"):
        model.steer(a=3, b=1, hook="layer0.post", coeff=coeff).__enter__()
    with pytest.raises(SteeringError, match="coeff must be finite"):
        model.steer(v1, coeff=coeff)
    with pytest.raises(SteeringError, match="coeff must be finite"):
        with v1.apply(model, coeff=coeff):
            pass
    assert_untouched(model, x, base)


def test_unknown_method(model, x, base):
    with pytest.raises(SteeringError, match="method must be one of 'first', 'mean', got 'median'"):
        model.steer(a=3, b=1, hook="layer0.post", method="median").__enter__()
    assert_untouched(model, x, base)


def test_vector_of_wrong_width(model, x, base):
    v = SteeringVector({"layer0.post": torch.ones(100)})
    with pytest.raises(ShapeError, match=r"shape \[100\].*\[batch, 512\]; expected \[512\]"):
        with model.steer(v):
            pass
    w = SteeringVector({"layer0.post": torch.ones(512), "layer4.post": torch.ones(512)})  # second hook wrong
    with pytest.raises(ShapeError, match=r"'layer4.post' has shape \[512\].*expected \[10\]"):
        with w.apply(model):
            pass
    assert_untouched(model, x, base)


@pytest.mark.parametrize("hook", ["layer7.post", "layer0.pst", "blocks.0.hook_resid_pre"])
def test_vector_for_a_hook_the_model_lacks(model, x, base, hook):
    v = SteeringVector({"layer0.post": torch.ones(512), hook: torch.ones(512)})
    with pytest.raises(HookNameError, match=f"{re.escape(hook)}'?, which this model lacks"):
        with model.steer(v):
            pass
    assert_untouched(model, x, base)


def test_float64_vector_is_moved_to_model_dtype(model, v1, x, base):
    v64 = v1.to(dtype=torch.float64)
    with model.steer(v1):
        ref = model(x)
    with model.steer(v64):
        out = model(x)
    assert out.dtype == torch.float32
    assert torch.equal(out, ref)
    assert_untouched(model, x, base)


def test_steer_argument_mistakes(model, v1, x, base):
    with pytest.raises(TypeError, match="takes a SteeringVector"):
        model.steer({"layer0.post": torch.ones(512)})
    with pytest.raises(TypeError, match="not both"):
        model.steer(v1, a=3)
    with pytest.raises(TypeError, match="missing b, hook"):
        model.steer(a=3)
    assert_untouched(model, x, base)


def test_training_mode_warns():
    m = HookedMLP.from_pretrained("mnist-mlp").train()
    v = m.steering_vector(3, 1, "layer0.post")
    with pytest.warns(SteeringWarning, match="training mode"):
        with m.steer(v):
            pass
    with pytest.warns(SteeringWarning, match="training mode"):
        with m.steer(a=3, b=1, hook="layer0.post"):
            pass
    assert m.attached_hooks() == []


def test_vector_from_another_model_warns(model, v1, x):
    other = HookedMLP.from_pretrained("mnist-mlp")
    with torch.no_grad():
        other.layer0.module.bias.add_(0.01)
    with pytest.warns(SteeringWarning, match=f"built on model {v1.meta['model']}"):
        with other.steer(v1):
            pass
    assert other.attached_hooks() == []


def test_eval_model_does_not_warn(model, v1):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with model.steer(v1):
            pass


@pytest.mark.parametrize("payload", [
    {"meta": "{}"},
    {"meta": "[1, 2]", "vectors": {"layer0.post": torch.ones(3)}},
    {"meta": "{}", "vectors": [torch.ones(3)]},
], ids=["no-vectors", "meta-not-a-dict", "vectors-not-a-dict"])
def test_load_malformed_vector_file(tmp_path, payload):
    path = tmp_path / "malformed.pt"
    torch.save({"format": "hookedmlp.steering_vector", "version": 1, **payload}, path)
    with pytest.raises(CheckpointError, match="malformed.pt"):
        SteeringVector.load(path)
