"""The Markdown report of ``hookedmlp reproduce``: each claim with its spread, our numbers beside the study's.

``report_text`` assembles one small function per section; each reads the numbers it needs from
the ``Reproduction`` (what ``reproduce`` computed) and writes nothing by hand.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from hookedmlp_analysis.claims import DAMAGE_FACTOR, ClaimSummary, summarise
from hookedmlp_analysis.explain_report import explain_section
from hookedmlp_analysis.grid import NORMAL_ROW, GridResult
from hookedmlp_analysis.markdown import table
from hookedmlp_analysis.published import StudyTables, spearman, study_tables
from hookedmlp_analysis.spread import Run, VectorSource
from hookedmlp_analysis.steer_report import steer_section
from hookedmlp_analysis.sweep import CoeffSweep, LayerSweep

__all__ = ["Reproduction", "report_text"]

_OFF = ~np.eye(10, dtype=bool)


@dataclasses.dataclass
class Reproduction:
    """Everything ``reproduce`` computed: the headline run, the spread, the control model."""

    model_name: str
    test_loss: float
    test_accuracy: float
    n_test: int
    grids: dict[str, GridResult]
    sweep: LayerSweep
    dose: CoeffSweep
    study: StudyTables
    runs: list[Run]  # the spread: one per (model, vector source)
    control_runs: list[Run]
    control_grid: GridResult  # the control's grid at layer0.post on the headline's test images
    control_test_loss: float
    spread_n_test: int
    seeds_note: str  # which models the spread covers
    headline_claims: dict[str, tuple[bool, float]]
    steer: Optional[dict[str, Any]] = None  # the headline model's Steerability.summary()
    steer_n_test: int = 0
    explained: Optional[dict[str, Any]] = None  # analysis.explain.explain_summary on the headline model

    @property
    def grid(self) -> GridResult:
        """The study's grid: ``layer0.post``."""
        return self.grids["layer0.post"]

    def to_dict(self) -> dict[str, Any]:
        """Every number the report shows, as plain data (no distributions, no timings): what ``report_text`` needs."""

        def grid(g: GridResult) -> dict[str, Any]:
            return dataclasses.replace(g, distributions=None).to_dict()

        def run(r: Run) -> dict[str, Any]:
            return {
                "model": r.model,
                "source": dataclasses.asdict(r.source),
                "claims": r.claims,
                "off_diagonal_loss": round(r.off_diagonal_loss, 6),
            }

        return {
            "model_name": self.model_name,
            "test_loss": self.test_loss,
            "test_accuracy": self.test_accuracy,
            "n_test": self.n_test,
            "grids": {h: grid(g) for h, g in self.grids.items()},
            "sweep": self.sweep.to_dict(),
            "dose": self.dose.to_dict(),
            "runs": [run(r) for r in self.runs],
            "control_runs": [run(r) for r in self.control_runs],
            "control_grid": grid(self.control_grid),
            "control_test_loss": self.control_test_loss,
            "spread_n_test": self.spread_n_test,
            "seeds_note": self.seeds_note,
            "headline_claims": self.headline_claims,
            "steer": self.steer,
            "steer_n_test": self.steer_n_test,
            # the figure's pixels (panels) stay out: the PNG holds them, and they would triple the file
            "explained": {k: v for k, v in self.explained.items() if k != "panels"} if self.explained else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Reproduction":
        def run(d: dict[str, Any]) -> Run:
            return Run(
                d["model"],
                VectorSource(**d["source"]),
                {k: (bool(v[0]), float(v[1])) for k, v in d["claims"].items()},
                d["off_diagonal_loss"],
                0.0,
            )

        return cls(
            data["model_name"],
            data["test_loss"],
            data["test_accuracy"],
            data["n_test"],
            {h: GridResult.from_dict(g) for h, g in data["grids"].items()},
            LayerSweep.from_dict(data["sweep"]),
            CoeffSweep.from_dict(data["dose"]),
            study_tables(),
            [run(r) for r in data["runs"]],
            [run(r) for r in data["control_runs"]],
            GridResult.from_dict(data["control_grid"]),
            data["control_test_loss"],
            data["spread_n_test"],
            data["seeds_note"],
            {k: (bool(v[0]), float(v[1])) for k, v in data["headline_claims"].items()},
            data.get("steer"),
            data.get("steer_n_test", 0),
            data.get("explained"),
        )


def _grid_table(values: np.ndarray, last: np.ndarray, fmt: str, last_label: str = "Normal") -> str:
    rows = [[str(a)] + [format(v, fmt) for v in values[a]] for a in range(len(values))]
    rows.append([last_label] + [format(v, ".3f") for v in last])
    return table(["a \\ b"] + [str(b) for b in range(len(values))], rows)


def _header(r: Reproduction) -> str:
    sources = list(dict.fromkeys(run.source for run in r.runs))
    quick = "" if r.n_test == 10_000 else f" **Quick run: the headline scored only {r.n_test} test images.**"
    return (
        "# The study, reproduced\n\n"
        "Written by `hookedmlp reproduce`; every number on this page comes from that run. The study is the blog post "
        '"activation additions on a 3-layer MNIST MLP" (credited in `analysis/seed_data/README.md`, whose tables we '
        "compare against). Its method: take the first training image of digit `a` and of `b`, subtract their "
        "activations at one hook point, add that `a - b` vector there for every test image, and measure the mean "
        f"cross-entropy on the test set with every image of `b` removed.{quick}\n\n"
        f"- Headline model: {r.model_name} (784-512-512-10, ReLU; fingerprint `{r.grid.model}`), test loss "
        f"{r.test_loss:.4f} and accuracy {r.test_accuracy:.4f} on all 10,000 test images (the study's model: 0.089).\n"
        "- Hook points: `layer{i}.post` is the output of module i of Linear-ReLU-Linear-ReLU-Linear, the study's "
        '"just after layer i". The grid is at `layer0.post`, the first Linear\'s output.\n'
        f"- Spread: {len(r.runs)} runs = {r.seeds_note} x {len(sources)} ways of making the vectors (training images "
        f"1 to {sum(s.method == 'first' for s in sources)} of each digit, and the class mean), each scored on the "
        f"first {r.spread_n_test // 10} test images of each digit ({r.spread_n_test} images).\n"
    )


def _claims(r: Reproduction) -> str:
    headline = r.headline_claims
    summaries = summarise([run.claims for run in r.runs])
    rows = [
        [
            f"{i + 1}. {s.claim.statement}",
            s.claim.number,
            s.claim.holds_when(r.study),
            s.claim.study_value,
            _value(headline[s.claim.key]),
            f"**{s.verdict}**",
            f"{s.median:.3f} [{s.low:.3f}, {s.high:.3f}]",
        ]
        for i, s in enumerate(summaries)
    ]
    head = ["claim", "number", "holds when", "the study", "headline", "verdict over the runs", "median [range]"]
    other = [str(i + 1) for i, s in enumerate(summaries) if s.claim.line(r.study) is None]
    others = " and ".join([", ".join(other[:-1]), other[-1]] if len(other) > 1 else other)
    return (
        "## Claims checked\n\n"
        f"A run's verdict follows the rule in the third column, which for claim{'s' * (len(other) > 1)} {others} is "
        "not a threshold on the number beside it. The headline column is the study's own setting (first training "
        "image, our shipped model, all test images); the last two columns count the verdict over the spread's runs "
        "and give the median and range of the number. The spread's figure draws each rule's threshold where it has "
        "one.\n\n" + table(head, rows) + "\n\n" + _claim_notes(r, summaries) + "\n"
    )


def _value(decided: tuple[bool, float]) -> str:
    return f"{decided[1]:.3f} ({'holds' if decided[0] else 'fails'})"


def _claim_notes(r: Reproduction, summaries: Sequence[ClaimSummary]) -> str:
    g, st = r.grid, r.study
    flips = g.off_diagonal("flip_rate")
    pairs = [(a, b) for a in range(10) for b in range(10) if a != b]
    hi, lo = int(np.argmax(flips)), int(np.argmin(flips))
    return "\n".join(
        [
            f"- Claim 1, headline: {flips.mean():.1%} of b's test images are read as a on average over the 90 pairs "
            f"(median {np.median(flips):.1%}; {int((flips > 0.5).sum())} of 90 pairs flip more than half; strongest "
            f"{pairs[hi][0]} - {pairs[hi][1]} at {flips[hi]:.1%}, weakest {pairs[lo][0]} - {pairs[lo][1]} at "
            f'{flips[lo]:.1%}). "More likely a, less likely b" is judged, as the study did, on the softmax of the '
            "mean logits over b's images.",
            f"- Claim 3, generalization: the loss on the other digits goes from {g.normal['loss'].mean():.3f} "
            f"unsteered (the study: {st.normal.mean():.3f}) to {g.loss.mean():.2f} averaged over all 100 cells "
            f'({g.loss[_OFF].mean():.2f} off-diagonal). The study\'s "~7.4" is likewise the mean over all 100 cells '
            f"of its table ({st.grid.mean():.2f}; {st.grid[_OFF].mean():.2f} off-diagonal). The verdict asks for at "
            f"least {DAMAGE_FACTOR:g} times the unsteered loss. Accuracy on the other digits falls from "
            f"{g.normal['accuracy_other'].mean():.3f} to {g.accuracy_other[_OFF].mean():.3f}.",
            f"- Claim 6: Spearman's rho between our grid and the study's is {spearman(g.loss, st.grid):.3f} over all "
            f"100 cells and {spearman(g.loss[_OFF], st.grid[_OFF]):.3f} over the 90 off-diagonal cells; its p-value "
            "counts random pairings of the cells at least as correlated (10,000, seeded).",
        ]
    )


def _spread(r: Reproduction) -> str:
    sources = list(dict.fromkeys(run.source for run in r.runs))
    rows = []
    for source in sources:
        runs = [run for run in r.runs if run.source == source]
        flip = np.array([run.claims["flip"][1] for run in runs])
        loss = np.array([run.off_diagonal_loss for run in runs])
        rows.append(
            [
                source.label,
                f"{np.median(flip):.3f} [{flip.min():.3f}, {flip.max():.3f}]",
                f"{np.median(loss):.2f} [{loss.min():.2f}, {loss.max():.2f}]",
                f"{sum(run.claims['flip'][0] for run in runs)} of {len(runs)}",
            ]
        )
    return (
        "## The spread, by way of making the vectors\n\n"
        "Over the models (median [range]): the mean flip rate and the mean loss on the other digits over the 90 "
        "off-diagonal pairs at `layer0.post`, and the runs where every pair flips.\n\n"
        + table(["vectors from", "flip rate", "loss off-diagonal", "every pair flips"], rows)
        + "\n\n![The spread of each claim's number](figures/spread.png)\n"
    )


def _control(r: Reproduction) -> str:
    ours, theirs, control = (
        r.grid.off_diagonal("loss").mean(),
        r.study.grid[_OFF].mean(),
        r.control_grid.off_diagonal("loss").mean(),
    )
    closer = abs(control - theirs) < abs(ours - theirs)
    summaries = summarise([run.claims for run in r.control_runs])
    rows = [[s.claim.key, s.verdict, f"{s.median:.3f} [{s.low:.3f}, {s.high:.3f}]"] for s in summaries]
    return (
        "## A control model at the study's test loss\n\n"
        f"The shipped model reaches a test loss of {r.test_loss:.3f}; the study's reached 0.089. The control "
        f"(`mnist-mlp-control`: the same architecture and recipe, trained for 2 epochs instead of 6) reaches "
        f"{r.control_test_loss:.3f}. Its mean off-diagonal loss at `layer0.post` is {control:.2f}, against "
        f"{ours:.2f} for the shipped model and {theirs:.2f} in the study: it comes "
        f"**{'closer to' if closer else 'no closer to'}** the study's magnitude. Its claims over the same "
        f"{len(r.control_runs)} ways of making vectors:\n\n"
        + table(["claim", "verdict", "median [range]"], rows)
        + "\n"
    )


def _inconsistency(r: Reproduction) -> str:
    g, st, sw = r.grid, r.study, r.sweep
    at = {h: float(sw.loss[sw.hooks.index(h)]) for h in sw.hooks}
    rho = {h: spearman(r.grids[h].loss[_OFF], st.grid[_OFF]) for h in ("layer0.post", "layer1.post", "layer3.post")}
    best = max(rho, key=rho.get)
    rows = [
        [f"`{h}`", f"{v:.3f}", f"{r.grids[h].loss[3, 1]:.2f}", f"{r.grids[h].loss[_OFF].mean():.2f}"]
        for h, v in rho.items()
    ]
    return (
        "## What the study's own numbers do not agree on\n\n"
        f'The study\'s grid cell a=3, b=1 ("layer 0") reads {st.grid[3, 1]:.1f}, but its layer sweep for 3 - 1 reads '
        f"{st.sweep_loss[0]:.2f} at layer 0 and {st.sweep_loss[1]:.2f} at layers 1 and 2: the grid's cell matches the "
        "sweep *after the first ReLU*, not after the first Linear. In our run the two agree by construction (grid cell "
        f"3 - 1 at `layer0.post`: {g.loss[3, 1]:.2f}; sweep at `layer0.post`: {at['layer0.post']:.2f}). Which of our "
        "layers matches the study's grid best, by rank correlation over the 90 off-diagonal cells:\n\n"
        + table(["our grid at", "Spearman vs the study's grid", "our cell 3 - 1", "our mean off-diagonal"], rows)
        + f"\n\nThe study's grid correlates best with ours at `{best}`. (`layer1.post` and `layer2.post` give the same "
        "grid: the vector folds through the second Linear.)\n"
    )


def _grid(r: Reproduction, figures: bool) -> str:
    g, st = r.grid, r.study
    parts = ["## The grid\n"]
    if figures:
        parts.append(
            "[![Our grid beside the study's](figures/grid_loss.png)](figures/grid_loss.png) "
            "([interactive](figures/grid_loss.html))\n"
        )
    parts += [
        "Ours, loss on the test set without b, at `layer0.post` (rows a, columns b):\n",
        '<div class="wide-table" markdown>\n',
        _grid_table(g.loss, g.normal["loss"], ".2f"),
        "\n</div>\n",
        'The study\'s, "intervened at layer 0":\n',
        '<div class="wide-table" markdown>\n',
        _grid_table(st.grid, st.normal, ".1f"),
        "\n</div>\n",
        NORMAL_ROW + "\n",
        "What the study did not report, ours: share of b's images classified as a (last row: the unsteered "
        "accuracy on the other digits).\n",
        '<div class="wide-table" markdown>\n',
        _grid_table(g.flip_rate, g.normal["accuracy_other"], ".2f", "(accuracy, unsteered)"),
        "\n</div>\n",
    ]
    if figures:
        parts.append(
            "[![Flip rate](figures/grid_flip_rate.png)](figures/grid_flip_rate.png) "
            "([interactive](figures/grid_flip_rate.html))\n"
        )
    return "\n".join(parts)


def _sweep(r: Reproduction, figures: bool) -> str:
    sw = r.sweep
    at = [float(sw.loss[sw.hooks.index(f"layer{i}.post")]) for i in range(5)]
    text = [
        "## The 3 - 1 layer sweep, every hook point\n",
        sw.to_markdown(),
        "",
        "After layers 0 to 4: "
        + ", ".join(f"{v:.2f}" for v in at)
        + " (the study: "
        + ", ".join(f"{v:.2f}" for v in r.study.sweep_loss)
        + "). Values come in equal pairs, after layers 1 and 2 "
        "and after layers 3 and 4, as in the study: adding `x_a - x_b` before an affine layer equals adding its "
        "image after it.\n",
    ]
    if figures:
        text.append(
            "[![Layer sweep](figures/layer_sweep_3_1.png)](figures/layer_sweep_3_1.png) "
            "([interactive](figures/layer_sweep_3_1.html))\n"
        )
    return "\n".join(text)


def _distributions(r: Reproduction, figures: bool) -> str:
    text = [
        "## Distributions\n",
        "For each pair, the steered model's mean logits over the test images of each digit, "
        "as probabilities (the study's plots). The static figure shows six pairs, each titled with why it was chosen "
        "(the study's 3 - 1, the strongest, weakest and a median flip, the most and the least damage); the "
        "interactive one has a menu with every pair.\n",
    ]
    if figures:
        text.append(
            "[![Distributions](figures/distributions.png)](figures/distributions.png) "
            "([interactive, every pair](figures/distributions_all.html))\n"
        )
    return "\n".join(text)


def _dose(r: Reproduction, figures: bool) -> str:
    wide = '<div class="wide-table" markdown>\n\n{}\n\n</div>\n'
    text = ["## Dose-response\n", wide.format(r.dose.to_markdown("flip_rate")), wide.format(r.dose.to_markdown("loss"))]
    if figures:
        text.append(
            "\n[![Dose-response](figures/dose_response.png)](figures/dose_response.png) "
            "([interactive](figures/dose_response.html))\n"
        )
    return "\n".join(text)


def report_text(r: Reproduction, figures: bool = True) -> str:
    """``docs/reproduction.md``: one section per function above, in order."""
    sections = [
        _header(r),
        _claims(r),
        steer_section(r.steer, r.model_name, r.steer_n_test) if r.steer else "",
        explain_section(r.explained, r.model_name, figures) if r.explained else "",
        _spread(r) if figures else _spread(r).split("\n\n![")[0] + "\n",
        _control(r),
        _inconsistency(r),
        _grid(r, figures),
        _sweep(r, figures),
        _distributions(r, figures),
        _dose(r, figures),
        "\nRe-run: `hookedmlp reproduce` (add `--train` to train a fresh model first). Tracked files change only "
        "where a number changes beyond its printed precision.\n",
    ]
    return "\n".join(sections)
