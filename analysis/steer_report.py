"""Markdown for the steerability measurements: a section of ``docs/reproduction.md`` and a table of ``docs/study.md``.

Both read ``Steerability.summary()`` (one model's sites, scores averaged over pairs); the study's
table gives, per variant, the median over seeds with the range.
"""

from collections import Counter
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from hookedmlp_analysis.markdown import table
from hookedmlp_analysis.metrics import SCORES
from hookedmlp_analysis.selectivity import FLIP, KEEP
from hookedmlp_analysis.steer_result import SENSITIVITY

__all__ = [
    "best_internal",
    "pixel_site",
    "compared_sites",
    "controls",
    "median_range",
    "steer_section",
    "study_steer_tables",
    "method_note",
]


def best_internal(summary: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The internal hook class with the highest pAUC on the tuning half (None where a network has none)."""
    inside = [s for s in summary["sites"] if s["kind"] == "class" and s["role"] == "internal"]
    return max(inside, key=lambda s: s["pauc_tune"]) if inside else None


def pixel_site(summary: dict[str, Any]) -> dict[str, Any]:
    """Pixel arithmetic: the input class, or the pixel control."""
    return next(s for s in summary["sites"] if s["role"] == "input" and s["kind"] in ("class", "pixel"))


def _random(summary: dict[str, Any], hooks: list[str]) -> list[dict[str, Any]]:
    """The random controls at the class of ``hooks``."""
    return [s for s in summary["sites"] if s["kind"] == "random" and s["hooks"] == hooks]


def compared_sites(summary: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The sites the study compares, by label: the best internal class, the random draws at it, and the controls
    (each list empty where a network has no such site)."""
    sites = summary["sites"]
    best = best_internal(summary)
    return {
        "best internal class": [best] if best is not None else [],
        "random vector": _random(summary, best["hooks"]) if best is not None else [],
        "logit class": [s for s in sites if s["kind"] == "class" and s["role"] == "logits"][:1],
        "two-logit bias": [s for s in sites if s["kind"] == "bias"][:1],
        "pixel arithmetic": [pixel_site(summary)],
    }


def controls(summary: dict[str, Any], score: str = "pauc") -> dict[str, float]:
    """``score`` of each control: the logit class, the two-logit bias, pixel arithmetic (NaN where absent)."""
    found = compared_sites(summary)
    return {
        key: found[label][0][score] if found[label] else float("nan")
        for key, label in (("logit class", "logit class"), ("bias", "two-logit bias"), ("pixel", "pixel arithmetic"))
    }


def _binary(site: dict[str, Any]) -> str:
    grid = np.asarray(site["sensitivity"])
    return f"{site['selective']:.2f} [{grid.min():.2f}, {grid.max():.2f}]"


def method_note(summary: dict[str, Any]) -> str:
    """The measurement in words, with its settings."""
    st = summary["settings"]
    return (
        f"For each pair, the `a - b` vector is added at coefficients from {st['c_min']:g} to {st['c_max']:g} (each "
        "image's switch located by bisection), tracing the flip rate (share of b's images read as a) against the "
        "collateral (share of the other digits' images whose prediction changes). "
        f"**pAUC**: the area under the best flip rate reachable at collateral up to {st['pauc_level']:g}, over "
        f"{st['pauc_level']:g} (0 to 1). **Held-out flip**: the flip rate at collateral {st['heldout_level']:g}, its "
        "coefficient chosen on one half of the scoring images (alternate images of each digit) and read on the other. "
        "Hook points joined by affine maps only form one *hook class* (identical results). Controls: the *logit "
        "class* (steering there adds a constant to the logits), a *two-logit bias* `c (e_a - e_b)` of the same "
        f"logit norm, *pixel arithmetic* (adding `x_a - x_b` to the input) and {st['draws']} *random* vectors of "
        f"the pair's norm at each class. The old binary selectivity (at least {FLIP:.0%} flipped, {KEEP:.0%} of the "
        "accuracy kept, over coefficients 0.125 to 8) is derived, with its range over the thresholds "
        f"{', '.join(f'{f:g}' for f in SENSITIVITY[0])} x {', '.join(f'{k:g}' for k in SENSITIVITY[1])}."
    )


def steer_section(summary: dict[str, Any], model: str, n_test: int) -> str:
    """One model's hook classes and controls: a Markdown section (random vectors averaged over their draws)."""
    head = [
        "site",
        "kind",
        "depth",
        SCORES["pauc"].column,
        "pAUC tuning / scoring half",
        "held-out flip (collateral)",
        "median coefficient",
        "binary [threshold range]",
    ]
    rows = []
    for s in summary["sites"]:
        if s["kind"] == "random" and s["draw"] > 0:
            continue
        if s["kind"] == "random":
            same = [r for r in summary["sites"] if r["kind"] == "random" and r["hooks"] == s["hooks"]]
            s = {k: (float(np.mean([r[k] for r in same])) if isinstance(v, float) else v) for k, v in s.items()}
            name, kind = f"random @ {s['name'].split(' @ ')[1]}", f"random (mean of {len(same)})"
        else:
            name, kind = s["name"], s["kind"] if s["kind"] != "class" else f"class ({s['role']})"
        rows.append(
            [
                f"`{name}`" if s["kind"] == "class" else name,
                kind,
                f"{s['depth']:.2f}",
                f"{s['pauc']:.3f}",
                f"{s['pauc_tune']:.3f} / {s['pauc_score']:.3f}",
                f"{s['heldout_flip']:.3f} ({s['heldout_collateral']:.3f})",
                f"{s['heldout_coeff']:.3g}",
                _binary(s) if "sensitivity" in s else "",
            ]
        )
    return "\n".join(
        [
            "## Steerability without thresholds, with controls\n",
            f"Model: {model}; vectors from the first training image of each digit; all {summary['pairs']} pairs, "
            f"scored on {n_test} test images. " + method_note(summary) + " Each number is the mean over the pairs.\n",
            table(head, rows),
            "",
        ]
    )


def median_range(values: Sequence[float], spec: str = ".2f") -> str:
    """``median [min, max]`` of the finite ``values`` (over seeds), or ``none`` where there are none."""
    v = np.asarray([x for x in values if np.isfinite(x)], float)
    return f"{np.median(v):{spec}} [{v.min():{spec}}, {v.max():{spec}}]" if len(v) else "none"


def _binary_spread(binary: list[float], ranges: list[np.ndarray]) -> str:
    if not binary:
        return "none"
    return f"{np.median(binary):.2f} [{min(g.min() for g in ranges):.2f}, {max(g.max() for g in ranges):.2f}]"


def study_steer_tables(results: Sequence[Any]) -> tuple[str, str]:
    """Per variant (``ModelResult``s: ``.variant``, ``.steer``), two tables narrow enough for the page: the best
    internal class, chosen on the tuning half, beside a random vector there; then the controls. Every column is
    scored on the scoring half (pAUC unless said otherwise)."""
    heads = (
        ["variant", "best internal class (tuning half)", "pAUC, scoring half", "held-out flip", "random, same class"],
        ["variant", "logit class", "two-logit bias", "pixel", "binary [threshold range]"],
    )
    rows: tuple[list[list[str]], list[list[str]]] = ([], [])
    for name in dict.fromkeys(r.variant for r in results):
        summaries = [r.steer for r in results if r.variant == name]
        best = [best_internal(s) for s in summaries]
        found = [b for b in best if b is not None]
        label = Counter(b["name"] for b in found).most_common(1)[0][0] if found else "none"
        nan = float("nan")
        ctl = [controls(s, "pauc_score") for s in summaries]
        cells = (
            [
                name,
                f"`{label}`" if found else "none",
                median_range([b["pauc_score"] if b else nan for b in best]),
                median_range([b["heldout_flip"] if b else nan for b in best]),
                median_range(
                    [
                        np.mean([r["pauc_score"] for r in _random(s, b["hooks"])]) if b else nan
                        for s, b in zip(summaries, best)
                    ]
                ),
            ],
            [
                name,
                *(median_range([c[k] for c in ctl]) for k in ("logit class", "bias", "pixel")),
                _binary_spread([b["selective"] for b in found], [np.asarray(b["sensitivity"]) for b in found]),
            ],
        )
        rows[0].append(cells[0])
        rows[1].append(cells[1])
    return table(heads[0], rows[0]), table(heads[1], rows[1])
