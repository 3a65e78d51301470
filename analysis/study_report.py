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
from hookedmlp_analysis.family import QUICK, SEEDS, STUDY_SETTINGS, TEST_PER_CLASS, VARIANTS, ModelResult
from hookedmlp_analysis.figures import (
    code_version,
    study_frontier_figure,
    study_layers_figure,
    study_predicted_figure,
    write_figure,
)
from hookedmlp_analysis.outputs import JSON_REL, Outputs
from hookedmlp_analysis.prediction_report import QUICK_REPS, REPS, predict, predicted_points, prediction_section
from hookedmlp_analysis.selectivity import off_diagonal_pairs
from hookedmlp_analysis.spread import stratified_subset
from hookedmlp_analysis.steer_report import method_note, study_steer_tables
from hookedmlp_analysis.study_cells import SERIAL, run_study
from hookedmlp_analysis.study_conclusions import conclusions

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
    seeds: int
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
                len(rs),
                Spread.of([r.test_loss for r in rs]),
                Spread.of([r.test_accuracy for r in rs]),
                *(
                    Spread.of([_mean_over_hooks(r, m) for r in rs])
                    for m in ("flip_rate", "loss", "accuracy_other", "kl")
                ),
            )
        )
    return out


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return "\n".join(
        ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]
    )


def _variants_table(summaries: Sequence[VariantSummary]) -> str:
    return _table(
        ["variant", "what changes", "test loss", "test accuracy"],
        [[s.name, s.changes, s.test_loss.fmt(".3f"), s.test_accuracy.fmt(".3f")] for s in summaries],
    )


def _at_one_table(summaries: Sequence[VariantSummary]) -> str:
    return _table(
        ["variant", "flip rate", "loss", "accuracy", "KL"],
        [[s.name, s.flip.fmt(), s.loss.fmt(), s.accuracy.fmt(), s.kl.fmt()] for s in summaries],
    )


def study_text(
    results: Sequence[ModelResult], figures: bool = True, n_test: int = 10 * TEST_PER_CLASS, quick: bool = False
) -> str:
    summaries = summarise_variants(results)
    pred = predict(results, QUICK_REPS if quick else REPS)
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
    s += [
        "## At coefficient 1, the post's setting\n",
        "The mean over all hook points and pairs, each pair's vector added at coefficient 1 (the controls and the "
        "logit class included, as the post steered):\n",
        _at_one_table(summaries),
        "",
        "## Conclusions\n",
        *conclusions(results, pred),
        "",
        "Re-run: `hookedmlp study` (models and results are cached under `runs/study/`; a second run reuses them).\n",
    ]
    return "\n".join(s)


def results_to_dict(results: Sequence[ModelResult], n_test: int, quick: bool) -> dict[str, Any]:
    """What ``study_text`` needs, as plain data without timings (``figures/study.json``); each model's property rows
    as columns (their keys would otherwise be most of the file)."""
    models = []
    for r in results:
        row = {**dataclasses.asdict(r), "train_seconds": 0.0, "analysis_seconds": 0.0}
        keys = list(r.properties[0]) if r.properties else []
        row["properties"] = {k: [p[k] for p in r.properties] for k in keys}
        models.append(row)
    return {"n_test": n_test, "quick": quick, "results": models}


def results_from_dict(data: dict[str, Any]) -> tuple[list[ModelResult], int, bool]:
    """``results_to_dict``'s inverse; reads property rows stored as columns or, as older files have them, as rows."""
    models = []
    for r in data["results"]:
        props = r.get("properties", [])
        if isinstance(props, dict):
            props = [dict(zip(props, values)) for values in zip(*props.values())]
        models.append(ModelResult(**{**r, "properties": props}))
    return models, data["n_test"], data["quick"]


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
    outputs.text(
        "figures/study.json", json.dumps(results_to_dict(results, n_test, quick), separators=(",", ":")), rel=JSON_REL
    )
    outputs.text("study.md", study_text(results, figures, n_test, quick))
    outputs.close()
    train_s = sum(r.train_seconds for r in results)
    analysis_s = sum(r.analysis_seconds for r in results)
    log(
        f"done in {time.perf_counter() - start:.0f} s (training {train_s:.0f} s, analysis {analysis_s:.0f} s: summed "
        f"over the models, in parallel on the workers, as the cache recorded them); report: {out_dir / 'study.md'}"
    )
    return results
