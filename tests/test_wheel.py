"""The wheel a release ships: built by ``python -m build``, installed into a fresh venv, run outside the repository.

Only the editable install is used elsewhere, where missing package data would go unnoticed. Here the
wheel alone provides hookedmlp; its dependencies come from this venv (a path entry, whose ``.pth``
files, such as this checkout's editable install, are not processed). ``hookedmlp reproduce --quick``
runs from an empty folder on a terminal (a pty), as a user would see it.
"""

import os
import pty
import re
import select
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from test_progress import screen

ROOT = Path(__file__).resolve().parents[1]
# The checkout's folders that the wheel installs, and the name each is installed under (pyproject's packages)
PACKAGES = {"hookedmlp": "hookedmlp", "hookedmlp_cli": "hookedmlp_cli", "analysis": "hookedmlp_analysis"}
DATA = {"hookedmlp": ["pretrained/*", "py.typed"], "analysis": ["seed_data/*"]}  # by folder: files that are not Python

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="a pty and a venv layout of Linux")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the sources (the checkout gets no build/ or egg-info)."""
    src, dist = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "deprecated" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    (built,) = dist.glob("hookedmlp-*.whl")
    return built


def test_the_wheel_holds_the_packages_their_data_and_ranges(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {n.split("/")[0] for n in names}
    assert tops - {n for n in tops if n.endswith(".dist-info")} == set(PACKAGES.values())

    def installed(path: Path) -> str:  # a checkout file's path in the wheel
        folder, *rest = path.relative_to(ROOT).parts
        return "/".join([PACKAGES[folder], *rest])

    for folder, patterns in DATA.items():
        wanted = {installed(p) for pattern in patterns for p in (ROOT / folder).glob(pattern)}
        assert wanted and wanted <= names, sorted(wanted - names)
    modules = {installed(p) for folder in PACKAGES for p in (ROOT / folder).rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    meta = Parser().parsestr(zipfile.ZipFile(wheel).read(metadata).decode())
    requires = meta.get_all("Requires-Dist")
    runtime = [r for r in requires if "extra ==" not in r]
    assert "torch>=2.13" in runtime and not [r for r in runtime if "==" in r]  # ranges, never pins
    assert 'torchvision>=0.28; extra == "torchvision"' in requires


def _run_in_pty(argv: list[str], cwd: Path, env: dict, timeout: float) -> tuple[int, bytes, float]:
    """Run ``argv`` with a terminal as stdin, stdout and stderr; its exit status, output and first output's delay."""
    leader, follower = pty.openpty()
    os.set_blocking(leader, False)
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    out, first = b"", None
    try:
        while time.monotonic() - start < timeout:
            ready, _, _ = select.select([leader], [], [], 0.2)
            try:
                chunk = os.read(leader, 65536) if ready else b""
            except OSError:  # the process closed the terminal
                chunk = b""
                if proc.poll() is not None:
                    break
            if chunk and first is None:
                first = time.monotonic() - start
            out += chunk
            if not chunk and proc.poll() is not None:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
    return proc.wait(), out, first if first is not None else float("inf")


def test_the_installed_wheel_reproduces_outside_the_repository(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps"]
    proc = subprocess.run([*pip, str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    home = tmp_path / "elsewhere"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run(
        [str(python), "-c", f"import {', '.join(PACKAGES.values())} as last; print(hookedmlp.__file__, last.__file__)"],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert where.returncode == 0, where.stderr
    assert all(Path(f).is_relative_to(site) for f in where.stdout.split()), where.stdout

    status, raw, first = _run_in_pty(
        [str(venv / "bin" / "hookedmlp"), "reproduce", "--quick", "--out", "out"], home, env, timeout=400
    )
    text = raw.decode(errors="replace").replace("\r\n", "\n")
    assert status == 0, text[-3000:]
    # the bar is up before torch is imported, then moves with an ETA; the report's path is the last line
    assert re.match(r"\rhookedmlp reproduce:   0%\|[^\r]*about \? left, importing torch", text), text[:300]
    assert re.search(r"hookedmlp reproduce:  *\d+%\|[^\r\n]*\d\d:\d\d elapsed, about \d\d:\d\d left, spread: run", text)
    shown = [line for line in screen(text) if line]
    assert shown[-1] == "report: out/reproduction.md", shown[-5:]
    out = home / "out"
    assert "## Claims checked" in (out / "reproduction.md").read_text()
    # every figure folder holds one plotly.js, which its pages load
    assert [p.relative_to(out).as_posix() for p in out.rglob("*.js")] == ["figures/plotly.min.js"]
    pages = list(out.rglob("*.html"))
    assert len(pages) == 8 and all('src="plotly.min.js"' in p.read_text() for p in pages)
    print(f"first output after {first:.2f} s")  # shown with -s: the bar appears within the first second
