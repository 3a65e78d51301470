"""The Markdown report of ``hookedmlp reproduce``: our numbers beside the study's, claim by claim."""

from pathlib import Path
from typing import Any

import numpy as np

from analysis.published import spearman
from hookedmlp.io import atomic_write

__all__ = ["write_report", "report_text"]


def _table(rows: list[list[str]], head: list[str]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _grid_table(values: np.ndarray, normal: np.ndarray, fmt: str) -> str:
    rows = [[str(a)] + [format(v, fmt) for v in values[a]] for a in range(10)]
    rows.append(["Normal"] + [format(v, ".3f") for v in normal])
    return _table(rows, ["a \\ b"] + [str(b) for b in range(10)])


def report_text(r: Any, figures: bool = True) -> str:
    """The report as Markdown (``r`` is an ``analysis.reproduce.Reproduction``).

    Args:
        r: what ``reproduce`` computed: grids at ``layer0.post``, ``layer1.post`` and
            ``layer3.post`` (all ten digits), the 3 - 1 sweep over every hook point,
            the dose-response and the study's tables.
        figures: include the figure links (``figures/*.png``).

    Returns:
        The Markdown text of ``docs/reproduction.md``.
    """
    g, st, sw = r.grid, r.study, r.sweep
    off = ~np.eye(10, dtype=bool)
    rho_all = spearman(g.loss, st.grid)
    rho_off = spearman(g.loss[off], st.grid[off])
    rho_by_hook = {h: spearman(r.grids[h].loss[off], st.grid[off]) for h in ("layer0.post", "layer1.post", "layer3.post")}
    flips = g.flip_rate[off]
    best = int(np.argmax(flips)), int(np.argmin(flips))
    pairs = [(a, b) for a in range(10) for b in range(10) if a != b]
    sweep_at = {h: float(sw.loss[sw.hooks.index(h)]) for h in sw.hooks}
    ours_31 = {i: sweep_at[f"layer{i}.post"] for i in range(5)}
    order_ours = sorted(range(5), key=lambda i: ours_31[i])
    n_note = "" if r.n_test == 10_000 else f" **Quick run: only the first {r.n_test} test images were scored.**"
    s = []
    s.append("# The study, reproduced\n")
    s.append("Written by `hookedmlp reproduce`; every number on this page comes from that run. The study is the blog post "
             "\"activation additions on a 3-layer MNIST MLP\" (credited in `analysis/seed_data/README.md`, whose tables we "
             "compare against). Method, as in the post: take the first training image of digit `a` and of `b`, subtract their "
             "activations at one hook point, add that `a - b` vector there for every test image, and measure the mean "
             "cross-entropy on the test set with every image of `b` removed." + n_note + "\n")
    s.append(f"- Model: {r.model_name} (784-512-512-10, ReLU; fingerprint `{g.model}`), test loss {r.test_loss:.4f} and "
             f"accuracy {r.test_accuracy:.4f} on all 10,000 test images (the study's model: 0.089).")
    s.append(f"- Hook points: `layer{{i}}.post` is the output of module i of Linear-ReLU-Linear-ReLU-Linear, the study's "
             f"\"just after layer i\". The grid is at `layer0.post`, the first Linear's output.")
    s.append("- Timings on this machine: " + ", ".join(f"{k} {v:.1f} s" for k, v in r.timings.items()) + ".\n")

    s.append("## Claims checked\n")
    s.append(f"1. **b images turn into a's.** Adding `a - b` at `layer0.post` makes the model call the test images of `b` "
             f"`a` for {flips.mean():.1%} of them on average over the 90 pairs (median {np.median(flips):.1%}); "
             f"{int((flips > 0.5).sum())} of 90 pairs flip more than half. Strongest: {pairs[best[0]][0]} - {pairs[best[0]][1]} "
             f"({flips[best[0]]:.1%}); weakest: {pairs[best[1]][0]} - {pairs[best[1]][1]} ({flips[best[1]]:.1%}). **Holds.**")
    s.append(f"2. **Generalization is destroyed.** The loss on the other digits goes from {g.normal['loss'].mean():.3f} unsteered "
             f"(the study: {st.normal.mean():.3f}) to {g.loss.mean():.2f} averaged over all 100 cells "
             f"({g.loss[off].mean():.2f} over the 90 off-diagonal cells). The study's \"~7.4\" is likewise the mean over all "
             f"100 cells of its table, diagonal included ({st.grid.mean():.2f}; {st.grid[off].mean():.2f} off-diagonal). "
             f"Accuracy on the other digits falls from {g.normal['accuracy_other'].mean():.3f} to {g.accuracy_other[off].mean():.3f} "
             f"on average, and the mean KL from the unsteered model is {g.kl[off].mean():.2f} nats. **Holds** (several nats).")
    s.append(f"3. **For 3 - 1, layer 0 is the best place to intervene.** Our layer sweep: "
             + ", ".join(f"after layer {i} {ours_31[i]:.2f}" for i in range(5))
             + f" (the study: " + ", ".join(f"{l} {v:.2f}" for l, v in zip(st.sweep_layers, st.sweep_loss)) + "). "
             f"Ours is lowest after layer {order_ours[0]}. "
             f"Values come in equal pairs, after layers 1 and 2 ({ours_31[1]:.2f}, {ours_31[2]:.2f}) and 3 and 4 "
             f"({ours_31[3]:.2f}, {ours_31[4]:.2f}), as in the study: adding `x_a - x_b` before an affine layer equals "
             f"adding its image after it. **{'Holds' if order_ours[0] == 0 else 'Does not hold'}.**")
    s.append(f"4. **The grid ranks pairs like the study's.** Spearman rank correlation between our `layer0.post` grid and "
             f"the study's: {rho_all:.3f} over the 100 cells, {rho_off:.3f} over the 90 off-diagonal cells. Different "
             f"training runs give different absolute values; the ordering is what carries over.\n")

    s.append("## What the study's own numbers do not agree on\n")
    s.append(f"The study's grid cell a=3, b=1 (\"layer 0\") reads {st.grid[3, 1]:.1f}, but its layer sweep for 3 - 1 reads "
             f"{st.sweep_loss[0]:.2f} at layer 0 and {st.sweep_loss[1]:.2f} at layers 1 and 2: the grid's cell matches the "
             f"sweep *after the first ReLU*, not after the first Linear. In our run the two agree by construction "
             f"(grid cell 3 - 1 at `layer0.post`: {g.loss[3, 1]:.2f}; sweep at `layer0.post`: {sweep_at['layer0.post']:.2f}). "
             f"Which of our layers matches the study's grid best, by rank correlation over the 90 off-diagonal cells:\n")
    s.append(_table([[f"`{h}`", f"{rho:.3f}", f"{r.grids[h].loss[3, 1]:.2f}", f"{r.grids[h].loss[off].mean():.2f}"] for h, rho in rho_by_hook.items()],
                    ["our grid at", "Spearman vs the study's grid", "our cell 3 - 1", "our mean off-diagonal"]))
    best_hook = max(rho_by_hook, key=rho_by_hook.get)
    s.append(f"\nThe study's grid correlates best with ours at `{best_hook}`. ("
             "`layer1.post` and `layer2.post` give the same grid: the vector folds through the second Linear.)\n")

    s.append("## The grid\n")
    if figures:
        s.append("![Our grid beside the study's](figures/grid_loss.png)\n")
        s.append("Interactive versions of every figure (`figures/*.html`) are written next to the PNGs by `hookedmlp reproduce`.\n")
    s.append("Ours, loss on the test set without b, at `layer0.post` (rows a, columns b):\n")
    s.append(_grid_table(g.loss, g.normal['loss'], ".2f"))
    s.append("\nThe study's, \"intervened at layer 0\":\n")
    s.append(_grid_table(st.grid, st.normal, ".1f"))
    s.append("\nWhat the study did not report, ours: share of b images classified as a.\n")
    s.append(_grid_table(g.flip_rate, g.normal['accuracy_other'], ".2f").replace("| Normal |", "| (accuracy, unsteered) |"))
    if figures:
        s.append("\n![Flip rate](figures/grid_flip_rate.png)\n")
    s.append("## The 3 - 1 layer sweep, every hook point\n")
    s.append(sw.to_markdown())
    if figures:
        s.append("\n![Layer sweep](figures/layer_sweep_3_1.png)\n")
    s.append("## Distributions\n")
    s.append("For each pair, the steered model's mean logits over the test images of each digit, as probabilities (the study's plots).\n")
    if figures:
        s.append("![Distributions](figures/distributions.png)\n")
    s.append("## Dose-response\n")
    s.append(r.dose.to_markdown("flip_rate"))
    s.append("")
    s.append(r.dose.to_markdown("loss"))
    if figures:
        s.append("\n![Dose-response](figures/dose_response.png)\n")
    s.append("\nRe-run: `hookedmlp reproduce` (add `--train` to train a fresh model first).\n")
    return "\n".join(s)


def write_report(r: Any, path: Path, figures: bool = True) -> Path:
    """Write ``report_text`` atomically to ``path``.

    Args:
        r: what ``reproduce`` computed (see ``report_text``).
        path: the Markdown file to write.
        figures: include the figure links.

    Returns:
        ``path``, as a ``Path``.
    """
    with atomic_write(path, "w") as f:
        f.write(report_text(r, figures))
    return Path(path)
