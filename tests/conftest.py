"""Shared fixtures: tiny seeded models, and a check that no test leaves a hook attached; the suite's workers (one per
core this process may use, each with its share of torch's threads) and its faster annotation checks (``_typecheck``)."""

import os

import pytest
import torch
from _typecheck import faster_checks
from torch import nn

from hookedmlp import HookedMLP, MLPConfig
from hookedmlp.cores import allowed_cores
from hookedmlp.data import load_mnist
from hookedmlp.hooks.point import HookPoint

faster_checks()


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: no error where xdist is absent
def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (addopts): one worker per core this process may use, a cgroup's CPU quota included (xdist's own
    count would take every core of the host a container runs on); xdist's PYTEST_XDIST_AUTO_NUM_WORKERS still wins."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist's own hook reads it
    return allowed_cores()


def pytest_configure(config):
    """Under pytest-xdist, each worker takes its share of the cores: torch's default (one thread per core) in every
    worker would put several threads on each core."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        torch.set_num_threads(max(1, allowed_cores() // int(workers)))


@pytest.fixture(autouse=True)
def own_threads():
    """A command run in-process sets torch's threads (``--threads auto``): the next test gets the worker's back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_leaked_hooks(monkeypatch):
    """Fail any test that leaves a hook attached to any HookPoint (every hook is added through HookPoint.add_hook)."""
    added = []
    original = HookPoint.add_hook

    def recording_add_hook(self, *args, **kwargs):
        handle = original(self, *args, **kwargs)
        added.append(handle)
        return handle

    monkeypatch.setattr(HookPoint, "add_hook", recording_add_hook)
    yield
    leaked = [repr(h) for h in added if h.attached]
    for h in added:  # clean up so one failure does not cascade
        h.remove()
    assert not leaked, f"test left hooks attached: {leaked}"


@pytest.fixture
def tiny_seq() -> nn.Sequential:
    """A plain, seeded Linear-ReLU-Linear-ReLU-Linear stack on 16 inputs (a 4x4 'image')."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.fixture
def tiny(tiny_seq: nn.Sequential) -> HookedMLP:
    """The hooked version of ``tiny_seq`` (sharing its weights), in eval mode."""
    return HookedMLP.from_sequential(tiny_seq).eval()


@pytest.fixture
def tiny_x() -> torch.Tensor:
    """A seeded batch of 5 inputs for ``tiny``."""
    g = torch.Generator().manual_seed(1)
    return torch.rand(5, 16, generator=g)


@pytest.fixture
def small_cfg() -> MLPConfig:
    return MLPConfig(d_in=16, d_hidden=(8, 8), d_out=3)


@pytest.fixture(scope="module")
def model() -> HookedMLP:
    """The shipped mnist-mlp (a fresh copy per test module), in eval mode."""
    return HookedMLP.from_pretrained("mnist-mlp").eval()


@pytest.fixture(scope="module")
def data(request) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``N`` MNIST test images and labels (``N`` from the test module, default 300)."""
    n = getattr(request.module, "N", 300)
    images, labels = load_mnist("test")
    return images[:n], labels[:n]


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matmuls are slower with several threads on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
