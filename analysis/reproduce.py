"""``hookedmlp reproduce``: the whole study in one command, every claim with its spread, written to docs/.

1. The headline run, as the study did it: the shipped model (or a given or freshly trained one),
   the first training image of each digit, all 90 pairs at every hook point, scored on all
   10,000 test images; the 3 - 1 layer sweep; a dose-response.
2. The spread: every claim on 5 models of the study's recipe (seeds 0-4, shipped) x 11 ways of
   making vectors (training images 1-10 of each digit, and the class mean) = 55 runs, on a
   stratified subset of the test set (``analysis.spread``).
3. A control model trained to about the study's own test loss (0.089), over the same 11 sources.
4. The headline model's steerability without thresholds, at every hook class, with its controls
   (``analysis.steerability``), on the first 100 test images of each digit.
5. The post's figures explained on the same images (``analysis.explain``): layer 0 as pixel
   arithmetic, the Jacobian's share of the shift at hidden layers, each pair's window at the logits.
Tracked outputs (``reproduction.md``, ``figures/*.png``, ``figures/*.json``) are rewritten only
where they changed beyond their printed precision (``analysis.outputs``); timings go to the log.
"""

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from hookedmlp import HookedMLP, HookedRoot, load
from hookedmlp.data import load_mnist
from hookedmlp.errors import UsageError
from hookedmlp.files.atomic import check_writable
from hookedmlp.progress import JobProgress
from hookedmlp.train import evaluate, train_model
from hookedmlp_analysis import figures as fig
from hookedmlp_analysis.claims import CLAIMS, evaluate_claims, summarise
from hookedmlp_analysis.executors import ExecutorSettings
from hookedmlp_analysis.explain import explain_summary
from hookedmlp_analysis.grid import GridResult
from hookedmlp_analysis.outputs import JSON_REL, Outputs, numbers_of
from hookedmlp_analysis.published import study_tables
from hookedmlp_analysis.report import Reproduction, report_text
from hookedmlp_analysis.spread import spread, stratified_subset, vector_sources
from hookedmlp_analysis.steerability import steerability
from hookedmlp_analysis.sweep import all_pairs_sweep, coeff_sweep, layer_sweep

__all__ = ["Reproduction", "reproduce", "distribution_pairs", "DOSE_PAIRS", "SEED_MODELS", "CONTROL_MODEL"]

DOSE_PAIRS = ((3, 1), (0, 9), (5, 6), (7, 2))
COEFFS = (-1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
SEED_MODELS = ("mnist-mlp", "mnist-mlp-seed1", "mnist-mlp-seed2", "mnist-mlp-seed3", "mnist-mlp-seed4")
CONTROL_MODEL = "mnist-mlp-control"
SPREAD_PER_CLASS = 200  # the spread runs score on the first 200 test images of each digit
# The job's steps in units of one spread run, from full runs on 2 busy cores (headline 46 and 118 s; a spread
# run 9.5 and 20.6 s; the control's grid about 30 s; the 7 figures 3 to 5 s): the ETA weighs them so.
COST = {
    "headline": 5.0,
    "run": 1.0,
    "control grid": 2.0,
    "steerability": 2.0,
    "explain": 1.5,
    "figure": 0.05,
    "training": 3.0,
}
STEER_PER_CLASS = 100  # the steerability measurement scores on the first 100 test images of each digit
EXPLAIN_HOOKS = ("layer0.post", "layer1.post", "layer3.post")  # one per hook class past the input


def _on(model: HookedRoot, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The test set in the model's dtype (a float64 model too) and on its device."""
    ref = model.reference_tensor()
    return images.to(ref.device, ref.dtype), labels.to(ref.device)


def _headline_model(checkpoint: Optional[Path], train: bool, out: Path, progress: bool) -> tuple[HookedRoot, str]:
    if train:
        trained = train_model(out=out / "figures" / "trained.pt", progress=progress).model
        return trained, "freshly trained (hookedmlp train defaults)"
    if checkpoint is not None:
        return load(checkpoint), f"checkpoint {checkpoint}"
    return HookedMLP.from_pretrained("mnist-mlp"), "shipped mnist-mlp"


def reproduce(
    out_dir: Union[str, Path] = "docs",
    checkpoint: Optional[Union[str, Path]] = None,
    train: bool = False,
    quick: bool = False,
    figures: bool = True,
    log: Callable[[str], None] = print,
    progress: Union[bool, JobProgress] = True,
    executor: Optional[ExecutorSettings] = None,
    device: Union[str, torch.device] = "cpu",
) -> Reproduction:
    """Run the study and write ``<out_dir>/reproduction.md`` and ``<out_dir>/figures/``.

    About 1.5 minutes on 2 cores (seconds with ``quick``: the headline on 1,000 test images, 4
    spread runs and 2 control runs on 100, vectors from the first two training images only).
    Progress and timings go to ``log``; it ends with each claim's verdict, then where the report is.

    Args:
        out_dir: where to write (``docs`` in the repository).
        checkpoint: a checkpoint to study instead of the shipped model (the spread then covers
            its exemplars only, not other seeds).
        train: train a fresh model with ``hookedmlp train``'s defaults instead.
        quick: a smoke test: fewer images, runs and sources.
        figures: write the figures (HTML, and PNG where their numbers changed).
        log: where progress lines go.
        progress: show one progress bar, with an ETA, over the whole job; or the ``JobProgress``
            to move (the command line starts it before importing torch).
        executor: where the spread's runs go (``analysis.executors``), each with its own threads; ``None``:
            here, one after another, at torch's current threads.
        device: where the models and the analysis run (a GPU with the serial executor only: a run's model
            travels to its worker on the CPU).
    """
    out = Path(out_dir)
    if torch.device(device).type != "cpu" and executor is not None and executor.kind != "serial":
        raise UsageError(
            f"the spread's runs go to {executor.kind} workers on the CPU; on {device} use the serial executor"
        )
    check_writable(out / "reproduction.md")
    t0 = time.perf_counter()
    job = progress if isinstance(progress, JobProgress) else JobProgress("reproduce") if progress else None
    log = job.log(log) if job is not None else log
    quick_sources = 2
    n_models = (2 if quick else len(SEED_MODELS)) if checkpoint is None and not train else 1
    n_sources = quick_sources if quick else len(vector_sources(10))
    total = (
        COST["training"] * train
        + COST["headline"]
        + COST["run"] * (n_models + 1) * n_sources
        + COST["control grid"]
        + COST["steerability"]
        + COST["explain"]
        + COST["figure"] * 8 * figures
    )
    done = 0.0

    def tick(cost: float, what: str) -> None:
        nonlocal done
        done += cost
        if job is not None:
            job.update(done, total, what)

    def step(name: str, start: float) -> None:
        log(f"  {name}: {time.perf_counter() - start:.1f} s")

    tick(0, "training a model" if train else "headline: all pairs at every hook point")
    start = time.perf_counter()
    model, name = _headline_model(Path(checkpoint) if checkpoint is not None else None, train, out, False)
    model.eval().to(device)
    tick(COST["training"] * train, "headline: all pairs at every hook point")
    images, labels = load_mnist("test")
    test_loss, test_acc = evaluate(model, *_on(model, images, labels))
    head = (images[:1000], labels[:1000]) if quick else (images, labels)
    log(
        f"model: {name}; test loss {test_loss:.4f}, accuracy {test_acc:.4f}; headline run on {len(head[1])} test images"
    )
    with torch.no_grad():
        grids = all_pairs_sweep(model, test=head, keep_distributions=True)
        sweep = layer_sweep(model, 3, 1, test=head)
        dose = coeff_sweep(model, DOSE_PAIRS, COEFFS, test=head)
    step("headline: all pairs at every hook point, 3 - 1 sweep, dose-response", start)
    tick(COST["headline"], "spread: run 1")

    study = study_tables()
    subset = stratified_subset(images, labels, 10 if quick else SPREAD_PER_CLASS)
    # quick: no class means (a pass over 60,000)
    sources = vector_sources(2)[:quick_sources] if quick else vector_sources(10)
    if checkpoint is None and not train:
        names = SEED_MODELS[:n_models]
        models = {n: HookedMLP.from_pretrained(n).eval().to(device) for n in names}
        seeds_note = f"{len(models)} models of the study's recipe, seeds 0-{len(models) - 1} (shipped with hookedmlp)"
    else:
        models = {name: model}
        seeds_note = f"the studied model only ({name}): the other seeds are of the shipped recipe, not this one"

    def run_done(stage: str, n: int) -> Callable[[str], None]:
        finished = 0

        def done_line(line: str) -> None:  # spread() logs one line per finished run
            nonlocal finished
            finished += 1
            log(line)
            tick(COST["run"], f"{stage}: run {finished + 1} of {n}" if finished < n else stage)

        return done_line

    start = time.perf_counter()
    log(f"spread: {len(models)} models x {len(sources)} vector sources on {len(subset[1])} test images")
    runs = spread(models, sources, subset, study, run_done("spread", len(models) * len(sources)), executor)
    step("spread", start)

    start = time.perf_counter()
    control = HookedMLP.from_pretrained(CONTROL_MODEL).eval().to(device)
    control_loss, _ = evaluate(control, *_on(control, images, labels))
    log(f"control: {CONTROL_MODEL}, test loss {control_loss:.4f}")
    control_runs = spread({CONTROL_MODEL: control}, sources, subset, study, run_done("control", len(sources)), executor)
    tick(0, "control: its grid")
    with torch.no_grad():
        control_grid = all_pairs_sweep(control, ["layer0.post"], test=head)["layer0.post"]
    tick(COST["control grid"], "steerability")
    step("control", start)

    start = time.perf_counter()
    steer_test = stratified_subset(images, labels, 10 if quick else STEER_PER_CLASS)
    with torch.no_grad():
        steer = steerability(model, steer_test)  # the job's one bar (tick) shows its progress
    tick(COST["steerability"], "explaining the post's figures")
    step(f"steerability: {steer.engine}", start)

    start = time.perf_counter()
    pairs = [(a, b) for a in range(10) for b in range(10) if a != b]
    pairs.insert(0, pairs.pop(pairs.index((3, 1))))  # the figure's pair: the study's 3 - 1
    with torch.no_grad():
        explained = explain_summary(model, steer_test, pairs, EXPLAIN_HOOKS) if isinstance(model, HookedMLP) else None
    tick(COST["explain"], "figures" if figures else "report")
    step("explaining the post's figures", start)

    result = Reproduction(
        name,
        test_loss,
        test_acc,
        len(head[1]),
        grids,
        sweep,
        dose,
        study,
        runs,
        control_runs,
        control_grid,
        control_loss,
        len(subset[1]),
        seeds_note,
        evaluate_claims(grids, study),
        steer.summary(),
        len(steer_test[1]),
        explained,
    )
    outputs = Outputs(out, code=fig.code_version())
    outputs.text("figures/grid_layer0_post.json", json.dumps(result.grid.to_dict()), rel=JSON_REL)
    outputs.text("figures/reproduction.json", json.dumps(result.to_dict(), indent=1), rel=JSON_REL)
    if figures:
        start = time.perf_counter()
        _write_figures(result, outputs, lambda: tick(COST["figure"], "figures"))
        step("figures", start)
    outputs.text("reproduction.md", report_text(result, figures=figures))
    outputs.close()
    tick(0, "done")
    log(
        f"done in {time.perf_counter() - t0:.1f} s: {len(outputs.written)} files written, {len(outputs.kept)} "
        "unchanged (equal to their printed precision)"
    )
    for s in summarise([r.claims for r in runs]):
        log(f"  {s.claim.key}: {s.verdict}; {s.claim.number} median {s.median:.3g} [{s.low:.3g}, {s.high:.3g}]")
    if job is not None and job is not progress:
        job.close()  # our own bar: erased, so that the report's path below is the last line
    log(f"report: {out / 'reproduction.md'}")
    return result


def distribution_pairs(grid: GridResult) -> list[tuple[tuple[int, int], str]]:
    """Six pairs for the static distributions figure, each with why: the study's 3 - 1, and the extremes of the grid."""
    pairs = [(a, b) for a in grid.digits for b in grid.digits if a != b]
    flips, losses = grid.off_diagonal("flip_rate"), grid.off_diagonal("loss")
    order = np.argsort(flips, kind="stable")
    chosen = {(3, 1): "the study's example"} if (3, 1) in pairs else {}
    for index, why in (
        (order[-1], "the strongest flip"),
        (order[0], "the weakest flip"),
        (order[len(order) // 2], "a median flip"),
        (int(np.argmax(losses)), "the most damage"),
        (int(np.argmin(losses)), "the least damage"),
    ):
        chosen.setdefault(pairs[int(index)], why)
    for index in order[::-1]:  # fill up to six where two reasons picked one pair
        if len(chosen) >= 6:
            break
        chosen.setdefault(pairs[int(index)], "a strong flip")
    return list(chosen.items())[:6]


def _write_figures(r: Reproduction, outputs: Outputs, drawn: Callable[[], None]) -> None:
    """The eight figures (seven without the explanation); ``drawn()`` after each."""

    def writer(figure: fig.go.Figure) -> Callable[[Path, list[str]], list[Path]]:
        def write(stem: Path, formats: list[str]) -> list[Path]:
            paths = fig.write_figure(figure, stem, formats)
            drawn()
            return paths

        return write

    g = r.grid
    outputs.figure("figures/grid_loss", numbers_of(g.loss, r.study.grid), writer(fig.grid_heatmap(g, r.study)))
    outputs.figure("figures/grid_flip_rate", numbers_of(g.flip_rate), writer(fig.grid_heatmap(g, metric="flip_rate")))
    outputs.figure(
        "figures/layer_sweep_3_1",
        numbers_of(r.sweep.loss, r.sweep.flip_rate),
        writer(fig.layer_sweep_figure(r.sweep, r.study)),
    )
    pairs = distribution_pairs(g)
    outputs.figure(
        "figures/distributions",
        numbers_of(g.distributions) + [v for p, _ in pairs for v in p],
        writer(fig.distributions_figure(g, pairs)),
    )
    outputs.written += writer(fig.distributions_explorer(g))(outputs.root / "figures" / "distributions_all", ["html"])
    outputs.figure(
        "figures/dose_response", numbers_of(r.dose.flip_rate, r.dose.loss), writer(fig.dose_response_figure(r.dose))
    )
    outputs.figure(
        "figures/spread",
        numbers_of([[run.claims[c.key][1] for c in CLAIMS] for run in r.runs]),
        writer(fig.spread_figure(r.runs, [c.key for c in CLAIMS], r.study)),
    )
    if r.explained is not None:
        panels = r.explained["panels"]
        outputs.figure(
            "figures/pixel_arithmetic",
            numbers_of(list(panels.values())),
            writer(fig.pixel_arithmetic_figure(panels)),
        )
