"""What ``analysis.steerability`` measures, as data: its settings, one result per site, and the model's whole result.

A *site* is where a pair's vector is added: a hook class, or a control (the two-logit bias, pixel
arithmetic where no hook class holds the input, a random vector of the same norm at a class).
``Steerability.table()`` gives one row per (site, pair), the unit later measurements join on.
"""

import ast
import dataclasses
import hashlib
import math
from pathlib import Path
from typing import Any, Optional

import numpy as np

from hookedmlp.checks import check_int, check_number
from hookedmlp.errors import ConfigError, UsageError
from hookedmlp_analysis.metrics import DECIMALS, ByName, check_axis, check_level, check_score, rounded
from hookedmlp_analysis.selectivity import COEFFS, FLIP, KEEP

__all__ = ["SteerSettings", "SiteResult", "Steerability", "analysis_version", "FRONTIER", "SENSITIVITY"]

FRONTIER = tuple(round(0.01 * i, 2) for i in range(21))  # collateral levels the mean frontier is kept at
SENSITIVITY = ((0.3, 0.5, 0.7), (0.8, 0.9, 0.95))  # FLIP and KEEP thresholds the binary number is re-derived at
_MEASURING = (
    *("metrics", "paths", "curves", "rows", "hook_classes", "steer_result", "steerability", "selectivity"),
    "properties",
)


def analysis_version(root: Optional[Path] = None) -> str:
    """A digest of the measuring modules' code in ``root`` (default: ``analysis/``): their syntax trees without
    docstrings, comments or layout, so any change to what they compute gives another version."""
    h = hashlib.sha256()
    for name in _MEASURING:
        tree = ast.parse(((root or Path(__file__).parent) / f"{name}.py").read_text())
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
                if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                    node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined]
        h.update(ast.dump(tree).encode())
    return h.hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class SteerSettings:
    """How finely curves are traced, and the levels scores are read at.

    Args:
        c_min: the smallest coefficient; the grid doubles from it (the default grid is the old
            selectivity's coefficients, 0.125 to 8).
        c_max: the largest coefficient, where the grid ends.
        steps: bisection steps per grid interval (6: switches located to 2^(1/64), 1.1%).
        draws: random vectors per hook class (seeded by ``seed``).
        pauc_level: the collateral level the primary score's area runs up to.
        heldout_level: the collateral level the held-out flip rate is read at.
        seed: seeds the random controls.
    """

    c_min: float = 0.125
    c_max: float = 8.0
    steps: int = 6
    draws: int = 3
    pauc_level: float = 0.1
    heldout_level: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        lo = check_number(self.c_min, "c_min", 0.0, low_open=True)
        hi = check_number(self.c_max, "c_max", 0.0, low_open=True)
        if not lo < hi:
            raise ConfigError(
                f"the coefficient range [c_min, c_max] = [{self.c_min:g}, {self.c_max:g}] is empty; it needs "
                "0 < c_min < c_max (the default is [0.125, 8])"
            )
        check_int(self.steps, "steps", low=0, high=17)
        check_int(self.draws, "draws", low=0)
        check_level(self.pauc_level, "pauc_level")
        check_level(self.heldout_level, "heldout_level")
        check_int(self.seed, "seed", low=0)

    @property
    def grid(self) -> np.ndarray:
        """The coefficients every path is evaluated at exactly: ``c_min`` doubling, ending at ``c_max``."""
        n = math.ceil(math.log2(self.c_max / self.c_min) - 1e-9)
        return np.minimum(self.c_min * 2.0 ** np.arange(n + 1), self.c_max)

    @property
    def samples(self) -> np.ndarray:
        """The coefficients curves are kept at: two per doubling over the range."""
        n = math.ceil(2 * math.log2(self.c_max / self.c_min) - 1e-9)
        return np.minimum(self.c_min * 2.0 ** (np.arange(n + 1) / 2), self.c_max)


@dataclasses.dataclass
class SiteResult(ByName):
    """One site's scores per pair (``metrics[score]`` ``[pair]``), its curves and its old-grid metrics.

    ``curves`` holds ``flip``, ``collateral`` and ``kl`` ``[pair, sample]`` at ``SteerSettings.samples``
    and ``frontier`` ``[pair, level]`` at ``FRONTIER``; ``grid`` holds each metric of ``METRICS``
    ``[pair, coefficient]`` at ``SteerSettings.grid`` (not for random vectors). For a pair's own
    vector, switches are located by bisection up to the grid point from which the collateral stays above both score
    levels on both halves; beyond it, where no score reads the curve, ``flip`` and ``collateral``
    are exact at grid points and held between them.
    """

    name: str
    kind: str  # "class", "bias", "pixel" or "random"
    role: str  # a class's role ("input", "internal", "logits"); for a random vector, its class's
    hooks: list[str]
    depth: float
    draw: int
    metrics: dict[str, np.ndarray]
    rel_scale: np.ndarray  # [pair]: ||v|| / E||h||, the relative perturbation at coefficient 1
    curves: dict[str, np.ndarray]
    grid: dict[str, np.ndarray]


@dataclasses.dataclass
class Steerability:
    """Every site of one model: hook classes and controls, scored for every pair. See ``analysis.steerability``."""

    pairs: list[tuple[int, int]]
    settings: dict[str, Any]
    n_test: int
    base_accuracy: np.ndarray  # [pair]: unsteered accuracy on the digits other than b
    sites: list[SiteResult]
    version: str
    engine: str = ""

    def site(self, name: str) -> SiteResult:
        names = [s.name for s in self.sites]
        if name not in names:
            raise UsageError(f"no site {name!r}; the sites are {', '.join(map(repr, names))}")
        return self.sites[names.index(name)]

    @property
    def classes(self) -> list[SiteResult]:
        return [s for s in self.sites if s.kind == "class"]

    @property
    def logit_class(self) -> Optional[SiteResult]:
        """The class reaching the logits through affine maps only (a control), if any."""
        return next((s for s in self.classes if s.role == "logits"), None)

    @property
    def internal(self) -> list[SiteResult]:
        """The classes that are neither the input's nor the logits'."""
        return [s for s in self.classes if s.role == "internal"]

    @property
    def pixel(self) -> SiteResult:
        """Pixel arithmetic: the input class, or the pixel control where no hook class holds the input."""
        return next(s for s in self.sites if s.role == "input" and s.kind in ("class", "pixel"))

    @property
    def bias(self) -> SiteResult:
        return next(s for s in self.sites if s.kind == "bias")

    def random(self, name: str) -> list[SiteResult]:
        """The random controls of class ``name``."""
        return [s for s in self.sites if s.kind == "random" and s.hooks == self.site(name).hooks]

    def best_internal(self, score: str = "pauc") -> Optional[SiteResult]:
        """The internal class with the highest mean ``score`` on the tuning half (``pauc_tune`` for the pAUC)."""
        by = "pauc_tune" if check_score(score) == "pauc" else score
        inside = self.internal
        return max(inside, key=lambda s: float(np.nanmean(s.metrics[by]))) if inside else None

    def selective(self, site: SiteResult, flip: float = FLIP, keep: float = KEEP) -> np.ndarray:
        """``[pair, coefficient]`` of the grid: at least ``flip`` of b's images read as a, and at least ``keep``
        of the unsteered accuracy on the other digits (the old binary criterion at each coefficient)."""
        check_level(flip, "flip"), check_level(keep, "keep")
        if not site.grid:
            raise UsageError(f"site {site.name!r} ({site.kind}) has no grid metrics to derive the binary number from")
        return (site.grid["flip_rate"] >= flip) & (site.grid["accuracy_other"] >= keep * self.base_accuracy[:, None])

    def binary(self, site: SiteResult, flip: float = FLIP, keep: float = KEEP) -> np.ndarray:
        """Per pair, the old binary selectivity: selective at some coefficient of the old grid (``COEFFS``)."""
        grid = SteerSettings(**self.settings).grid
        old = (grid >= min(COEFFS) * (1 - 1e-9)) & (grid <= max(COEFFS) * (1 + 1e-9))
        return self.selective(site, flip, keep)[:, old].any(1).astype(np.float64)

    def sensitivity(self, site: SiteResult) -> np.ndarray:
        """``[flip, keep]``: the share of selective pairs at each pair of ``SENSITIVITY`` thresholds."""
        return np.array([[float(self.binary(site, f, k).mean()) for k in SENSITIVITY[1]] for f in SENSITIVITY[0]])

    def curve(self, site: SiteResult, pair: tuple[int, int], axis: str = "coeff") -> tuple[np.ndarray, ...]:
        """``(x, flip rate, collateral)`` of one pair at ``site``, at ``SteerSettings.samples``, against ``axis``:
        ``"coeff"`` (the coefficient), ``"relative"`` (``||c v|| / E||h||``) or ``"kl"`` (mean KL on the other digits).
        """
        if tuple(pair) not in self.pairs:
            raise UsageError(f"no pair {tuple(pair)}; the pairs are {self.pairs}")
        p = self.pairs.index(tuple(pair))
        samples = SteerSettings(**self.settings).samples
        x = {"coeff": samples, "relative": samples * site.rel_scale[p], "kl": site.curves["kl"][p]}[check_axis(axis)]
        return x, site.curves["flip"][p], site.curves["collateral"][p]

    def table(self) -> list[dict[str, Any]]:
        """One row per (site, pair): the site's description, the pair, and every score."""
        return [
            {
                "site": s.name,
                "kind": s.kind,
                "role": s.role,
                "depth": s.depth,
                "draw": s.draw,
                "a": a,
                "b": b,
                "rel_scale": float(s.rel_scale[i]),
                **{m: float(v[i]) for m, v in s.metrics.items()},
            }
            for s in self.sites
            for i, (a, b) in enumerate(self.pairs)
        ]

    def summary(self) -> dict[str, Any]:
        """Per site: the mean of every score over the pairs (the coefficient's median), the mean frontier (best flip
        rate at each collateral level of ``FRONTIER``), and the binary share's sensitivity to its thresholds."""
        out = []
        for s in self.sites:
            row: dict[str, Any] = {
                "name": s.name,
                "kind": s.kind,
                "role": s.role,
                "hooks": s.hooks,
                "depth": s.depth,
                "draw": s.draw,
                **{m: round(float(np.nanmean(v)), DECIMALS) for m, v in s.metrics.items() if m != "heldout_coeff"},
                "heldout_coeff": round(float(np.median(s.metrics["heldout_coeff"])), DECIMALS),
                "frontier": rounded(np.nanmean(s.curves["frontier"], 0)),
            }
            if s.grid:
                row["sensitivity"] = rounded(self.sensitivity(s))
            out.append(row)
        return {"pairs": len(self.pairs), "settings": self.settings, "version": self.version, "sites": out}

    def to_dict(self) -> dict[str, Any]:
        return {
            "pairs": [list(p) for p in self.pairs],
            "settings": self.settings,
            "n_test": self.n_test,
            "base_accuracy": self.base_accuracy.tolist(),
            "sites": [s.to_dict() for s in self.sites],
            "version": self.version,
            "engine": self.engine,
        }

    @classmethod
    def from_dict(cls, data: Any) -> "Steerability":
        if not isinstance(data, dict) or "sites" not in data:
            raise UsageError("not a saved Steerability: expected the keys pairs, settings, sites, version")
        return cls(
            [tuple(p) for p in data["pairs"]],
            data["settings"],
            data["n_test"],
            np.asarray(data["base_accuracy"]),
            [SiteResult.from_dict(s) for s in data["sites"]],
            data["version"],
            data.get("engine", ""),
        )
