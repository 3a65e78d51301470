"""pick_threads: a count as given, or ``auto``: the free cores this process may use, read from /proc/stat."""

import pytest

import hookedmlp.cores as cores
from hookedmlp import ConfigError
from hookedmlp.cores import allowed_cores, free_cores, pick_threads


def _stat(tmp_path, name, *per_core):
    """A /proc/stat with one line per core: (idle ticks, busy ticks)."""
    lines = ["cpu  1 2 3 4 5 6 7 8 9 10"]
    lines += [f"cpu{i} {busy} 0 0 {idle} 0 0 0 0 0 0" for i, (idle, busy) in enumerate(per_core)]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\nintr 1 2 3\n")
    return str(path)


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """Two cores this process may use, no quota, and a /proc/stat that moves by the given ticks during the window."""
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(cores, "CPU_MAX", str(tmp_path / "absent"))

    def ticks(*after):
        files = iter([_stat(tmp_path, "before", (0, 0), (0, 0)), _stat(tmp_path, "after", *after)])
        monkeypatch.setattr(cores.time, "sleep", lambda s: monkeypatch.setattr(cores, "PROC_STAT", next(files)))
        monkeypatch.setattr(cores, "PROC_STAT", next(files))

    return ticks


@pytest.mark.parametrize(
    "after, free, threads",
    [
        (((100, 0), (100, 0)), 2.0, 2),  # a quiet machine: both cores
        (((100, 0), (0, 100)), 1.0, 1),  # one busy neighbour: its core is not ours
        (((20, 80), (10, 90)), 0.3, 1),  # busier still: never fewer than one
        (((80, 20), (80, 20)), 1.6, 1),  # two cores each 20% busy: a core counts when 75% of it idles
        (((90, 10), (90, 10)), 1.8, 2),
    ],
)
def test_auto_takes_the_cores_that_idled_during_the_window(machine, after, free, threads):
    machine(*after)
    assert free_cores() == pytest.approx(free)
    machine(*after)
    assert pick_threads("auto") == threads


def test_only_the_cores_this_process_may_run_on_count(machine, monkeypatch):
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: {1})
    machine((100, 0), (0, 100))
    assert free_cores() == 0.0


def test_a_cgroup_quota_caps_the_cores(tmp_path, monkeypatch):
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    quota = tmp_path / "cpu.max"
    monkeypatch.setattr(cores, "CPU_MAX", str(quota))
    for text, expected in [("150000 100000", 1), ("300000 100000", 3), ("max 100000", 4), ("50000 100000", 1)]:
        quota.write_text(text + "\n")
        assert allowed_cores() == expected


@pytest.mark.parametrize("spec", [0, -1, 1.5, "2", True, None])
def test_anything_but_a_positive_count_or_auto_is_refused(spec):
    with pytest.raises(ConfigError) as e:
        pick_threads(spec)
    assert str(e.value) == f"threads must be a positive int or 'auto', got {spec!r}"
