"""MkDocs hook: the site shows docs/notebooks/*.ipynb executed, with their figures interactive.

The notebooks are stored without outputs, so nothing that runs them dirties the checkout. The
build runs them with ``execute`` (as tests/test_notebooks.py does): in an ipykernel of this
very Python (the venv's, whatever kernels Jupyter has installed elsewhere), in a temporary
working directory; a cell that raises fails the build. mkdocs-jupyter renders the result.

Plotly figures come out of a kernel as ``application/vnd.plotly.v1+json``, which JupyterLab
draws but nbconvert's HTML drops; ``execute`` replaces each with a ``text/html`` rendering
that draws with the site's one shared ``figures/plotly.min.js``, loaded on notebook pages.

Executed copies are cached in the system's temporary folder, keyed by everything that decides
their outputs (the notebook, hookedmlp/ and analysis/, this file, the Python and its
packages): a second build of the same sources does not run the notebooks again.
"""

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import posixpath
import re
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
import plotly.io as pio
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page
from mkdocs.utils import get_relative_url
from nbclient import NotebookClient

NOTEBOOKS = "notebooks/"
PLOTLY_JS = "figures/plotly.min.js"  # one copy for the whole site: see interactive_figures.py
PLOTLY_MIME = "application/vnd.plotly.v1+json"
KERNEL = "hookedmlp-docs"
CACHE = Path(tempfile.gettempdir()) / "hookedmlp-docs-notebooks"
KEEP = 8  # cache entries kept (one per state of the sources)
log = logging.getLogger("mkdocs.hooks.notebooks")


def kernel_manager(tmp: Path) -> KernelManager:
    """A manager for an ipykernel of ``sys.executable``: a kernel spec of our own under ``tmp``, none of Jupyter's."""
    kernel_dir = tmp / "kernels"
    spec = kernel_dir / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    # plain tracebacks: a failing cell reads well in a test report or the build log
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}", "--InteractiveShell.colors=nocolor"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    # IPC sockets beside the connection file in a temporary folder (TCP: a warning on every run)
    return KernelManager(
        kernel_name=KERNEL,
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]),
        transport="ipc",
        connection_file=str(tmp / "connection.json"),
    )


def execute(path: Path) -> nbformat.NotebookNode:
    """The notebook at ``path``, run (``run``), its plotly figures as HTML for the site."""
    nb = run(nbformat.read(path, as_version=4))
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if PLOTLY_MIME in data and "text/html" not in data:
                data["text/html"] = plotly_html(data.pop(PLOTLY_MIME))
    return nb


def run(nb: nbformat.NotebookNode, timeout: int = 300) -> nbformat.NotebookNode:
    """Run every cell of ``nb`` in place; raises ``nbclient.exceptions.CellExecutionError`` at the first that fails."""
    env = {k: v for k, v in os.environ.items() if k != "PLOTLY_RENDERER"}  # plotly's own default: the mimetype
    with tempfile.TemporaryDirectory(prefix="hookedmlp-nb-") as tmp:
        km = kernel_manager(Path(tmp))
        try:
            NotebookClient(
                nb, km=km, timeout=timeout, allow_errors=False, resources={"metadata": {"path": tmp}}
            ).execute(env=env)
        finally:
            if km.has_kernel:
                km.shutdown_kernel(now=True)  # the client does not own a kernel it was given
    return nb


def plotly_html(figure: dict) -> str:
    """A ``<div>`` drawing ``figure`` with the page's ``Plotly`` (no plotly.js or MathJax of its own)."""
    return pio.to_html(
        figure,
        include_plotlyjs=False,
        include_mathjax=False,
        full_html=False,
        validate=False,
        default_width="100%",
        config={"responsive": True},
    )


def cache_key(path: Path) -> str:
    """Hash of the notebook, every file of hookedmlp/ and analysis/, this hook, the Python and its packages."""
    h = hashlib.sha256(path.read_bytes())
    h.update(sys.executable.encode() + Path(__file__).read_bytes())  # this file turns the outputs into HTML
    h.update(repr(sorted((d.metadata["Name"] or "", d.version) for d in importlib.metadata.distributions())).encode())
    for package in ("hookedmlp", "hookedmlp_analysis"):  # found, not imported (torch): the sources the kernel will run
        folder = Path(importlib.util.find_spec(package).origin).parent
        for f in sorted(folder.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                h.update(f.relative_to(folder.parent).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:20]


def cache_path(path: Path, src_uri: str) -> Path:
    """Where the executed copy of ``path`` lives: ``KEY/src_uri``, a path mkdocs-jupyter's ``include`` matches."""
    return CACHE / cache_key(path) / src_uri


def store(nb: nbformat.NotebookNode, path: Path, src_uri: str) -> Path:
    """Write the executed ``nb`` (of the notebook at ``path``) to the cache; keeps the newest entries only."""
    out = cache_path(path, src_uri)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=out.parent, suffix=".partial", delete=False) as f:
        nbformat.write(nb, f)
    os.replace(f.name, out)
    entries = []
    for d in CACHE.iterdir():  # a shared folder: other checkouts' entries too, and their runs removing old ones
        try:
            entries.append((d.stat().st_mtime, d))
        except OSError:  # removed since iterdir listed it
            continue
    for _, old in sorted(entries)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return out


def executed_copy(path: Path, src_uri: str) -> Path:
    """The executed notebook: from the cache, or run now and stored."""
    out = cache_path(path, src_uri)
    if out.is_file():
        log.info("notebook %s: executed copy from the cache (%s)", src_uri, out)
        return out
    log.info("notebook %s: executing", src_uri)
    return store(execute(path), path, src_uri)


@event_priority(100)  # before mkdocs-jupyter turns the file into a page
def on_files(files: Files, config: MkDocsConfig) -> Files:
    for file in list(files):
        if file.src_uri.startswith(NOTEBOOKS) and file.src_uri.endswith(".ipynb"):
            files.remove(file)
            executed = executed_copy(Path(file.abs_src_path), file.src_uri)
            # a File read from the cache folder, not File.generated: mkdocs-jupyter reads src_dir
            src_dir = str(executed)[: -len(file.src_uri)]
            files.append(File(file.src_uri, src_dir, config.site_dir, config.use_directory_urls))
    return files


def on_page_content(html: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if not page.file.src_uri.startswith(NOTEBOOKS):
        return html

    def page_link(m: re.Match) -> str:
        """A notebook's link to a page (``../steering.md``, as Jupyter opens it) made a link to the built page."""
        path = posixpath.normpath(posixpath.join(posixpath.dirname(page.file.src_uri), m["path"]))
        target = files.get_file_from_path(path)
        if target is None:
            log.warning("%s links to %s, which is not a page of the site", page.file.src_uri, m["path"])
            return m[0]
        return f'href="{get_relative_url(target.url, page.file.url)}{m["anchor"] or ""}"'

    html = re.sub(r'href="(?P<path>(?![a-z]+:)[^"#]+\.md)(?P<anchor>#[^"]*)?"', page_link, html)
    # mkdocs-jupyter writes <script src=""> when no MathJax URL is set: the browser would run the page as a script
    html = re.sub(r'<script src="">\s*</script>', "", html)
    if "Plotly.newPlot" in html:
        html = f'<script src="{get_relative_url(PLOTLY_JS, page.file.url)}"></script>\n{html}'
    return html
