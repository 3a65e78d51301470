"""The documentation site builds offline with ``mkdocs build --strict``.

Every ```python example on the site (docs/*.md) and in README.md runs as its own test through
pytest-markdown-docs (``--markdown-docs`` in pyproject's pytest options), and the notebooks run
in tests/test_notebooks.py; this file checks the build itself: nav, links between pages,
anchors, every link of the built HTML, the API pages generated from docstrings (wrapped
signatures, jaxtyping shapes as written), the notebook page, and the one shared plotly.js; and
the site's hooks (docs/hooks/) on their own.
"""

import fnmatch
import html
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import griffe
import plotly.graph_objects as go
import pytest
from mkdocs.structure.files import File, Files
from test_notebooks import executed_notebooks  # noqa: F401  (a fixture: the builds render these, run once)

ROOT = Path(__file__).resolve().parents[1]
# With test_notebooks and test_site_browser on one pytest-xdist worker (--dist loadgroup): the notebooks run and the
# site is built once, not once per worker.
pytestmark = pytest.mark.xdist_group("site")


def build(site_dir: Path, config: Path = ROOT / "mkdocs.yml") -> subprocess.CompletedProcess:
    """``python -m mkdocs build --strict`` of ``config``, offline, into ``site_dir``."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's end-of-life banner
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(config),
            "--site-dir",
            str(site_dir),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def check_build(proc: subprocess.CompletedProcess) -> None:
    """The strict build passed: exit 0, no warning, and mkdocstrings found its signature formatter."""
    output = proc.stdout + proc.stderr
    warnings = [line for line in output.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert proc.returncode == 0 and not warnings, f"mkdocs build --strict failed (exit {proc.returncode}):\n{output}"
    assert "Formatting signatures requires" not in output, output


class _Links(HTMLParser):
    """Every ``href`` and ``src`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.urls += [v for k, v in attrs if k in ("href", "src") and v is not None]


def dead_links(site: Path) -> list[str]:
    """Links and sources of the built pages that point at no file of the site."""
    dead = []
    for page in site.rglob("*.html"):
        parser = _Links()
        parser.feed(page.read_text(encoding="utf-8"))
        for url in parser.urls:
            path = url.split("#")[0].split("?")[0]
            if not path or re.match(r"^([a-z]+:|//)", path) or page.name == "404.html":
                continue  # an anchor, another site, or the 404 page (links from the site root, wherever it is served)
            target = (page.parent / path).resolve()
            if not (target / "index.html" if target.is_dir() else target).is_file():
                dead.append(f"{page.relative_to(site)}: {url}")
    return dead


def signatures(site: Path) -> list[str]:
    """The text of every API signature block of the site."""
    blocks = []
    for page in site.glob("api*/index.html"):
        for block in re.findall(r'<div class="[^"]*\bdoc-signature\b[^"]*"><pre>(.*?)</pre>', page.read_text(), re.S):
            blocks.append(html.unescape(re.sub(r"<[^>]+>", "", block)))
    return blocks


def check_site(site: Path, docs: Path) -> None:
    """What a reader of the built site relies on, beyond the build's own link checks."""
    assert not dead_links(site)
    # one plotly.js, shared by the interactive figures (those the docs have) and the notebook pages
    assert list(site.rglob("plotly*.js")) == [site / "figures" / "plotly.min.js"]
    built = sorted(p.name for p in (site / "figures").glob("*.html"))
    assert built == sorted(p.name for p in (docs / "figures").glob("*.html"))
    assert not [p for p in (site / "figures").glob("*.html") if "* plotly.js v" in p.read_text(encoding="utf-8")]
    # API signatures wrap at mkdocstrings' line_length; jaxtyping shapes read as written
    line_length = int(re.search(r"^ +line_length: (\d+)$", (ROOT / "mkdocs.yml").read_text(), re.M)[1])
    sigs = signatures(site)
    assert len(sigs) > 100 and max(len(line) for s in sigs for line in s.splitlines()) <= line_length
    shapes = [m for s in sigs for m in re.findall(r"\b(?:Float|Int|Shaped|Bool)\[Tensor, [^\]]*\]", s)]
    assert shapes and all(re.fullmatch(r'\w+\[Tensor, "[^"]*"\]', m) for m in shapes), shapes
    assert 'Shaped[Tensor, "batch *example"]' in shapes
    # the notebook, run, with its figure drawn by the shared plotly.js
    tour = (site / "notebooks" / "tour" / "index.html").read_text()
    assert "<caption>ActivationCache" in tour and "Plotly.newPlot" in tour
    assert '<script src="../../figures/plotly.min.js"></script>' in tour


@pytest.fixture(scope="session")
def built_site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess, Path]:
    """The site as it is in this checkout (with docs/figures/*.html if `hookedmlp reproduce` wrote them), built once."""
    request.getfixturevalue("executed_notebooks")  # the build renders them from the cache
    site = tmp_path_factory.mktemp("built") / "site"
    return build(site), site


def test_docs_build_strict(built_site: tuple[subprocess.CompletedProcess, Path]) -> None:
    proc, site = built_site
    check_build(proc)
    check_site(site, ROOT / "docs")


@pytest.mark.usefixtures("executed_notebooks")
def test_docs_build_strict_fresh_clone(tmp_path: Path) -> None:
    """The site without the generated files .gitignore keeps out of a clone (docs/figures/*.html...)."""
    patterns = [
        line.strip()[len("docs/") :]
        for line in (ROOT / ".gitignore").read_text().splitlines()
        if line.strip().startswith("docs/")
    ]
    docs = ROOT / "docs"
    ignored = [
        p
        for p in docs.rglob("*")
        if p.is_file() and any(fnmatch.fnmatch(p.relative_to(docs).as_posix(), pat) for pat in patterns)
    ]
    if not ignored:
        pytest.skip("no generated files under docs/: test_docs_build_strict already built the fresh-clone site")
    copy = tmp_path / "docs"
    shutil.copytree(docs, copy, ignore=lambda d, names: [n for n in names if Path(d, n) in ignored])
    config = tmp_path / "mkdocs.yml"
    config.write_text(f"INHERIT: {json.dumps(str(ROOT / 'mkdocs.yml'))}\ndocs_dir: {json.dumps(str(copy))}\n")
    check_build(build(tmp_path / "site", config))
    check_site(tmp_path / "site", copy)


CODE_WIDTH = 88  # what a page's code block shows without scrolling; docs/ruff.toml formats them so


def test_code_examples_fit_the_page() -> None:
    """Every line of every ```python example, comments included (ruff wraps code, never comments)."""
    long = [
        f"{page.relative_to(ROOT)}:{text[: m.start()].count(chr(10)) + 2 + i}: {line}"
        for page in [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
        for text in [page.read_text()]
        for m in re.finditer(r"```python[^\n]*\n(.*?)```", text, re.S)
        for i, line in enumerate(m[1].splitlines())
        if len(line) > CODE_WIDTH
    ]
    assert long == []
    assert f"line-length = {CODE_WIDTH}" in (ROOT / "docs" / "ruff.toml").read_text()


def test_dead_links_are_found(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "index.html").write_text("<p>b</p>")
    (tmp_path / "index.html").write_text(
        '<a href="b/">b</a> <a href="#top">top</a> <a href="https://x.org/y.png">x</a>'
        ' <img src="figures/x.png"> <a href="b/#c">c</a> <script src="gone.js"></script>'
    )
    assert dead_links(tmp_path) == ["index.html: figures/x.png", "index.html: gone.js"]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"hookedmlp_docs_{name}", ROOT / "docs" / "hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_figure_patterns_are_gitignored() -> None:
    """The hook leaves out links only to what `hookedmlp reproduce` writes and a clone lacks."""
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    patterns = _load("interactive_figures").GENERATED
    assert all(any(fnmatch.fnmatch(f"docs/{pattern}", line) for line in ignored) for pattern in patterns)


def test_nav_leaves_out_a_page_its_command_has_not_written(tmp_path: Path) -> None:
    hook = _load("pending_pages")
    nav = [
        {"Home": "index.md"},
        {"The study": [{"Reproduced": "reproduction.md"}, {"Which?": "study.md"}]},
        {"Pending only": [{"Which?": "study.md"}]},
        "study.md",
    ]
    assert hook.without_pending(nav, tmp_path) == [
        {"Home": "index.md"},
        {"The study": [{"Reproduced": "reproduction.md"}]},
    ]
    (tmp_path / "study.md").write_text("# Which?\n")
    assert hook.without_pending(nav, tmp_path) == nav


def test_links_to_missing_interactive_figures_become_text(tmp_path: Path) -> None:
    """A fresh clone: a link to a generated figure not built becomes text; any other missing link stays, to fail."""
    hook = _load("interactive_figures")
    page = SimpleNamespace(file=SimpleNamespace(src_uri="reproduction.md"))
    markdown = (
        "[![Grid](figures/grid.png)](figures/grid.png) ([interactive](figures/grid.html))\n"
        "See [the grid](figures/grid.html), [a typo](figures/gird.html), [the study](study.html).\n"
    )
    docs = [File(p, str(tmp_path), str(tmp_path / "site"), True) for p in ("reproduction.md", "figures/grid.png")]
    assert hook.on_page_markdown(markdown, page, None, Files(docs)) == (
        "[![Grid](figures/grid.png)](figures/grid.png)\n"
        "See the grid, [a typo](figures/gird.html), [the study](study.html).\n"
    )
    built = Files(docs + [File("figures/grid.html", str(tmp_path), str(tmp_path / "site"), True)])
    assert hook.on_page_markdown(markdown, page, None, built) == markdown


def test_a_missing_figure_names_the_command_that_writes_it(tmp_path: Path, caplog) -> None:
    hook = _load("interactive_figures")
    page = SimpleNamespace(file=SimpleNamespace(src_uri="study.md"))
    pngs = ("study.md", "figures/study_layers.png", "figures/grid_loss.png")
    files = Files([File(p, str(tmp_path), str(tmp_path / "site"), True) for p in pngs])
    with caplog.at_level("INFO", logger="mkdocs.hooks.interactive_figures"):
        hook.on_page_markdown("[a](figures/study_layers.html) [b](figures/grid_loss.html)", page, None, files)
    assert [r.getMessage() for r in caplog.records] == [
        "study.md: figures/study_layers.html not built (run `hookedmlp study`): link left out",
        "study.md: figures/grid_loss.html not built (run `hookedmlp reproduce`): link left out",
    ]


def test_images_linked_to_themselves_open_in_the_lightbox() -> None:
    page = '<p><a href="../figures/x.png"><img alt="X" src="../figures/x.png" /></a> <a href="x.html">x</a></p>'
    assert _load("interactive_figures").on_page_content(page, None, None, None) == (
        '<p><a class="glightbox" data-type="image" href="../figures/x.png"><img alt="X" src="../figures/x.png" /></a>'
        ' <a href="x.html">x</a></p>'
    )


def test_site_figures_share_one_plotly(tmp_path: Path) -> None:
    """A standalone figure page loses its inline plotly.js to the site's one copy; nothing else changes."""
    hook = _load("interactive_figures")
    page = go.Figure(go.Scatter(y=[1, 2])).to_html(include_plotlyjs=True, full_html=True)
    shared = hook.shared_plotly(page)
    assert len(page) > 1_000_000 and len(shared) < 20_000
    assert shared.count('<script src="plotly.min.js"></script>') == 1 and "* plotly.js v" not in shared
    assert "window.PlotlyConfig" in shared and "Plotly.newPlot" in shared
    assert hook.shared_plotly(shared) == shared
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "a.html").write_text(page)
    (figures / "b.html").write_text(shared)
    hook.on_post_build(SimpleNamespace(site_dir=str(tmp_path)))
    assert (figures / "a.html").read_text() == (figures / "b.html").read_text() == shared


def test_the_api_pages_see_hookedmlps_lazy_exports() -> None:
    """hookedmlp imports its names on first use (no import statements): the griffe extension reads the same table."""
    import hookedmlp

    extension = _load("griffe_exports").LazyExports
    package = griffe.load("hookedmlp", search_paths=[str(ROOT)], extensions=griffe.load_extensions(extension))
    names = [n for n in hookedmlp.__all__ if n != "__version__"]
    assert names and all(package[n].is_alias for n in names)
    assert package["HookedRoot"].target_path == "hookedmlp.hooks.root.HookedRoot"
    assert package["load"].target_path == "hookedmlp.files.checkpoint.load_checkpoint"
    assert package["HookedMLP"].docstring.value.startswith(hookedmlp.HookedMLP.__doc__.strip()[:40])


def test_jaxtyping_shapes_keep_their_strings(tmp_path: Path) -> None:
    """Griffe parses ``"batch *example"`` as ``batch * example``; the extension keeps the string, nothing else."""
    (tmp_path / "shapes.py").write_text(
        "from typing import Optional\nfrom jaxtyping import Float, Int\nfrom torch import Tensor\n\n\n"
        'def f(x: Float[Tensor, "batch *example"], n: "Optional[int]" = None, *rest: Int[Tensor, "batch"])'
        ' -> tuple[Float[Tensor, "batch d_in"], Int[Tensor, " batch"]]: ...\n'
    )

    def annotations(extensions: griffe.Extensions) -> list[str]:
        f = griffe.load("shapes", search_paths=[str(tmp_path)], extensions=extensions)["f"]
        return [str(p.annotation) for p in f.parameters] + [str(f.returns)]

    assert annotations(griffe.load_extensions()) == [
        "Float[Tensor, batch * example]",
        "Optional[int]",
        "Int[Tensor, batch]",
        "tuple[Float[Tensor, 'batch d_in'], Int[Tensor, ' batch']]",
    ]  # what does not parse stays a string
    assert annotations(griffe.load_extensions(_load("griffe_jaxtyping").JaxtypingShapes)) == [
        'Float[Tensor, "batch *example"]',
        "Optional[int]",
        'Int[Tensor, "batch"]',
        'tuple[Float[Tensor, "batch d_in"], Int[Tensor, " batch"]]',
    ]
