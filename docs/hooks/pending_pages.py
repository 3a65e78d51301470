"""MkDocs hook: a nav entry for a page that a command writes is left out until the page exists.

``hookedmlp study`` writes docs/study.md; until it is committed, the nav lists it without a
strict-build failure (an INFO line says it is left out). Once it is committed, remove it here,
so that losing the page fails the build like any other missing nav entry.
"""

import logging
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig

WRITTEN_BY = {"study.md": "hookedmlp study"}
log = logging.getLogger("mkdocs.hooks.pending_pages")


def without_pending(nav: list[Any], docs_dir: Path) -> list[Any]:
    """``nav`` without the entries of ``WRITTEN_BY`` whose page is missing (and sections left empty)."""
    kept = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            value = without_pending(value, docs_dir)
            if value:
                kept.append({next(iter(item)): value})
        elif isinstance(value, str) and value in WRITTEN_BY and not (docs_dir / value).is_file():
            log.info("nav: %s not written yet (by `%s`): left out", value, WRITTEN_BY[value])
        else:
            kept.append(item)
    return kept


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    if config.nav:
        config.nav = without_pending(config.nav, Path(config.docs_dir))
    return config
