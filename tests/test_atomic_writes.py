"""Files are never half-written (issue 6, "Reliability and safety").

Writers run in a subprocess that is killed with SIGKILL while it writes; the file at the
target path must then be the previous version, complete and loadable. Leftover temporary
files (``.<name>.<random>.tmp`` beside the target) are allowed; a partial target is not.

* a loop of ~23 MB checkpoint saves, killed at an arbitrary moment (the realistic race);
* a checkpoint, a steering vector, a GridResult JSON and a figure (HTML), each stopped
  exactly half way through its second write and then killed: deterministic proof that
  the kill landed mid-write and that the first version survived byte for byte;
* the permissions of written files follow the umask (0o644 under 022).
"""

import hashlib
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hookedmlp import HookedMLP, MLPConfig, SteeringVector
from hookedmlp.files.atomic import atomic_write
from hookedmlp_analysis.grid import GridResult

REPO = Path(__file__).resolve().parents[1]
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL and /proc/self/fd are Linux features")
BIG = MLPConfig(d_in=784, d_hidden=(2048, 2048), d_out=10)  # ~23 MB per checkpoint


def _spawn(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_until(proc: subprocess.Popen, done, timeout: float = 90.0) -> list[str]:
    """Lines of the writer's stdout until ``done(lines)``; fails if it exits or times out first."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while not done(lines):
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"writer timed out; stdout so far {lines}")
        line = proc.stdout.readline()
        if not line:
            proc.wait()
            pytest.fail(f"writer exited with {proc.returncode} early: {lines}\n{proc.stderr.read()}")
        lines.append(line.strip())
    return lines


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    proc.stdout.close()
    proc.stderr.close()


def _leftovers(directory: Path, names: list[str]) -> dict[str, list[Path]]:
    """Every file in ``directory`` must be a target or a temporary file of one."""
    temps: dict[str, list[Path]] = {n: [] for n in names}
    for p in directory.iterdir():
        if p.name in names:
            continue
        owner = next((n for n in names if p.name.startswith(f".{n}.") and p.name.endswith(".tmp")), None)
        assert owner is not None, f"unexpected file {p.name} in {sorted(q.name for q in directory.iterdir())}"
        temps[owner].append(p)
    return temps


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _same_model(a: HookedMLP, b: HookedMLP) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    x = torch.rand(3, a.d_in, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


# -- a loop of big saves, killed at an arbitrary moment ------------------------------------------

LOOP_WRITER = """
    import sys, torch
    from hookedmlp import HookedMLP, MLPConfig
    torch.manual_seed(0)
    model = HookedMLP(MLPConfig(d_in=784, d_hidden=(2048, 2048), d_out=10))
    i = 0
    while True:
        model.save(sys.argv[1])  # the same seeded model every time
        i += 1
        print("saved", i, flush=True)
"""


@linux_only
def test_sigkill_during_a_loop_of_big_saves_leaves_a_loadable_checkpoint(tmp_path, record_property):
    path = tmp_path / "big.pt"
    proc = _spawn(LOOP_WRITER, str(path))
    try:
        _read_until(proc, lambda lines: len(lines) >= 2)  # it has written at least twice
        assert path.exists()
        time.sleep(0.15)  # a few more ~40 ms saves: the kill lands in one of them
    finally:
        _kill(proc)
    temps = _leftovers(tmp_path, ["big.pt"])["big.pt"]
    record_property("temp files left by the kill", [p.name for p in temps])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        expected = HookedMLP(BIG)
    _same_model(HookedMLP.load(path), expected)  # never partial: loads, and is the saved model


# -- four writers, each stopped half way through its second write, then killed --------------------

STALL_WRITER = """
    import hashlib, os, sys, threading
    from pathlib import Path
    import numpy as np, torch
    import plotly.graph_objects as go
    from hookedmlp_analysis.figures import write_figure
    from hookedmlp_analysis.grid import GridResult
    from hookedmlp import HookedMLP, MLPConfig, SteeringVector

    d = Path(sys.argv[1])

    def model(seed):
        torch.manual_seed(seed)
        return HookedMLP(MLPConfig(d_in=784, d_hidden=(512,), d_out=10))

    def vector(seed):
        values = torch.randn(4096, generator=torch.Generator().manual_seed(seed))
        return SteeringVector({"layer0.post": values}, {"label": f"v{seed}"})

    def grid(seed):
        r = np.random.default_rng(seed)
        metrics = {name: r.random((10, 10)) for name in ("loss", "flip_rate", "accuracy_other", "kl")}
        return GridResult(hook="layer0.post", coeff=1.0, method="first", digits=list(range(10)), metrics=metrics,
                          normal={"loss": r.random(10), "accuracy_other": r.random(10)}, n_test=10_000,
                          model=f"m{seed}",
                          distributions=r.random((10, 10, 10, 10)))

    def figure(seed):
        return go.Figure(go.Heatmap(z=np.random.default_rng(seed).random((30, 30))))

    writers = {
        "model.pt": lambda seed: model(seed).save(d / "model.pt"),
        "vector.pt": lambda seed: vector(seed).save(d / "vector.pt"),
        "grid.json": lambda seed: grid(seed).save(d / "grid.json"),
        "fig.html": lambda seed: write_figure(figure(seed), d / "fig", formats=("html",)),
    }
    for write in writers.values():
        write(0)
    sizes = {name: os.path.getsize(d / name) for name in writers}
    for name in writers:
        print("v1", name, hashlib.sha256((d / name).read_bytes()).hexdigest(), flush=True)

    real_fdopen = os.fdopen
    lock = threading.Lock()

    class Stall:
        # The temporary file of an atomic write; stops for good half way through.
        def __init__(self, f, target):
            self.f, self.target, self.n, self.limit = f, target, 0, sizes[target] // 2

        def write(self, data):
            if self.n + len(data) >= self.limit:
                k = self.limit - self.n
                self.f.write(data[:k])
                self.f.flush()
                os.fsync(self.f.fileno())
                with lock:
                    sys.stdout.write(f"stalled {self.target} {k + self.n}\\n")
                    sys.stdout.flush()
                threading.Event().wait()  # until SIGKILL
            self.n += len(data)
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

    def stalling_fdopen(fd, *args, **kwargs):
        f = real_fdopen(fd, *args, **kwargs)
        tmp = Path(os.readlink(f"/proc/self/fd/{fd}")).name  # .<target>.<random>.tmp
        return Stall(f, tmp[1:].rsplit(".", 2)[0])

    os.fdopen = stalling_fdopen
    for write in writers.values():
        threading.Thread(target=write, args=(1,), daemon=True).start()
    threading.Event().wait()
"""
TARGETS = ["model.pt", "vector.pt", "grid.json", "fig.html"]


@pytest.fixture(scope="module")
def stalled(tmp_path_factory):
    """Run the stall writer once; returns its directory and the sha256 of each first version."""
    d = tmp_path_factory.mktemp("stalled")
    proc = _spawn(STALL_WRITER, str(d))
    try:
        lines = _read_until(proc, lambda lines: sum(line.startswith("stalled") for line in lines) == len(TARGETS))
    finally:
        _kill(proc)
    v1 = {line.split()[1]: line.split()[2] for line in lines if line.startswith("v1")}
    half = {line.split()[1]: int(line.split()[2]) for line in lines if line.startswith("stalled")}
    assert set(v1) == set(half) == set(TARGETS), lines
    return d, v1, half


@linux_only
@pytest.mark.parametrize("name", TARGETS)
def test_sigkill_mid_write_keeps_the_first_version(stalled, name):
    d, v1, half = stalled
    temps = _leftovers(d, TARGETS + ["plotly.min.js"])[name]
    assert len(temps) == 1, f"the interrupted write of {name} should have left its temporary file: {temps}"
    assert temps[0].stat().st_size == half[name] > 0  # killed half way through the second version
    assert _sha(d / name) == v1[name], f"{name} is not byte for byte its first version"


@linux_only
def test_files_left_by_the_kill_load_as_their_first_versions(stalled):
    d, _, _ = stalled
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        expected = HookedMLP(MLPConfig(d_in=784, d_hidden=(512,), d_out=10))
    _same_model(HookedMLP.load(d / "model.pt"), expected)
    vec = SteeringVector.load(d / "vector.pt")
    assert vec.label == "v0"
    assert torch.equal(vec["layer0.post"], torch.randn(4096, generator=torch.Generator().manual_seed(0)))
    grid = GridResult.load(d / "grid.json")
    r = np.random.default_rng(0)
    assert grid.model == "m0" and np.array_equal(grid.loss, np.round(r.random((10, 10)), 6))  # JSON keeps 6 decimals
    assert grid.distributions.shape == (10, 10, 10, 10)
    assert (d / "fig.html").read_text().rstrip().endswith("</html>")


# -- permissions -------------------------------------------------------------------------------------


def _writers(tmp_path):
    model = HookedMLP(MLPConfig(d_in=16, d_hidden=(8,), d_out=3))
    vec = SteeringVector({"layer0.post": torch.ones(8)})
    z = np.zeros((1, 1))
    grid = GridResult(
        hook="layer0.post",
        coeff=1.0,
        method="first",
        digits=[0],
        metrics={"loss": z, "flip_rate": z},
        normal={"loss": np.zeros(1)},
        n_test=1,
        model="m",
    )

    def text(path):
        with atomic_write(path, "w") as f:
            f.write("hello")

    return {
        "atomic_write": text,
        "HookedMLP.save": model.save,
        "SteeringVector.save": vec.save,
        "GridResult.save": grid.save,
    }


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        for what, write in _writers(tmp_path).items():
            path = tmp_path / f"{what}.out"
            write(path)
            assert stat.S_IMODE(path.stat().st_mode) == mode, (
                f"{what} wrote mode {oct(stat.S_IMODE(path.stat().st_mode))}"
            )
            write(path)  # replacing an existing file
            assert stat.S_IMODE(path.stat().st_mode) == mode, what
        assert os.umask(umask) == umask  # the writers left the process umask alone
    finally:
        os.umask(old)


def test_atomic_write_never_changes_the_process_umask(tmp_path, monkeypatch):
    """Reading the umask by setting it (``os.umask(0)`` then back) races with other threads creating
    files; ``atomic_write`` reads it from /proc instead and never calls ``os.umask``."""
    old = os.umask(0o022)
    calls = []
    monkeypatch.setattr(os, "umask", lambda mask: calls.append(mask) or 0o022)
    try:
        with atomic_write(tmp_path / "b.txt", "w") as f:
            f.write("x")
    finally:
        monkeypatch.undo()
        os.umask(old)
    assert calls == []
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o644
