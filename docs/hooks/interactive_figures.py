"""MkDocs hook: figures open full size, and the interactive figures share one plotly.js.

``hookedmlp reproduce`` and ``hookedmlp study`` write each figure twice into docs/figures/:
``NAME.png`` (committed) and ``NAME.html`` (gitignored, generated), a page that loads the
``plotly.min.js`` written beside it. MkDocs copies whatever is there into the site. This hook

- puts ``figures/plotly.min.js`` into the site from the installed plotly package when the
  checkout has none, and in each built ``figures/*.html`` that carries plotly.js inline (written
  by an older hookedmlp) replaces it with a reference to that copy, so the site carries exactly
  one (notebook pages use it too);
- on a site built without the generated figures (a fresh clone, before ``hookedmlp
  reproduce``), turns each link to a missing generated ``figures/NAME.html`` into plain text,
  logged at INFO with the command that writes it. Only targets matching ``GENERATED`` whose
  PNG is committed beside them (or named in ``HTML_ONLY``) are treated so: any other missing
  link still fails the strict build;
- opens an image that links to itself (``[![alt](figures/x.png)](figures/x.png)``) in the
  lightbox, like the bare images mkdocs-glightbox wraps.
"""

import fnmatch
import logging
import posixpath
import re
from pathlib import Path

import plotly
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

PLOTLY_JS = "figures/plotly.min.js"
# what the commands write and .gitignore keeps out of a clone: pattern -> the command (the first match)
GENERATED = {"figures/study_*.html": "hookedmlp study", "figures/*.html": "hookedmlp reproduce"}
HTML_ONLY = ("figures/distributions_all.html",)  # generated figures with no static PNG beside them
log = logging.getLogger("mkdocs.hooks.interactive_figures")

# [text](target.html), with the parentheses around it when the link is all they hold: " ([interactive](x.html))"
_LINK = re.compile(r"(?P<open> ?\()?\[(?P<text>[^\]]+)\]\((?P<target>[^)\s]+\.html)\)(?P<close>\))?")
_SELF_LINKED_IMAGE = re.compile(r'<a href="(?P<href>[^"]+)">(?P<img>\s*<img\b[^>]*\bsrc="(?P=href)")')


def on_files(files: Files, config: MkDocsConfig) -> Files:
    if files.get_file_from_path(PLOTLY_JS) is None:
        bundled = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
        files.append(File.generated(config, PLOTLY_JS, abs_src_path=str(bundled)))
    return files


def written_by(path: str) -> str:
    """The command that writes the generated file ``path`` (relative to docs/)."""
    return next(command for pattern, command in GENERATED.items() if fnmatch.fnmatch(path, pattern))


def missing_generated_figure(target: str, page: Page, files: Files) -> bool:
    """``target`` (a link on ``page``) is a generated figure absent from this build (its PNG there, or none made)."""
    path = posixpath.normpath(posixpath.join(posixpath.dirname(page.file.src_uri), target))
    if files.get_file_from_path(path) is not None or not any(fnmatch.fnmatch(path, p) for p in GENERATED):
        return False
    return path in HTML_ONLY or files.get_file_from_path(path[: -len(".html")] + ".png") is not None


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    def unlink(m: re.Match) -> str:
        if "://" in m["target"] or not missing_generated_figure(m["target"], page, files):
            return m[0]
        path = posixpath.normpath(posixpath.join(posixpath.dirname(page.file.src_uri), m["target"]))
        log.info("%s: %s not built (run `%s`): link left out", page.file.src_uri, m["target"], written_by(path))
        if m["open"] and m["close"]:
            return ""
        return (m["open"] or "") + m["text"] + (m["close"] or "")

    return _LINK.sub(unlink, markdown)


_INLINE_PLOTLY = re.compile(r"<script[^>]*>/\*\*\s*\* plotly\.js v")


def shared_plotly(page: str) -> str:
    """``page`` with its inline plotly.js bundle (if any) replaced by ``<script src="plotly.min.js">``."""
    start = _INLINE_PLOTLY.search(page)
    end = page.find("</script>", start.end()) if start else -1
    if start is None or end < 0:
        return page
    return page[: start.start()] + '<script src="plotly.min.js"></script>' + page[end + len("</script>") :]


def on_post_build(config: MkDocsConfig) -> None:
    for path in (Path(config.site_dir) / "figures").glob("*.html"):
        text = path.read_text(encoding="utf-8")
        shared = shared_plotly(text)
        if shared != text:
            path.write_text(shared, encoding="utf-8")


def on_page_content(html: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    return _SELF_LINKED_IMAGE.sub(r'<a class="glightbox" data-type="image" href="\g<href>">\g<img>', html)
