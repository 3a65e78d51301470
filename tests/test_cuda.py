"""The GPU path: training, seeds trained together, the analysis engine and the commands on CUDA.

Every test here needs a CUDA device and is skipped without one. On a GPU machine they check
that a model, its data and the engine move to the device once, and that nothing returns to the
CPU per batch: the engine's synchronisations (``torch.cuda.set_sync_debug_mode``) do not grow
with the number of batches it runs.
"""

import dataclasses
import warnings

import pytest
import torch

from hookedmlp import HookedMLP, MLPConfig, ResidualConfig
from hookedmlp.data import load_mnist
from hookedmlp.devices import resolve_device
from hookedmlp.train import TrainSettings, train_model
from hookedmlp.train_seeds import train_seeds
from hookedmlp_analysis.engine import Addition, evaluate_additions
from hookedmlp_analysis.grid import steering_grid
from hookedmlp_cli.commands import main

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SETTINGS = TrainSettings(epochs=2, batch_size=64)


@pytest.fixture(scope="module")
def mnist():
    images, labels = load_mnist("test")
    return images[:1000], labels[:1000]


def test_auto_is_cuda():
    assert resolve_device("auto").type == "cuda"


def test_training_on_cuda_learns_and_saves_cpu_tensors(tmp_path, mnist):
    x, y = mnist
    result = train_model(MLPConfig(d_hidden=(64,)), SETTINGS, data=(x, y, x, y), device="cuda", out=tmp_path / "m.pt")
    assert result.history[-1]["test_loss"] < result.history[0]["test_loss"]
    assert result.model.reference_tensor().device.type == "cuda"
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    assert all(t.device.type == "cpu" for t in saved["state_dict"].values())


@pytest.mark.parametrize("recipe", [MLPConfig(d_hidden=(64, 64)), ResidualConfig(d_model=32, d_mlp=64)])
def test_seeds_trained_together_on_cuda_match_them_trained_alone_to_rounding(recipe, mnist):
    x, y = mnist
    together = train_seeds(recipe, SETTINGS, [0, 1], data=(x, y, x, y), device="cuda", progress=False)
    for seed, got in zip([0, 1], together):
        alone = train_model(recipe, dataclasses.replace(SETTINGS, seed=seed), data=(x, y, x, y), device="cuda")
        assert got.test_loss == pytest.approx(alone.test_loss, rel=1e-2)
        for k, v in alone.model.state_dict().items():
            torch.testing.assert_close(got.model.state_dict()[k], v, rtol=1e-2, atol=1e-3)


def test_the_grid_on_cuda_equals_the_grid_on_the_cpu(mnist):
    cpu = HookedMLP.from_pretrained("mnist-mlp").eval()
    gpu = HookedMLP.from_pretrained("mnist-mlp").eval().to("cuda")
    with torch.no_grad():
        a = steering_grid(cpu, test=mnist)
        b = steering_grid(gpu, test=(mnist[0].cuda(), mnist[1].cuda()))
    for metric in ("loss", "flip_rate", "accuracy_other"):
        torch.testing.assert_close(
            torch.tensor(b.metrics[metric]), torch.tensor(a.metrics[metric]), rtol=1e-4, atol=1e-5
        )


def _syncs(model, images, labels, chunk: int) -> int:
    """How many times evaluate_additions waits on the GPU, with every vector of a grid's row."""
    vectors = [Addition("layer1.post", torch.randn(512, device="cuda"), a, 0) for a in range(1, 10)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with torch.no_grad():
                evaluate_additions(model, images, labels, vectors, chunk_elements=chunk)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def test_the_engine_does_not_return_to_the_cpu_per_batch(mnist):
    model = HookedMLP.from_pretrained("mnist-mlp").eval().to("cuda")
    images, labels = mnist[0].cuda(), mnist[1].cuda()
    one_batch = _syncs(model, images, labels, chunk=1 << 24)
    many_batches = _syncs(model, images, labels, chunk=1000 * 512 // 16)  # 16 passes per vector
    assert many_batches == one_batch


def test_the_commands_run_on_cuda(capsys, tmp_path):
    assert main(["grid", "--device", "cuda", "--n-test", "500", "--json", str(tmp_path / "g.json")]) == 0
    assert main(["sweep", "--device", "cuda", "--json", str(tmp_path / "s.json")]) == 0
    assert (tmp_path / "g.json").exists() and (tmp_path / "s.json").exists()
