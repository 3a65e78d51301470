"""The spread of the study's claims: exemplars, subsets, runs."""

import pytest
import torch

from hookedmlp.data import load_mnist
from hookedmlp.errors import UsageError
from hookedmlp.steering import class_activations
from hookedmlp_analysis.claims import CLAIMS
from hookedmlp_analysis.executors import ExecutorSettings
from hookedmlp_analysis.published import study_tables
from hookedmlp_analysis.reproduce import reproduce
from hookedmlp_analysis.spread import VectorSource, run_claims, spread, stratified_subset, vector_sources
from hookedmlp_cli.commands import main


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


def test_spread_on_the_process_pool_equals_spread_here_at_the_same_threads(model, one_thread):
    test = stratified_subset(*load_mnist("test"), 3)
    sources, study = [VectorSource("first", 0), VectorSource("first", 2)], study_tables()
    lines = []
    here = spread({"mnist-mlp": model}, sources, test, study, lines.append)
    pool = spread({"mnist-mlp": model}, sources, test, study, None, ExecutorSettings("process", workers=2))

    def numbers(runs):
        return [(r.model, r.source, r.claims, r.off_diagonal_loss) for r in runs]

    assert numbers(pool) == numbers(here)  # bit for bit: each pool worker at 1 thread, as here
    assert [line.split(":")[0] for line in lines] == ["  run 1/2", "  run 2/2"]


def test_reproduce_refuses_a_gpu_with_workers_before_any_work(tmp_path):
    with pytest.raises(UsageError) as e:
        reproduce(tmp_path, executor=ExecutorSettings("process"), device="cuda")
    assert str(e.value) == "the spread's runs go to process workers on the CPU; on cuda use the serial executor"
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--workers", "2"], "workers applies to the process and ray executors"),
        (["--executor", "process", "--ray-address", "auto"], "a Ray address applies to the ray executor, not process"),
        (["--workers", "0"], "argument --workers: expected a positive integer, got 0"),
    ],
)
def test_the_reproduce_command_refuses_bad_executor_flags_in_one_line(capsys, tmp_path, flags, message):
    try:
        code = main(["reproduce", "--quick", "--no-figures", "--out", str(tmp_path), *flags])
    except SystemExit as e:
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not list(tmp_path.iterdir())
