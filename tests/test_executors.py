"""run_tasks: the same results from every executor, a task's own error raised, a dead worker's task retried
or reported while the rest go on, and bad settings refused. (The Ray executor runs in tests/test_study_executors.py.)"""

import importlib
import os
import time
from pathlib import Path

import pytest
import torch

import hookedmlp_analysis.executors as executors
from hookedmlp import ClusterError, ConfigError, MissingExtraError, UsageError
from hookedmlp_analysis.executors import ExecutorSettings, Lost, run_tasks

PROCESS = ExecutorSettings("process", workers=2, threads=1)


def _work(task):
    """A pure function of its task, and where and how it ran."""
    return task * task, torch.get_num_threads(), os.getpid()


def _refuse_three(task):
    if task == 3:
        raise ConfigError(f"task {task} is refused")
    return task


def _die_once(task):
    """Task 2's worker dies the first time (a marker file remembers), then it runs."""
    n, marker = task
    if n == 2 and not Path(marker).exists():
        Path(marker).write_text("died once")
        os._exit(9)
    return n


def _die_always(task):
    if task == 1:
        os._exit(9)
    return task


def test_serial_and_process_give_the_same_results_with_the_threads_asked_for():
    serial = dict(run_tasks(_work, list(range(5)), ExecutorSettings("serial", threads=2)))
    process = dict(run_tasks(_work, list(range(5)), PROCESS))
    assert sorted(serial) == sorted(process) == list(range(5))
    assert [serial[i][0] for i in range(5)] == [process[i][0] for i in range(5)] == [0, 1, 4, 9, 16]
    assert {serial[i][1:] for i in range(5)} == {(2, os.getpid())}
    assert {process[i][1] for i in range(5)} == {1}
    assert os.getpid() not in {process[i][2] for i in range(5)}


def test_a_tasks_own_error_is_raised_here():
    with pytest.raises(ConfigError, match="^task 3 is refused$"):
        list(run_tasks(_refuse_three, list(range(6)), PROCESS))


def test_a_worker_that_dies_under_a_task_costs_it_one_more_try(tmp_path):
    marker = str(tmp_path / "marker")
    results = dict(run_tasks(_die_once, [(n, marker) for n in range(4)], PROCESS))
    assert results == {0: 0, 1: 1, 2: 2, 3: 3}
    assert Path(marker).read_text() == "died once"


def test_a_task_whose_worker_always_dies_is_reported_and_the_rest_kept():
    results = dict(run_tasks(_die_always, list(range(4)), PROCESS))
    assert {i: v for i, v in results.items() if i != 1} == {0: 0, 2: 2, 3: 3}
    assert results[1] == Lost("its worker died on each of 2 tries (exit code 9)")


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"kind": "process", "workers": 0}, ConfigError, "workers must be >= 1, got 0"),
        ({"kind": "ray", "workers": -2}, ConfigError, "workers must be >= 1, got -2"),
        ({"kind": "serial", "workers": 2}, UsageError, "workers applies to the process and ray executors; serial"),
        ({"kind": "process", "address": "auto"}, UsageError, "a Ray address applies to the ray executor, not process"),
        ({"kind": "ray", "address": "auto", "workers": 2}, UsageError, "workers sizes a local Ray instance; a"),
        ({"kind": "threads"}, ConfigError, "executor must be one of 'serial', 'process', 'ray', got 'threads'"),
    ],
)
def test_bad_executor_settings_are_refused(kwargs, error, message):
    with pytest.raises(error) as e:
        ExecutorSettings(**kwargs)
    assert str(e.value).startswith(message)


def test_the_ray_executor_without_ray_names_the_extra(monkeypatch):
    real = importlib.import_module

    def no_ray(name, *args):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real(name, *args)

    monkeypatch.setattr(executors.importlib, "import_module", no_ray)
    with pytest.raises(MissingExtraError) as e:
        list(run_tasks(_work, [1], ExecutorSettings("ray")))
    assert str(e.value) == (
        'the ray executor needs Ray, an optional extra: pip install -e ".[ray]" (or pip install "hookedmlp[ray]")'
    )
    assert isinstance(e.value, ImportError)


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1", "localhost:port"])
def test_an_unreachable_ray_address_is_a_clear_error_within_the_timeout(address):
    pytest.importorskip("ray")  # without Ray the executor names the extra first (the test above)
    start = time.monotonic()
    with pytest.raises(ClusterError) as e:
        list(run_tasks(_work, [1], ExecutorSettings("ray", address=address)))
    assert time.monotonic() - start < 3
    assert str(e.value).startswith(f"cannot reach a Ray cluster at {address!r} within 5 s (")
    assert str(e.value).endswith("); check the address, or start a cluster there (ray start --head)")
