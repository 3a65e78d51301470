"""Markdown for ``analysis.explain``: the section of ``docs/reproduction.md`` that explains the post's figures."""

from typing import Any

__all__ = ["explain_section"]


def _iqr(s: dict[str, float], fmt: str = ".2f") -> str:
    if not s["n"]:
        return "none"
    return f"{format(s['median'], fmt)} [{format(s['q1'], fmt)}, {format(s['q3'], fmt)}]"


def explain_section(e: dict[str, Any], model: str, figures: bool = True) -> str:
    """The section, every number read from ``explain_summary``'s output ``e``."""
    px, w = e["pixel"], e["windows"]
    rows = [f"| `{h}` | {_iqr(v['explained'])} | {_iqr(v['gates'], '.1%')} |" for h, v in e["linear"].items()]
    text = [
        "## The post's figures, explained\n",
        f"On {model}, all {e['pairs']} pairs (the first training image of each digit), scored on "
        f"{e['n_test']} test images (the first {e['n_test'] // 10} of each digit). Medians over pairs, with the "
        "quartiles in brackets. Computed by `analysis.explain`.\n",
        "**Layer 0 is pixel arithmetic.** `layer0.post` is `W x + b`, so adding `act(x_a) - act(x_b)` there is "
        "adding the image `x_a - x_b` to every input: the bias cancels (checked to float rounding in "
        "`tests/test_explain.py`). The steered network reads a composite image: the digit's strokes, plus "
        "`x_a`'s, minus `x_b`'s.\n",
    ]
    if figures:
        text.append("[![Pixel arithmetic](figures/pixel_arithmetic.png)](figures/pixel_arithmetic.png)\n")
    text += [
        f"- Without the network, a classifier that compares each composite image with the ten class-mean images "
        f"of the training set predicts the post's per-digit distributions: over the {px['cells']} (pair, digit) "
        f"cells, the share of the digit's images the steered network reads as `a` and the share the class means "
        f"read as `a` have Spearman's rho = {px['rho_template']:.2f} (mean absolute difference "
        f"{px['mean_abs_diff']:.2f}). Image by image, the two agree on {px['agree']:.1%} of the images of digits "
        f"other than `b`; the steered network keeps its own unsteered answer on {px['agree_unsteered']:.1%}.",
        f"- How much of `x_b`'s ink a digit's images cover (covered strokes cancel) predicts "
        f"{'less' if px['rho_overlap'] < px['rho_template'] else 'as well or better'}: rho = "
        f"{px['rho_overlap']:.2f}.",
        "- Not shown: that the network reads the composites *as* the class means do; the class-mean classifier "
        "is a baseline, and where it disagrees the network's own features decide.\n",
        "**Hidden layers.** The first-order prediction `J v` (forward-mode derivative of the logits along the "
        "vector) against the observed per-digit logit shift at coefficient 1: the share of the shift it accounts "
        "for (`1 - sum |s - Jv|^2 / sum |s|^2`; 1 means linear), and the share of ReLU gates after the hook point "
        "that the addition switches on or off.\n",
        "| hook point | share of the shift the Jacobian explains | ReLU gates switched |",
        "|---|---|---|",
        *rows,
        "",
        f"**At the logits, steering is a bias.** Each image's prediction along `logits + c v` is the upper "
        f"envelope of lines, so every pair's flip-against-collateral curve follows from one unsteered pass "
        f"(`analysis.windows`, checked against steering in `tests/test_explain.py`). With at least "
        f"{w['flip']:.0%} of `b`'s images read as `a` and at most {w['collateral']:.0%} of the others changed, "
        f"{w['with_window']} of {e['pairs']} pairs have a window at all; where they do, it starts at "
        f"c = {_iqr(w['low'])} and its width (high / low) is {_iqr(w['ratio'])}"
        + (
            ": a grid of coefficients a factor 2 apart misses most of it.\n"
            if w["ratio"]["n"] and w["ratio"]["median"] < 2
            else ".\n"
        ),
    ]
    return "\n".join(text)
