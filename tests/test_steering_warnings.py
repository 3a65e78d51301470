"""model_fingerprint (memoised, dtype-free, following every edit of a weight) and the two
SteeringWarnings: a vector built on other weights, and a module that is random or
batch-dependent in training mode (only then: a plain MLP in training mode does not warn)."""

import re
import warnings

import pytest
import torch
from torch import nn

from hookedmlp import (
    HookedMLP,
    ResidualConfig,
    ResidualMLP,
    SteeringVector,
    SteeringWarning,
)
from hookedmlp.files import fingerprint as fingerprint_module
from hookedmlp.steering import model_fingerprint


@pytest.fixture
def hashes(monkeypatch):
    """Counts the SHA-256 computations model_fingerprint does (in hookedmlp.files.fingerprint, which it calls)."""
    calls = []
    real = fingerprint_module.hashlib.sha256

    def counting():
        calls.append(1)
        return real()

    monkeypatch.setattr(fingerprint_module.hashlib, "sha256", counting)
    return calls


def fresh_tiny() -> HookedMLP:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return HookedMLP.from_module(nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))).eval()


# -- the fingerprint ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build", [fresh_tiny, lambda: ResidualMLP(ResidualConfig(16, 8, 8, 2, 3)).eval()], ids=["chain", "residual"]
)
def test_fingerprint_is_memoised_and_follows_every_edit(hashes, build):
    model = build()
    fp = model_fingerprint(model)
    assert len(hashes) == 1
    for _ in range(100):
        assert model_fingerprint(model) == fp
    assert len(hashes) == 1  # free per call until a weight changes
    weight = next(model.parameters())
    original = weight[0, 0].item()
    with torch.no_grad():
        weight[0, 0] += 1.0  # in place
    edited = model_fingerprint(model)
    assert edited != fp and len(hashes) == 2
    with torch.no_grad():
        weight[0, 0] = original  # the same values again: the same fingerprint (it hashes values, not versions)
    assert model_fingerprint(model) == fp
    x, y = torch.rand(4, 16), torch.tensor([0, 1, 2, 0])
    for opt in (torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.Adam(model.parameters(), lr=0.1)):
        before = model_fingerprint(model)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        assert model_fingerprint(model) != before


def test_fingerprint_follows_replaced_weights_and_modules():
    model = fresh_tiny()
    fp = model_fingerprint(model)
    old = model.layer0.module.weight
    model.layer0.module.weight = nn.Parameter(old.detach() + 1)
    assert model_fingerprint(model) != fp
    model.layer0.module.weight = old
    assert model_fingerprint(model) == fp
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        model.layer2.module = nn.Linear(8, 3)
    assert model_fingerprint(model) != fp


def test_fingerprint_is_dtype_free_and_same_weights_do_not_warn(model):
    v = model.steering_vector(3, 1, "layer0.post")
    other = HookedMLP.from_pretrained("mnist-mlp").double()
    assert model_fingerprint(other) == model_fingerprint(model) == v.meta["model"]
    x = torch.rand(3, 784, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with other.steer(v):
            steered = other(x)
    seq = other.to_sequential()  # plain modules: Flatten, Linear, ReLU, ...
    with torch.no_grad():
        assert torch.equal(steered, seq[2:](seq[:2](x) + v["layer0.post"].double()))
    assert model_fingerprint(other.float()) == v.meta["model"]


def test_vector_from_another_model_warns(model):
    v1 = model.steering_vector(3, 1, "layer0.post")
    other = HookedMLP.from_pretrained("mnist-mlp")
    with torch.no_grad():
        other.layer0.module.bias.add_(0.01)
    with pytest.warns(
        SteeringWarning, match=f"built on model {v1.meta['model']}, applied to model {model_fingerprint(other)}"
    ):
        with other.steer(v1):
            pass
    assert other.attached_hooks() == []


# -- training mode ---------------------------------------------------------------------------------


def test_plain_mlp_in_training_mode_does_not_warn(model):
    m = HookedMLP.from_pretrained("mnist-mlp").train()
    wrapped = HookedMLP.from_module(nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)))
    assert m.training and wrapped.training  # PyTorch's convention: a wrapped module keeps its mode
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v = m.steering_vector(3, 1, "layer0.post")
        with m.steer(v), m.steer(a=3, b=1, hook="layer2.post"):
            pass
        with wrapped.steer(a=torch.ones(16), b=torch.zeros(16), hook="layer0.post"):
            pass


@pytest.mark.parametrize(
    "module, path, kind",
    [
        (nn.Dropout(0.5), "layer2.module", "Dropout"),
        (nn.BatchNorm1d(8), "layer2.module", "BatchNorm1d"),
        (nn.Sequential(nn.Identity(), nn.Dropout(0.1)), "layer3.module", "Dropout"),  # nested: one layer each
    ],
)
def test_training_mode_warns_where_a_module_behaves_differently(module, path, kind):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = HookedMLP.from_module(nn.Sequential(nn.Linear(16, 8), nn.ReLU(), module, nn.Linear(8, 3)))
    a, b = torch.rand(4, 16), torch.rand(4, 16)
    expected = re.escape(
        f"a model in training mode: {path} ({kind}) compute something else there (dropout is random, "
        "batch norm uses the batch's statistics); call model.eval() first"
    )
    with pytest.warns(SteeringWarning, match="^building a steering vector on " + expected):
        v = m.steering_vector(a, b, "layer0.post")
    with pytest.warns(SteeringWarning, match="^steering " + expected):
        with m.steer(v):
            pass
    m.eval()
    m.get_submodule(path).train()  # the model says eval, but this module computes in training mode
    with pytest.warns(SteeringWarning, match=f"{path} \\({kind}\\)"):
        with m.steer(v):
            pass
    m.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with m.steer(v):
            pass
    assert m.attached_hooks() == []


def test_eval_model_does_not_warn(model):
    v = SteeringVector({"layer0.post": torch.ones(512)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with model.steer(model.steering_vector(3, 1, "layer0.post")), model.steer(v):
            pass
