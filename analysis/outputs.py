"""Writing a run's tracked files only where they changed beyond the precision they report.

Float results differ in their last bits across machines (BLAS kernels, thread counts), so a
report regenerated elsewhere would differ from the committed one in a digit here and there. A
file is therefore rewritten only if its text differs outside numbers, or some number differs by
more than one unit in its last printed digit; a figure's image only if the numbers it shows
(kept in a manifest) did. Running the main job on a clean checkout leaves it clean.
"""

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from hookedmlp.files.atomic import atomic_write

__all__ = ["same_to_precision", "Outputs", "numbers_of", "JSON_REL"]

JSON_REL = 1e-4  # saved results agree across machines to far better than this, and reports print less

# A number standing alone (not the digit of a name such as layer0): integers must match exactly, decimals to
# one unit in their last printed digit.
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.(\d+))?(?:[eE][-+]?\d+)?(?!\w)")


def _split(text: str) -> tuple[list[str], list[tuple[float, float]]]:
    words, numbers, last = [], [], 0
    for m in _NUMBER.finditer(text):
        words.append(text[last : m.start()])
        token = m.group(0)
        if m.group(1) is None and "e" not in token.lower():
            numbers.append((float(token), 0.0))
            continue
        scale = 10.0 ** int(token.lower().split("e")[1]) if "e" in token.lower() else 1.0
        numbers.append((float(token), 1.01 * scale * 10.0 ** -len(m.group(1) or "")))
        last = m.end()
    words.append(text[last:])
    return words, numbers


def same_to_precision(old: str, new: str, rel: float = 0.0) -> bool:
    """Whether ``new`` equals ``old`` but for numbers that differ by at most one unit in their last printed digit.

    With ``rel``, decimals may also differ by ``rel`` of their size (for data files, which print more digits than
    the machine agrees on).
    """
    old_words, old_numbers = _split(old)
    new_words, new_numbers = _split(new)
    if old_words != new_words or len(old_numbers) != len(new_numbers):
        return False
    return all(
        abs(a - b) <= max(ta, tb, rel * max(abs(a), abs(b)) if ta or tb else 0.0)
        for (a, ta), (b, tb) in zip(old_numbers, new_numbers)
    )


class Outputs:
    """The files one run writes under ``root``; ``written`` and ``kept`` list what was (re)written or left alone."""

    def __init__(self, root: Path, manifest: str = "figures/manifest.json", code: str = "") -> None:
        """``code`` names the version of the code that draws the figures: a new one redraws every PNG."""
        self.root = Path(root)
        self.code = code
        self.manifest_path = self.root / manifest
        self.manifest: dict[str, str] = {}
        if self.manifest_path.exists():
            try:
                self.manifest = json.loads(self.manifest_path.read_text())
            except (OSError, ValueError):
                self.manifest = {}
        self._manifest_changed = False
        self.written: list[Path] = []
        self.kept: list[Path] = []

    def text(self, relpath: str, text: str, rel: float = 0.0) -> Path:
        """Write ``text`` to ``root/relpath`` unless the file there says the same to its precision."""
        path = self.root / relpath
        if path.exists() and same_to_precision(path.read_text(), text, rel):
            self.kept.append(path)
            return path
        with atomic_write(path, "w") as f:
            f.write(text)
        self.written.append(path)
        return path

    def figure(
        self, stem: str, numbers: Sequence[float], write: Callable[[Path, Sequence[str]], list[Path]], digits: int = 4
    ) -> list[Path]:
        """Write the figure ``root/stem`` (``write(path_stem, formats)``); its PNG only if ``numbers`` changed.

        ``numbers`` are what the figure shows, rounded to ``digits`` significant digits in the
        manifest. The interactive HTML (not tracked) is always written.
        """
        summary = " ".join(f"{float(v):.{digits - 1}e}" for v in numbers)
        png = self.root / f"{stem}.png"
        old = self.manifest.get(stem)
        formats = ["html"]
        redraw = self.manifest.get(f"{stem}@code", "") != self.code
        if redraw or old is None or not png.exists() or not same_to_precision(old, summary):
            formats.append("png")
            self.manifest[stem] = summary
            self.manifest[f"{stem}@code"] = self.code
            self._manifest_changed = True
        else:
            self.kept.append(png)
        paths = write(self.root / stem, formats)
        self.written += paths
        return paths

    def close(self) -> Optional[Path]:
        """Write the manifest if a figure's numbers changed; returns its path if written."""
        if not self._manifest_changed:
            return None
        with atomic_write(self.manifest_path, "w") as f:
            json.dump(self.manifest, f, indent=1, sort_keys=True)
            f.write("\n")
        self.written.append(self.manifest_path)
        return self.manifest_path


def numbers_of(*arrays: Any) -> list[float]:
    """Every number of ``arrays`` (nested lists, numpy arrays, scalars), flattened."""
    return [float(v) for a in arrays for v in np.asarray(a, dtype=float).ravel()]
