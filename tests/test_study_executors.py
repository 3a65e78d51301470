"""The study on every executor: the same numbers and weights, bit for bit; a killed worker's models reported and
the rest kept, then a resumed study equal to an uninterrupted one; two studies on one cache computing each model
once; and the command's executor flags."""

import dataclasses
import hashlib
import importlib.util
import os
import re
import signal
import threading

import psutil
import pytest
import torch

import hookedmlp_analysis.family as family
import hookedmlp_analysis.study_cells as study_cells
from hookedmlp import ClusterError, MLPConfig
from hookedmlp.data import load_mnist
from hookedmlp.train import TrainSettings
from hookedmlp_analysis.executors import ExecutorSettings
from hookedmlp_analysis.family import Variant
from hookedmlp_analysis.spread import stratified_subset
from hookedmlp_analysis.study_cells import run_study
from hookedmlp_analysis.study_report import study_text
from hookedmlp_cli.commands import main

SMALL = Variant("small", "a small net", MLPConfig(d_hidden=(16,)))
GELU = Variant("small gelu", "GELU", MLPConfig(d_hidden=(12, 12), activation="gelu"))
BIG = Variant("big", "a slower net", MLPConfig(d_hidden=(1024, 1024)))
SEEDS = [0, 1]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    train_x, train_y = load_mnist("train")
    test_x, test_y = load_mnist("test")
    data = (train_x[:96], train_y[:96], test_x[:64], test_y[:64])
    return {
        "test": stratified_subset(test_x, test_y, 3),
        "coeffs": (0.5, 1.0),
        "train_data": data,
        "settings": TrainSettings(epochs=1, batch_size=32),
        "pairs": [(3, 1), (1, 3)],
    }


def _numbers(results):
    return [{**dataclasses.asdict(r), "train_seconds": 0, "analysis_seconds": 0} for r in results]


def _weights(cache):
    """Each cached model's weights, hashed (the files' bytes also hold pickle's memo of shared strings, which
    depends on the process that wrote them)."""
    out = {}
    for p in sorted(cache.glob("*.pt")):
        state = torch.load(p, weights_only=True)["state_dict"]
        out[p.name] = hashlib.sha256(b"".join(t.numpy().tobytes() for t in state.values())).hexdigest()
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory, setup):
    """The serial study, each model trained alone: what every other way of running it must give."""
    cache = tmp_path_factory.mktemp("reference")
    results = run_study(cache, [SMALL, GELU], SEEDS, log=lambda line: None, together=False, **setup)
    return results, _weights(cache)


def test_serial_with_seeds_together_and_the_process_pool_give_the_same_bits(tmp_path, setup, reference):
    lines = []
    together = run_study(tmp_path / "a", [SMALL, GELU], SEEDS, log=lines.append, **setup)
    pool = run_study(tmp_path / "b", [SMALL, GELU], SEEDS, log=print, executor=ExecutorSettings("process"), **setup)
    assert _numbers(together) == _numbers(pool) == _numbers(reference[0])
    assert _weights(tmp_path / "a") == _weights(tmp_path / "b") == reference[1]
    assert lines[0] == "  4 models in 2 tasks on the serial, 1 thread(s) per task"
    assert [line.split(":")[0] for line in lines[1:]] == [f"  model {i}/4" for i in range(1, 5)]


def test_the_ray_executor_gives_the_same_bits_through_a_local_instance_with_2_cpus(tmp_path, setup, reference):
    pytest.importorskip("ray")
    lines = []
    ray = ExecutorSettings("ray", workers=2)
    results = run_study(tmp_path, [SMALL, GELU], SEEDS, log=lines.append, executor=ray, **setup)
    assert _numbers(results) == _numbers(reference[0])
    assert _weights(tmp_path) == reference[1]
    assert lines[0] == "  4 models in 2 tasks on the ray, 2 workers, 1 thread(s) per task"


def test_a_killed_worker_loses_its_models_only_and_the_resumed_study_is_the_same(tmp_path, setup, reference):
    variants = [SMALL, BIG, GELU]
    killed = []

    def kill_the_workers(line):  # after the first task's models: the other worker is still in its task
        if line.startswith("  model 1/") and not killed:
            for child in psutil.Process().children():
                killed.append(child.pid)
                os.kill(child.pid, signal.SIGKILL)

    pool = ExecutorSettings("process", workers=2, retries=0)
    with pytest.raises(ClusterError) as e:
        run_study(tmp_path, variants, SEEDS, log=kill_the_workers, executor=pool, **setup)
    # The worker still in its task died under it; the one that had just finished died idle, and the task it was given
    # next is lost too (with retries=0 a task sent to a dead worker is not tried again). Which task finishes first is
    # the machine's to decide (usually SMALL, but not beside a busy neighbour): the lost ones are read from the error.
    count, names = re.search(r"^(\d+) of 6 models could not be computed \((.*?)\): ", str(e.value)).groups()
    lost = set(names.split(", "))
    models = {f"{v.name} seed {s}": f"{v.slug}-seed{s}-" for v in variants for s in SEEDS}
    assert killed and lost and lost < set(models) and int(count) == len(lost)
    done = _weights(tmp_path)
    # every model not lost is in the cache (a lost one's may be too: its worker writes the model before its analysis)
    assert set(models) - lost <= {m for m, stem in models.items() if any(p.startswith(stem) for p in done)}
    assert {k: v for k, v in reference[1].items() if k in done} == {k: v for k, v in done.items() if "big" not in k}
    resumed = run_study(tmp_path, variants, SEEDS, log=print, executor=pool, **setup)
    fresh = run_study(tmp_path / "fresh", variants, SEEDS, log=print, **setup)
    assert _numbers(resumed) == _numbers(fresh)
    assert study_text(resumed) == study_text(fresh)


def test_two_studies_on_one_cache_compute_each_model_once(tmp_path, setup, monkeypatch):
    calls = []
    for module, name in [(study_cells, "train_seeds"), (family, "steerability")]:
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, real=real, name=name, **k: calls.append(name) or real(*a, **k))
    found, errors = [], []

    def one_study():
        try:
            found.append(run_study(tmp_path, [SMALL, GELU], SEEDS, log=lambda line: None, **setup))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=one_study) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    assert sorted(calls) == ["steerability"] * 4 + ["train_seeds"] * 2  # 2 variants' seeds trained, 4 analysed
    assert _numbers(found[0]) == _numbers(found[1])
    assert len(list(tmp_path.glob("*.pt"))) == len(list(tmp_path.glob("*.json"))) == 4
    assert not list(tmp_path.glob("*.partial.pt"))


@pytest.mark.parametrize(
    "seeds, variants, slots, together, groups",
    [
        ([0, 1, 2], 13, 1, True, [(0, 1, 2)]),  # serial: one task per variant
        ([0, 1, 2], 2, 2, True, [(0, 1, 2)]),  # 2 workers, 2 variants: each a task
        ([0, 1, 2], 1, 2, True, [(0, 1), (2,)]),  # 2 workers, 1 variant: its seeds split in 2
        ([0, 1, 2, 3, 4], 2, 8, True, [(0, 1), (2,), (3,), (4,)]),  # 8 workers, 2 variants: 4 groups each
        ([0, 1, 2, 3, 4, 5, 6], 3, 7, True, [(0, 1, 2), (3, 4), (5, 6)]),  # ceil(7 / 3) = 3 groups
        ([0, 1], 1, 16, True, [(0,), (1,)]),  # more workers than cells
        ([0, 1, 2], 2, None, True, [(0,), (1,), (2,)]),  # a cluster of unknown size: one cell per task
        ([0, 1, 2], 13, 1, False, [(0,), (1,), (2,)]),  # --seeds-apart
    ],
)
def test_seed_groups_keep_every_worker_busy_with_as_few_tasks_as_that_takes(seeds, variants, slots, together, groups):
    assert study_cells.seed_groups(seeds, variants, slots, together) == groups


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--workers", "0"], "argument --workers: expected a positive integer, got 0"),
        (["--workers", "-3"], "argument --workers: expected a positive integer, got -3"),
        (["--executor", "serial", "--workers", "2"], "workers applies to the process and ray executors"),
        (["--ray-address", "auto"], "a Ray address applies to the ray executor, not process"),
        (["--executor", "ray", "--ray-address", "127.0.0.1:1"], "cannot reach a Ray cluster at '127.0.0.1:1' within"),
    ],
)
def test_the_study_command_refuses_bad_executor_flags_in_one_line(capsys, tmp_path, flags, message):
    if "ray" in flags and importlib.util.find_spec("ray") is None:
        message = 'the ray executor needs Ray, an optional extra: pip install -e ".[ray]"'
    argv = ["study", "--quick", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), *flags]
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*.pt"))
