"""The built site in headless Chromium at 1280 px: tables fit or scroll, and never break a name mid-word.

The study page's tables must fit the text column outright (its table hid three columns off-screen
and broke ``layer3.post`` in two). Needs Debian's ``chromium`` (``.ci/run`` installs it).
"""

import functools
import http.server
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from _browser import Browser, chromium
from test_docs import built_site  # noqa: F401  (a fixture: the site test_docs builds, built once)
from test_notebooks import executed_notebooks  # noqa: F401  (the fixture built_site depends on)

WIDTH = 1280
MUST_FIT = ("study/",)  # pages whose tables fit the column without scrolling

pytestmark = [
    pytest.mark.skipif(chromium() is None, reason="needs Debian's chromium (.ci/run installs it)"),
    pytest.mark.xdist_group("site"),  # one pytest-xdist worker builds the site once for this file and test_docs
]

# Every table of the page: is it wider than the text column, can its wrapper scroll, and which words are
# split mid-word: between two letters or digits (layer3.pos|t), not after a dot, a hyphen or a bracket.
TABLES = """(() => {
  const column = document.querySelector('.md-content__inner').getBoundingClientRect();
  function brokenWords(table) {
    const broken = [];
    const walker = document.createTreeWalker(table, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (const word of node.data.matchAll(/\\S+/g)) {
        let top = null;
        for (let i = 0; i < word[0].length; i++) {
          const range = document.createRange();
          range.setStart(node, word.index + i);
          range.setEnd(node, word.index + i + 1);
          const rect = range.getClientRects()[0];
          if (!rect) continue;
          const inside = /[A-Za-z0-9]/.test(word[0][i - 1]) && /[A-Za-z0-9]/.test(word[0][i]);
          if (top !== null && Math.abs(rect.top - top) > 2 && inside) broken.push(word[0]);
          top = rect.top;
        }
      }
    }
    return broken;
  }
  return [...document.querySelectorAll('.md-content table')].map(table => {
    const wrap = table.closest('.md-typeset__scrollwrap') || table.parentElement;
    return {
      head: table.rows[0].innerText.replace(/\\s+/g, ' ').trim().slice(0, 60),
      wider: Math.max(table.getBoundingClientRect().right - column.right, table.scrollWidth - table.clientWidth,
                      wrap.scrollWidth - wrap.clientWidth) > 1,
      scrolls: ['auto', 'scroll'].includes(getComputedStyle(wrap).overflowX) ||
               ['auto', 'scroll'].includes(getComputedStyle(table).overflowX),
      broken: brokenWords(table),
    };
  });
})()"""


@pytest.fixture(scope="module")
def pages(built_site: tuple[subprocess.CompletedProcess, Path], tmp_path_factory) -> Iterator[dict]:  # noqa: F811
    """``{page: its tables}`` for every page of the site, loaded at ``WIDTH`` px; the study page's screenshot."""
    proc, site = built_site
    if proc.returncode != 0:
        pytest.skip("the site did not build (tests/test_docs.py says why)")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    browser = Browser()
    try:
        found = {}
        for index in sorted(site.rglob("index.html")):
            page = "" if index.parent == site else index.parent.relative_to(site).as_posix() + "/"
            browser.open(f"http://127.0.0.1:{server.server_port}/{page}", WIDTH)
            found[page] = browser.evaluate(TABLES)
            if page in MUST_FIT:
                browser.screenshot(tmp_path_factory.mktemp("screenshots") / f"{page.strip('/')}.png")
        yield found
    finally:
        browser.close()
        server.shutdown()


def test_every_page_was_measured(pages: dict) -> None:
    assert {"", "study/", "reproduction/", "steering/", "notebooks/tour/"} <= set(pages)
    assert len(pages["study/"]) == 10 and len(pages["reproduction/"]) >= 8


def test_the_study_tables_fit_the_column(pages: dict) -> None:
    assert [t["head"] for page in MUST_FIT for t in pages[page] if t["wider"]] == []


def test_no_table_breaks_a_word_and_wide_ones_scroll(pages: dict) -> None:
    assert {page: [t["broken"] for t in tables if t["broken"]] for page, tables in pages.items()} == {
        page: [] for page in pages
    }
    assert [
        (page, t["head"]) for page, tables in pages.items() for t in tables if t["wider"] and not t["scrolls"]
    ] == []
