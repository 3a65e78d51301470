"""The notebooks in docs/notebooks/ run, offline, in a kernel of the venv's Python.

Each runs once per test session (``executed_notebooks``, also used by tests/test_docs.py, whose
site builds then render the same executed copies from the cache instead of running them again).
"""

import base64
import importlib.util
import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NOTEBOOKS = sorted((ROOT / "docs" / "notebooks").glob("*.ipynb"))
pytestmark = pytest.mark.xdist_group("site")  # run once, on the worker that builds the site (tests/test_docs.py)


def _hook():
    """docs/hooks/notebooks.py, the code the site build runs notebooks with (one module object per session)."""
    name = "hookedmlp_docs_notebooks_hook"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / "hooks" / "notebooks.py")
        sys.modules[name] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[name]


_EXECUTED: dict[Path, nbformat.NotebookNode] = {}


@pytest.fixture(scope="session")
def executed_notebooks() -> dict[Path, nbformat.NotebookNode]:
    """Every notebook, run now (once per session), and stored where the site build looks for it."""
    hook = _hook()
    for path in NOTEBOOKS:
        if path not in _EXECUTED:
            _EXECUTED[path] = hook.execute(path)
            hook.store(_EXECUTED[path], path, path.relative_to(ROOT / "docs").as_posix())
    return _EXECUTED


def outputs(nb: nbformat.NotebookNode, mime: str) -> list[str]:
    return [str(o["data"][mime]) for c in nb.cells for o in c.get("outputs", []) if mime in o.get("data", {})]


def test_there_is_a_notebook() -> None:
    assert [p.name for p in NOTEBOOKS] == ["tour.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    """Running it (tests, site builds, a user) never changes the tracked file's meaning; diffs stay readable."""
    nb = json.loads(path.read_text())
    nbformat.validate(nbformat.from_dict(nb))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)


def test_storing_keeps_the_newest_entries_and_skips_one_another_run_removed(tmp_path, monkeypatch) -> None:
    """The cache folder is shared (checkouts, xdist workers): an entry listed, then removed by another run's pruning
    before this one reads its time, is passed over, not a crash."""
    hook = _hook()

    class Listing(type(tmp_path)):
        def iterdir(self):
            yield from super().iterdir()
            yield self / "removed-meanwhile"

    cache = Listing(tmp_path)
    for i in range(hook.KEEP + 2):
        (cache / f"old{i}").mkdir()
        os.utime(cache / f"old{i}", (i, i))
    monkeypatch.setattr(hook, "CACHE", cache)
    monkeypatch.setattr(hook, "cache_key", lambda path: "new")
    out = hook.store(nbformat.v4.new_notebook(), NOTEBOOKS[0], "notebooks/tour.ipynb")
    assert out == cache / "new" / "notebooks" / "tour.ipynb" and out.is_file()
    kept = [f"old{i}" for i in range(3, hook.KEEP + 2)]  # the newest KEEP - 1 old ones, and the new entry
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, "new"])


def test_tour_runs(executed_notebooks: dict) -> None:
    """Every cell ran; the rich outputs a researcher meets are there (cache, vector and grid tables, the figure)."""
    nb = executed_notebooks[ROOT / "docs" / "notebooks" / "tour.ipynb"]
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert not [o for c in code for o in c.outputs if o.output_type == "error" or o.get("name") == "stderr"]
    html = "\n".join(outputs(nb, "text/html"))
    assert "<caption>ActivationCache" in html and "<caption>SteeringVector" in html and "GridResult(" in html
    figures = [h for h in outputs(nb, "text/html") if "Plotly.newPlot" in h]
    # the grid, the patching map and the attribution scatter, drawn with the page's one plotly.js
    assert len(figures) == 3 and not [f for f in figures if "<script src" in f]
    assert not outputs(nb, _hook().PLOTLY_MIME)
    # each figure carries a static image too, for renderers that run no JavaScript (GitHub, nbconvert, a PDF)
    bundles = [
        o["data"] for c in code for o in c.outputs if "Plotly.newPlot" in str(o.get("data", {}).get("text/html"))
    ]
    assert len(bundles) == len(figures) and all(base64.b64decode(b["image/png"])[:8] == PNG_MAGIC for b in bundles)
    text = "\n".join(outputs(nb, "text/plain") + [o.get("text", "") for c in code for o in c.outputs])
    assert "read as 3 steered" in text and "patched 1s read as 3" in text
    assert "activation patching, per unit, denoise, 200 pairs" in text and "1024 entries: Pearson r = " in text
    assert "dense, 512 units: 1s read as 3" in text and "sparse, top 50 units: 1s read as 3" in text
    assert "layer0.post   [batch, 4, 26, 26]" in text  # the CNN's hook table


def test_a_failing_cell_fails() -> None:
    """A cell that raises stops the run with its error; the kernel is this Python."""
    cells = ["import sys; print(sys.executable)", "1 / 0", "print('not reached')"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    with pytest.raises(CellExecutionError, match="ZeroDivisionError"):
        _hook().run(nb)
    assert [[o.get("text") for o in c.outputs if o.output_type == "stream"] for c in nb.cells] == [
        [sys.executable + "\n"],
        [],
        [],
    ]
