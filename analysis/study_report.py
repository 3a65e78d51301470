"""``docs/study.md``: the network-properties study's table, figures and conclusions, every number from the run."""

import dataclasses
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from hookedmlp.data import load_mnist
from hookedmlp.errors import ConfigError
from hookedmlp.files.atomic import check_writable
from hookedmlp.train import TrainSettings
from hookedmlp_analysis.executors import ExecutorSettings
from hookedmlp_analysis.family import QUICK, SEEDS, STUDY_SETTINGS, TEST_PER_CLASS, VARIANTS, ModelResult
from hookedmlp_analysis.figures import code_version, study_layers_figure, study_tradeoff_figure, write_figure
from hookedmlp_analysis.outputs import JSON_REL, Outputs
from hookedmlp_analysis.prediction_report import QUICK_REPS, REPS, prediction_section
from hookedmlp_analysis.selectivity import COEFFS, FLIP, KEEP, off_diagonal_pairs
from hookedmlp_analysis.spread import stratified_subset
from hookedmlp_analysis.steer_report import method_note, study_steer_table
from hookedmlp_analysis.study_cells import SERIAL, run_study

__all__ = [
    "Spread",
    "VariantSummary",
    "summarise_variants",
    "study_text",
    "study",
    "results_to_dict",
    "results_from_dict",
]


@dataclasses.dataclass(frozen=True)
class Spread:
    """A number over seeds: its median and range."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> "Spread":
        v = np.asarray(values, float)
        return cls(float(np.median(v)), float(v.min()), float(v.max()))

    def fmt(self, spec: str = ".2f") -> str:
        return f"{self.median:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"

    def apart_from(self, other: "Spread") -> int:
        """+1 if every seed's value is above ``other``'s, -1 if below, 0 where the ranges overlap."""
        return 1 if self.low > other.high else -1 if self.high < other.low else 0


@dataclasses.dataclass(frozen=True)
class VariantSummary:
    name: str
    changes: str
    seeds: int
    test_loss: Spread
    share: Spread  # best hook's share of selective pairs
    best_hook: str
    flip: Spread  # at coefficient 1, mean over hook points
    loss: Spread
    accuracy: Spread
    kl: Spread
    coeff: str  # median smallest selective coefficient at the best hook


def _mean_over_hooks(r: ModelResult, metric: str) -> float:
    return float(np.mean([r.at_one[h][metric] for h in r.hooks]))


def summarise_variants(results: Sequence[ModelResult]) -> list[VariantSummary]:
    changes = {v.name: v.changes for v in VARIANTS}
    out = []
    for name in dict.fromkeys(r.variant for r in results):
        rs = [r for r in results if r.variant == name]
        best = Counter(r.best_hook for r in rs).most_common(1)[0][0]
        coeffs = [r.best_coeff[r.best_hook] for r in rs if r.best_coeff[r.best_hook] is not None]
        out.append(
            VariantSummary(
                name,
                changes.get(name, ""),
                len(rs),
                Spread.of([r.test_loss for r in rs]),
                Spread.of([r.share[r.best_hook] for r in rs]),
                best,
                *(
                    Spread.of([_mean_over_hooks(r, m) for r in rs])
                    for m in ("flip_rate", "loss", "accuracy_other", "kl")
                ),
                f"{np.median(coeffs):g}" if coeffs else "none",
            )
        )
    return out


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return "\n".join(
        ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]
    )


def _tables(summaries: Sequence[VariantSummary]) -> str:
    """Two tables, each narrow enough for the page: selectivity at the best hook, then coefficient 1 everywhere."""
    best = _table(
        ["variant", "what changes", "test loss", "selective pairs", "best hook", "coefficient"],
        [
            [s.name, s.changes, s.test_loss.fmt(".3f"), s.share.fmt(), f"`{s.best_hook}`", str(s.coeff)]
            for s in summaries
        ],
    )
    at_one = _table(
        ["variant", "flip rate", "loss", "accuracy", "KL"],
        [[s.name, s.flip.fmt(), s.loss.fmt(), s.accuracy.fmt(), s.kl.fmt()] for s in summaries],
    )
    return f"{best}\n\nAt coefficient 1, the study's setting: the mean over all hook points and pairs.\n\n{at_one}"


def _conclusions(summaries: Sequence[VariantSummary]) -> list[str]:
    base = next((s for s in summaries if s.name == "baseline"), None)
    if base is None:
        return ["No baseline in this run, so no variant is compared with it."]
    raise_, lower, unclear = [], [], []
    for s in summaries:
        if s is base:
            continue
        way = s.share.apart_from(base.share)
        (raise_ if way > 0 else lower if way < 0 else unclear).append(f"{s.name} ({s.share.fmt()})")
    best = max(summaries, key=lambda s: s.share.median)
    lines = [
        f"- The baseline, the study's network, is selective for {base.share.fmt()} of the pairs at its best hook "
        f"point (`{base.best_hook}`): the share of pairs for which some coefficient turns at least {FLIP:.0%} of "
        f"b's images into a's while keeping {KEEP:.0%} of the accuracy on the other digits."
    ]
    lines.append(f"- Raise selectivity above the baseline, in every seed: {', '.join(raise_) or 'none'}.")
    lines.append(f"- Lower it, in every seed: {', '.join(lower) or 'none'}.")
    lines.append(f"- No clear change (the seeds' ranges overlap the baseline's): {', '.join(unclear) or 'none'}.")
    lines.append(f"- The most selective variant is {best.name} ({best.share.fmt()} at `{best.best_hook}`).")
    n = min(s.seeds for s in summaries)
    lines.append(
        f"- How sure: {n} seeds per variant. Ranges that do not overlap over {n} seeds each happen by chance "
        f"with probability 2/C({2 * n},{n}) = {2 / math.comb(2 * n, n):.2f} when seeds are exchangeable; "
        "an overlap means the effect, if any, is within seed-to-seed variation."
    )
    return lines


def study_text(
    results: Sequence[ModelResult], figures: bool = True, n_test: int = 10 * TEST_PER_CLASS, quick: bool = False
) -> str:
    summaries = summarise_variants(results)
    training = (
        "**quick run**: one epoch on 2,000 training images (a smoke test; the numbers mean nothing)"
        if quick
        else f"AdamW lr {STUDY_SETTINGS.lr:g}, cosine decay, batch {STUDY_SETTINGS.batch_size}, "
        f"{STUDY_SETTINGS.epochs} epochs on MNIST's 60,000 training images, per seed"
    )
    s = [
        "# Which network properties make activation additions work?\n",
        "Written by `hookedmlp study`; every number on this page comes from that run. The study this project "
        "reproduces asked: *what is the minimal set of properties a network must have for activation additions to "
        "work?* Here each variant changes one property of its network, is trained with several seeds, and is steered "
        "with the study's vectors (the first training image of each digit, coefficient 1) at every hook point.\n",
        f"- Training: {training}.",
        f"- Scoring: the first {n_test // 10} test images of each digit ({n_test} images).",
        f"- Selectivity: for each of the 90 pairs, the coefficients {', '.join(f'{c:g}' for c in COEFFS)} are tried; "
        f"a pair is selective at a coefficient when at least {FLIP:.0%} of b's images are read as a and the accuracy "
        f"on the other digits stays at least {KEEP:.0%} of the unsteered accuracy. The first table gives the share of "
        "selective pairs at each variant's best hook point, and the median smallest selective coefficient there.",
        "- The second table: the mean over all hook points and pairs at coefficient 1 (the study's setting).",
        "- Numbers are the median over seeds, with the range in brackets.\n",
        "## The variants\n",
        _tables(summaries),
        "",
    ]
    if figures:
        s += [
            "![Flip rate against damage](figures/study_tradeoff.png)\n",
            "![Selectivity per layer](figures/study_layers.png)\n",
            "Interactive: [flip rate against damage](figures/study_tradeoff.html), "
            "[selectivity per layer](figures/study_layers.html).\n",
        ]
    if results and results[0].steer:
        s += [
            "## Steerability without thresholds, with controls\n",
            method_note(results[0].steer)
            + " Per variant, the median over seeds [range] of the mean over pairs; the best internal class is "
            "chosen on the tuning half, and every column is scored on the scoring half.\n",
            study_steer_table(results),
            "",
        ]
    if results and results[0].properties:
        s += prediction_section(results, QUICK_REPS if quick else REPS)
    s += [
        "## Conclusions\n",
        *_conclusions(summaries),
        "",
        "Re-run: `hookedmlp study` (models and results are cached under `runs/study/`; a second run reuses them).\n",
    ]
    return "\n".join(s)


def results_to_dict(results: Sequence[ModelResult], n_test: int, quick: bool) -> dict[str, Any]:
    """What ``study_text`` needs, as plain data without timings (``figures/study.json``)."""
    rows = [{**dataclasses.asdict(r), "train_seconds": 0.0, "analysis_seconds": 0.0} for r in results]
    return {"n_test": n_test, "quick": quick, "results": rows}


def results_from_dict(data: dict[str, Any]) -> tuple[list[ModelResult], int, bool]:
    return [ModelResult(**r) for r in data["results"]], data["n_test"], data["quick"]


def study(
    out_dir: Path = Path("docs"),
    cache: Path = Path("runs/study"),
    quick: bool = False,
    variants: Optional[Sequence[str]] = None,
    seeds: Optional[Sequence[int]] = None,
    figures: bool = True,
    log: Callable[[str], None] = print,
    executor: ExecutorSettings = SERIAL,
    device: str = "cpu",
    together: bool = True,
) -> list[ModelResult]:
    """``hookedmlp study``: train (or load) the family, analyse every model, write ``<out_dir>/study.md``.

    ``quick`` is a smoke test: the baseline, the residual MLP and LeNet, one seed, trained one epoch on 2,000 images,
    scored on 20 test images per digit for the pairs of digits 0-2 at coefficients 1 and 4, its properties measured on
    20 training images per digit. The models run on ``executor`` (``analysis.study_cells.run_study``), on
    ``device``, a variant's seeds trained ``together``.
    """
    out_dir, cache = Path(out_dir), Path(cache)
    check_writable(out_dir / "study.md")
    names = list(variants) if variants is not None else list(QUICK if quick else (v.name for v in VARIANTS))
    known = {v.name: v for v in VARIANTS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown variant(s) {unknown}; choose from {', '.join(known)}")
    chosen = [known[n] for n in names]
    seeds = list(seeds) if seeds is not None else ([0] if quick else list(SEEDS))
    start = time.perf_counter()
    if quick:
        train_x, train_y = load_mnist("train")
        test_x, test_y = load_mnist("test")
        results = run_study(
            cache,
            chosen,
            seeds,
            test=stratified_subset(test_x, test_y, 20),
            coeffs=(1.0, 4.0),
            train_data=(train_x[:2000], train_y[:2000], test_x[:1000], test_y[:1000]),
            settings=TrainSettings(epochs=1),
            pairs=off_diagonal_pairs(range(3)),
            log=log,
            executor=executor,
            device=device,
            together=together,
            property_per_class=20,
        )
        n_test = 200
    else:
        results = run_study(cache, chosen, seeds, log=log, executor=executor, device=device, together=together)
        n_test = 10 * TEST_PER_CLASS
    outputs = Outputs(out_dir, code=code_version())
    if figures:
        outputs.figure(
            "figures/study_tradeoff",
            [v for r in results for h in r.hooks for v in r.at_one[h].values()],
            lambda stem, formats: write_figure(study_tradeoff_figure(results), stem, formats),
        )
        outputs.figure(
            "figures/study_layers",
            [r.share[h] for r in results for h in r.hooks],
            lambda stem, formats: write_figure(study_layers_figure(results), stem, formats),
        )
    outputs.text("figures/study.json", json.dumps(results_to_dict(results, n_test, quick), indent=1), rel=JSON_REL)
    outputs.text("study.md", study_text(results, figures, n_test, quick))
    outputs.close()
    train_s = sum(r.train_seconds for r in results)
    analysis_s = sum(r.analysis_seconds for r in results)
    log(
        f"done in {time.perf_counter() - start:.0f} s (training {train_s:.0f} s, analysis {analysis_s:.0f} s: summed "
        f"over the models, in parallel on the workers, as the cache recorded them); report: {out_dir / 'study.md'}"
    )
    return results
