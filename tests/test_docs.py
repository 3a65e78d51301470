"""The documentation site builds offline with ``mkdocs build --strict``.

Every ```python example on the site (docs/*.md) and in README.md runs as its own test through
pytest-markdown-docs (``--markdown-docs`` in pyproject's pytest options); this file checks the
build itself: nav, links between pages, anchors, and the API pages generated from docstrings.
"""

import fnmatch
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

def build(site_dir: Path, config: Path = ROOT / "mkdocs.yml") -> subprocess.CompletedProcess:
    """``python -m mkdocs build --strict`` of ``config``, offline, into ``site_dir``."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's end-of-life banner
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )


def check_build(proc: subprocess.CompletedProcess) -> None:
    """The strict build passed: exit 0, no warning."""
    output = proc.stdout + proc.stderr
    warnings = [line for line in output.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert proc.returncode == 0 and not warnings, f"mkdocs build --strict failed (exit {proc.returncode}):\n{output}"


def test_docs_build_strict(tmp_path: Path) -> None:
    """The site as it is in this checkout."""
    proc = build(tmp_path / "site")
    check_build(proc)
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "api-model" / "index.html").is_file()


def test_docs_build_strict_fresh_clone(tmp_path: Path) -> None:
    """The site without the generated files .gitignore keeps out of a clone (docs/figures/*.html...)."""
    patterns = [line.strip()[len("docs/"):] for line in (ROOT / ".gitignore").read_text().splitlines()
                if line.strip().startswith("docs/")]
    docs = ROOT / "docs"
    ignored = [p for p in docs.rglob("*") if p.is_file()
               and any(fnmatch.fnmatch(p.relative_to(docs).as_posix(), pat) for pat in patterns)]
    if not ignored:
        pytest.skip("no generated files under docs/: test_docs_build_strict already built the fresh-clone site")
    copy = tmp_path / "docs"
    shutil.copytree(docs, copy, ignore=lambda d, names: [n for n in names if Path(d, n) in ignored])
    config = tmp_path / "mkdocs.yml"
    config.write_text(f"INHERIT: {json.dumps(str(ROOT / 'mkdocs.yml'))}\ndocs_dir: {json.dumps(str(copy))}\n")
    check_build(build(tmp_path / "site", config))
