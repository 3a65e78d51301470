"""``docs/study.md``: the network-properties study's table, figures and conclusions, every number from the run."""

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from hookedmlp.data import load_mnist
from hookedmlp.errors import ConfigError
from hookedmlp.files.atomic import check_writable
from hookedmlp.train import TrainSettings
from hookedmlp_analysis.executors import ExecutorSettings
from hookedmlp_analysis.family import (
    ARM_SEEDS,
    MATCHED_LOSS,
    QUICK,
    QUICK_CHECK_EVERY,
    QUICK_MATCHED_LOSS,
    SEEDS,
    STUDY_SETTINGS,
    TEST_PER_CLASS,
    VARIANTS,
    ModelResult,
)
from hookedmlp_analysis.figures import (
    code_version,
    study_frontier_figure,
    study_layers_figure,
    study_predicted_figure,
    write_figure,
)
from hookedmlp_analysis.markdown import table
from hookedmlp_analysis.matched_report import matched_arm, matched_section
from hookedmlp_analysis.outputs import JSON_REL, Outputs
from hookedmlp_analysis.prediction_report import (
    QUICK_REPS,
    REPS,
    SCORE,
    predict,
    predicted_points,
    prediction_section,
)
from hookedmlp_analysis.selectivity import off_diagonal_pairs
from hookedmlp_analysis.spread import stratified_subset
from hookedmlp_analysis.steer_report import method_note, study_steer_tables
from hookedmlp_analysis.study_cells import SERIAL, run_study
from hookedmlp_analysis.study_conclusions import conclusions
from hookedmlp_analysis.vectors_report import vector_arm, vectors_section

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


@dataclasses.dataclass(frozen=True)
class VariantSummary:
    name: str
    changes: str
    test_loss: Spread
    test_accuracy: Spread
    flip: Spread  # at coefficient 1, mean over hook points
    loss: Spread
    accuracy: Spread
    kl: Spread


def _mean_over_hooks(r: ModelResult, metric: str) -> float:
    return float(np.mean([r.at_one[h][metric] for h in r.hooks]))


def summarise_variants(results: Sequence[ModelResult]) -> list[VariantSummary]:
    changes = {v.name: v.changes for v in VARIANTS}
    out = []
    for name in dict.fromkeys(r.variant for r in results):
        rs = [r for r in results if r.variant == name]
        out.append(
            VariantSummary(
                name,
                changes.get(name, ""),
                Spread.of([r.test_loss for r in rs]),
                Spread.of([r.test_accuracy for r in rs]),
                *(
                    Spread.of([_mean_over_hooks(r, m) for r in rs])
                    for m in ("flip_rate", "loss", "accuracy_other", "kl")
                ),
            )
        )
    return out


def _variants_table(summaries: Sequence[VariantSummary]) -> str:
    return table(
        ["variant", "what changes", "test loss", "test accuracy"],
        [[s.name, s.changes, s.test_loss.fmt(".3f"), s.test_accuracy.fmt(".3f")] for s in summaries],
    )


def _at_one_table(summaries: Sequence[VariantSummary]) -> str:
    return table(
        ["variant", "flip rate", "loss", "accuracy", "KL"],
        [[s.name, s.flip.fmt(), s.loss.fmt(), s.accuracy.fmt(), s.kl.fmt()] for s in summaries],
    )


def study_text(
    results: Sequence[ModelResult],
    figures: bool = True,
    n_test: int = 10 * TEST_PER_CLASS,
    quick: bool = False,
    matched: Optional[Sequence[ModelResult]] = None,
) -> str:
    summaries = summarise_variants(results)
    reps = QUICK_REPS if quick else REPS
    pred = predict(results, reps)
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
        "with the study's vectors (the first training image of each digit) at every hook class, beside controls that "
        "steer without looking inside the network. Then properties of the representations, measured without "
        "steering, are tested as predictors of how well it steers.\n",
        f"- Training: {training}.",
        f"- Scoring: the first {n_test // 10} test images of each digit ({n_test} images), split into a tuning half "
        "and a scoring half.",
        "- Numbers are the median over seeds with the range in brackets, or an estimate with its 95% CI where a CI "
        "is named.\n",
        "## The variants\n",
        _variants_table(summaries),
        "",
    ]
    if results and results[0].steer:
        best, controls = study_steer_tables(results)
        s += [
            "## Steerability without thresholds, with controls\n",
            method_note(results[0].steer)
            + " Per variant, the median over seeds [range] of the mean over pairs; the best internal class is "
            "chosen on the tuning half, and every column is scored on the scoring half.\n",
            best,
            "",
            "The controls, scored the same way (pAUC):\n",
            controls,
            "",
        ]
        if figures:
            s += [
                "![Flip rate against collateral per variant](figures/study_frontier.png)\n",
                "![Steerability per hook class](figures/study_layers.png)\n",
                "Interactive: [flip rate against collateral](figures/study_frontier.html), "
                "[steerability per hook class](figures/study_layers.html).\n",
            ]
    if results and results[0].properties:
        s += prediction_section(pred, figures)
    arm = vector_arm(results, reps)
    if any(r.vectors for r in results):
        s += vectors_section(arm)
    matched_stats = None
    if matched:
        matched_stats = matched_arm(matched, *_matched_target(quick), reps)
        s += matched_section(matched_stats)
    s += [
        "## At coefficient 1, the post's setting\n",
        "The mean over all hook points and pairs, each pair's vector added at coefficient 1 (the controls and the "
        "logit class included, as the post steered):\n",
        _at_one_table(summaries),
        "",
        "## Conclusions\n",
        *conclusions(results, pred, arm, matched_stats),
        "",
        "Re-run: `hookedmlp study` (models and results are cached under `runs/study/`; a second run reuses them).\n",
    ]
    return "\n".join(s)


def _matched_target(quick: bool) -> tuple[float, int]:
    """The matched arm's test loss and the steps between its checks."""
    return (QUICK_MATCHED_LOSS, QUICK_CHECK_EVERY) if quick else (MATCHED_LOSS, STUDY_SETTINGS.check_every)


def _models(results: Sequence[ModelResult], columns: Optional[Sequence[str]] = None) -> list[dict[str, Any]]:
    """Each result as plain data, its row lists as columns (only ``columns`` of the property rows, if given)."""
    models = []
    for r in results:
        row = {**dataclasses.asdict(r), "train_seconds": 0.0, "analysis_seconds": 0.0}
        for field in ("properties", "vectors"):
            rows = getattr(r, field)
            keys = [k for k in (rows[0] if rows else []) if field != "properties" or columns is None or k in columns]
            row[field] = {k: [x[k] for x in rows] for k in keys}
        models.append(row)
    return models


def _from_models(models: Sequence[dict[str, Any]]) -> list[ModelResult]:
    out = []
    for r in models:
        r = dict(r)
        for field in ("properties", "vectors"):
            rows = r.get(field, [])
            r[field] = [dict(zip(rows, values)) for values in zip(*rows.values())] if isinstance(rows, dict) else rows
        out.append(ModelResult(**r))
    return out


def results_to_dict(
    results: Sequence[ModelResult], n_test: int, quick: bool, matched: Optional[Sequence[ModelResult]] = None
) -> dict[str, Any]:
    """What ``study_text`` needs, as plain data without timings (``figures/study.json``); each model's property and
    vector rows as columns (their keys would otherwise be most of the file)."""
    data = {"n_test": n_test, "quick": quick, "results": _models(results)}
    # the matched arm's page reads only each internal class's score per pair (matched_report)
    return data if matched is None else {**data, "matched": _models(matched, ("site", "role", "a", "b", SCORE))}


def results_from_dict(data: dict[str, Any]) -> tuple[list[ModelResult], int, bool, Optional[list[ModelResult]]]:
    """``results_to_dict``'s inverse; reads row lists stored as columns or, as older files have them, as rows."""
    matched = _from_models(data["matched"]) if "matched" in data else None
    return _from_models(data["results"]), data["n_test"], data["quick"], matched


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
    matched: bool = True,
) -> list[ModelResult]:
    """``hookedmlp study``: train (or load) the family, analyse every model, write ``<out_dir>/study.md``.

    Returns the main arm's results. The models of the first ``ARM_SEEDS`` seeds also score every vector source
    (``VECTORS``). ``matched``: also the matched-accuracy arm, the first ``ARM_SEEDS`` seeds of every variant
    trained until the test loss is at most ``MATCHED_LOSS`` (a quick run's: ``QUICK_MATCHED_LOSS``), analysed
    without the other vector sources.

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
    common: dict[str, Any] = dict(log=log, executor=executor, device=device, together=together)
    settings = STUDY_SETTINGS
    if quick:
        train_x, train_y = load_mnist("train")
        test_x, test_y = load_mnist("test")
        settings = TrainSettings(epochs=1)
        common.update(
            test=stratified_subset(test_x, test_y, 20),
            coeffs=(1.0, 4.0),
            train_data=(train_x[:2000], train_y[:2000], test_x[:1000], test_y[:1000]),
            pairs=off_diagonal_pairs(range(3)),
            property_per_class=20,
        )
    n_test = 200 if quick else 10 * TEST_PER_CLASS
    results = run_study(cache, chosen, seeds, settings=settings, vectors=seeds[:ARM_SEEDS], **common)
    matched_results: Optional[list[ModelResult]] = None
    if matched:
        target, check = _matched_target(quick)
        log(f"  the matched-accuracy arm: every variant trained to a test loss of at most {target:g}")
        matched_settings = dataclasses.replace(settings, target_loss=target, check_every=check)
        matched_results = run_study(cache, chosen, seeds[:ARM_SEEDS], settings=matched_settings, **common)
    outputs = Outputs(out_dir, code=code_version())
    if figures and results and results[0].steer:
        frontiers = [s["frontier"] for r in results for s in r.steer["sites"]]
        outputs.figure(
            "figures/study_frontier",
            [v for f in frontiers for v in f],
            lambda stem, formats: write_figure(study_frontier_figure(results), stem, formats),
        )
        outputs.figure(
            "figures/study_layers",
            [s["pauc"] for r in results for s in r.steer["sites"]],
            lambda stem, formats: write_figure(study_layers_figure(results), stem, formats),
        )
        points, r2 = predicted_points(results)
        if points:
            outputs.figure(
                "figures/study_predicted",
                [p[k] for p in points for k in ("observed", "predicted")],
                lambda stem, formats: write_figure(
                    study_predicted_figure(points, r2, [r.variant for r in results]), stem, formats
                ),
            )
    data = results_to_dict(results, n_test, quick, matched_results)
    outputs.text("figures/study.json", json.dumps(data, separators=(",", ":")), rel=JSON_REL)
    outputs.text("study.md", study_text(results, figures, n_test, quick, matched_results))
    outputs.close()
    every = [*results, *(matched_results or [])]
    train_s = sum(r.train_seconds for r in every)
    analysis_s = sum(r.analysis_seconds for r in every)
    log(
        f"done in {time.perf_counter() - start:.0f} s (training {train_s:.0f} s, analysis {analysis_s:.0f} s: summed "
        f"over the models, in parallel on the workers, as the cache recorded them); report: {out_dir / 'study.md'}"
    )
    return results
