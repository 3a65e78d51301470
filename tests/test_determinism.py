"""Same inputs, same numbers, bit for bit (issue 6, "Reliability and safety").

Seeded training twice giving identical weights is already tested exactly by
tests/test_train.py::test_same_seed_gives_bit_identical_weights, so it is not repeated
here. This file covers the analysis: ``steering_grid`` on the shipped model with a
300-image subset, ``evaluate_additions`` and class-mean steering vectors, each computed
twice, must agree exactly (``np.array_equal`` / ``torch.equal``) -- also when the global
RNG state differs between the two runs, and when hooks were attached and removed in
between.
"""

import dataclasses

import numpy as np
import pytest
import torch

from hookedmlp import HookedMLP
from hookedmlp.data import load_mnist
from hookedmlp_analysis.engine import Addition, evaluate_additions
from hookedmlp_analysis.grid import steering_grid

N = 300


@pytest.fixture(scope="module")
def model() -> HookedMLP:
    return HookedMLP.from_pretrained("mnist-mlp").eval()


@pytest.fixture(scope="module")
def subset() -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = load_mnist("test")
    return images[:N].clone(), labels[:N].clone()


def _disturb(model: HookedMLP) -> None:
    """Change what should not matter: the global RNG state, and hooks attached then removed."""
    torch.manual_seed(12345)
    torch.rand(100)
    with model.hooks(fwd_hooks=[("*", lambda act, hook: act * 2.0)]):
        model(torch.rand(2, 784))


def _arrays_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        va, vb = a[k], b[k]
        if isinstance(va, dict):
            _arrays_equal(va, vb)
        elif isinstance(va, np.ndarray):
            assert va.dtype == vb.dtype and np.array_equal(va, vb), f"{k} differs between two identical runs"
        else:
            assert va == vb, k


@pytest.mark.parametrize("hook", ["layer0.post", "layer2.pre"])
def test_steering_grid_twice_is_identical(model, subset, hook):
    first = steering_grid(model, hook=hook, test=subset, keep_distributions=True)
    _disturb(model)
    second = steering_grid(model, hook=hook, test=subset, keep_distributions=True)
    assert model.attached_hooks() == []
    a, b = dataclasses.asdict(first), dataclasses.asdict(second)
    assert all(isinstance(a["metrics"][m], np.ndarray) for m in ("loss", "flip_rate", "accuracy_other", "kl"))
    assert isinstance(a["distributions"], np.ndarray) and isinstance(a["normal"]["loss"], np.ndarray)
    _arrays_equal(a, b)
    assert np.isfinite(first.loss).all() and first.loss.shape == (10, 10)


def _additions(model: HookedMLP) -> list[Addition]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i, hook in enumerate(model.hook_names):  # every hook point, the logits and the input included
        shape = model.activation_shape(hook)
        out.append(Addition(hook, torch.randn(shape, generator=g), i % 10, (i + 3) % 10))
        out.append(Addition(hook, torch.zeros(shape), 1, 2))  # a zero vector reuses the unsteered logits
    out.append(
        Addition("layer1.pre", out[2].vector.clone(), out[2].a, out[2].b)
    )  # = layer0.post's first: evaluated once
    return out


def test_evaluate_additions_twice_is_identical(model, subset):
    images, labels = subset
    additions = _additions(model)
    first = evaluate_additions(model, images, labels, additions, chunk_elements=4 * N * 512)
    _disturb(model)
    second = evaluate_additions(model, images, labels, additions, chunk_elements=4 * N * 512)
    _arrays_equal(first.values, second.values)
    assert np.array_equal(first.distributions, second.distributions)
    assert first.engine == second.engine
    assert first.values["loss"].shape == (len(additions),)
    assert np.array_equal(first.values["loss"][-1], first.values["loss"][2])  # the repeated addition


def test_class_mean_steering_vectors_twice_are_identical(model):
    first = model.steering_vector(3, 1, ["layer0.post", "layer2.post"], method="mean")
    _disturb(model)
    second = model.steering_vector(3, 1, ["layer0.post", "layer2.post"], method="mean")
    assert list(first) == list(second)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert first.meta == second.meta
