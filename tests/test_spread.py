"""The spread of the study's claims: exemplars, subsets, runs."""

import pytest
import torch

from hookedmlp.data import load_mnist
from hookedmlp.steering import class_activations
from hookedmlp_analysis.claims import CLAIMS
from hookedmlp_analysis.published import study_tables
from hookedmlp_analysis.spread import VectorSource, run_claims, stratified_subset, vector_sources


def test_vector_sources_are_ten_exemplars_and_the_mean():
    sources = vector_sources(10)
    assert [s.exemplar for s in sources[:10]] == list(range(10)) and sources[-1] == VectorSource("mean")
    assert [s.label for s in (sources[0], sources[3], sources[-1])] == [
        "first training image",
        "training image 4",
        "class mean",
    ]


def test_stratified_subset_takes_the_first_images_of_each_class():
    labels = torch.tensor([2, 0, 0, 1, 2, 0, 1, 2])
    images = torch.arange(8).float().unsqueeze(1)
    x, y = stratified_subset(images, labels, 2)
    assert y.tolist() == [2, 0, 0, 1, 2, 1] and x.squeeze(1).tolist() == [0, 1, 2, 3, 4, 6]


@pytest.mark.parametrize("k", [0, 3, 9])
def test_exemplar_k_is_the_kth_training_image_of_each_digit(model, k):
    images, labels = load_mnist("train")
    acts, counts, _ = class_activations(model, list(range(10)), ["layer0.pre"], "first", exemplar=k)
    expected = torch.stack([images[(labels == d).nonzero()[k, 0]] for d in range(10)])
    assert torch.equal(acts["layer0.pre"], expected) and counts == [1] * 10


def test_a_run_decides_every_claim(model):
    test = stratified_subset(*load_mnist("test"), 10)
    run, grids = run_claims(model, VectorSource("first", 1), test, study_tables(), "mnist-mlp")
    assert set(run.claims) == {c.key for c in CLAIMS} and sorted(grids) == [f"layer{i}.post" for i in range(5)]
    assert all(isinstance(h, bool) and isinstance(v, float) for h, v in run.claims.values())
    assert run.claims["flip"][1] == pytest.approx(float(grids["layer0.post"].off_diagonal("flip_rate").mean()))
