"""``hookedmlp reproduce``: the whole study in one command, written to docs/.

Loads the shipped model (or trains one), computes the all-pairs grid at every hook
point in one folded evaluation, the 3 - 1 layer sweep, the per-digit distributions
and a dose-response, then writes ``docs/figures/*`` (HTML + PNG) and
``docs/reproduction.md`` comparing every number with the study's.
"""

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from analysis.grid import GridResult
from analysis.report import write_report
from analysis.published import StudyTables, study_tables
from analysis.sweep import CoeffSweep, LayerSweep, all_pairs_sweep, coeff_sweep, layer_sweep
from hookedmlp import HookedMLP
from hookedmlp.data import load_mnist
from hookedmlp.train import evaluate, train_model

__all__ = ["Reproduction", "reproduce", "DOSE_PAIRS", "DISTRIBUTION_PAIRS"]

DOSE_PAIRS = ((3, 1), (0, 9), (5, 6), (7, 2))
DISTRIBUTION_PAIRS = ((3, 1), (0, 9), (5, 6), (7, 2), (1, 8), (4, 9))
COEFFS = (-1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


@dataclasses.dataclass
class Reproduction:
    """Everything ``reproduce`` computed, and the files it wrote.

    Args:
        model_name: how the model was obtained (e.g. ``"shipped mnist-mlp"``).
        test_loss: the model's mean cross-entropy on all 10,000 test images.
        test_accuracy: its accuracy on them.
        n_test: the number of test images scored (1,000 with ``quick``).
        grids: ``{hook: GridResult}`` for every hook point.
        sweep: the 3 - 1 layer sweep.
        dose: the dose-response over ``DOSE_PAIRS``.
        study: the study's published tables.
        timings: seconds per step, and ``"total"``.
        files: the files written.
    """

    model_name: str
    test_loss: float
    test_accuracy: float
    n_test: int
    grids: dict[str, GridResult]
    sweep: LayerSweep
    dose: CoeffSweep
    study: StudyTables
    timings: dict[str, float]
    files: list[Path]

    @property
    def grid(self) -> GridResult:
        """The study's grid: ``layer0.post``.

        Returns:
            ``grids["layer0.post"]``.
        """
        return self.grids["layer0.post"]


def reproduce(out_dir: Union[str, Path] = "docs", checkpoint: Optional[Union[str, Path]] = None, train: bool = False,
              quick: bool = False, figures: bool = True, log: Callable[[str], None] = print, progress: bool = True) -> Reproduction:
    """Run the study and write ``<out_dir>/reproduction.md`` and ``<out_dir>/figures/``.

    Takes about half a minute on the full test set (a few seconds with ``quick``),
    plus about half a minute to train with ``train``.

    Args:
        out_dir: where to write (``docs`` in the repository).
        checkpoint: a HookedMLP checkpoint to study (default: the shipped ``mnist-mlp``).
        train: train a fresh model with ``hookedmlp train``'s defaults instead.
        quick: score on the first 1,000 test images only (for smoke tests).
        figures: write the figures (HTML + PNG).
        log: where progress lines go.
        progress: show progress bars.

    Returns:
        A ``Reproduction``: every result, the timings and the files written
            (``figures/grid_layer0_post.json``, the figures, ``reproduction.md``).
    """
    out = Path(out_dir)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def step(name: str, start: float) -> None:
        timings[name] = time.perf_counter() - start
        log(f"  {name}: {timings[name]:.1f} s")

    start = time.perf_counter()
    if train:
        model, name = train_model(out=out / "figures" / "trained.pt", progress=progress).model, "freshly trained (hookedmlp train defaults)"
    elif checkpoint is not None:
        model, name = HookedMLP.load(checkpoint), f"checkpoint {checkpoint}"
    else:
        model, name = HookedMLP.from_pretrained("mnist-mlp"), "shipped mnist-mlp"
    model.eval()
    images, labels = load_mnist("test")
    images = images.to(model.reference_tensor().dtype)  # the model's dtype: a float64 checkpoint works too
    test_loss, test_acc = evaluate(model, images, labels)
    if quick:
        images, labels = images[:1000], labels[:1000]
    step("model and data", start)
    log(f"model: {name}; test loss {test_loss:.4f}, accuracy {test_acc:.4f}; scoring on {len(labels)} test images")

    start = time.perf_counter()
    with torch.no_grad():
        grids = all_pairs_sweep(model, test=(images, labels), keep_distributions=True, progress=progress)
    step("all pairs x all 10 hook points (folded)", start)

    start = time.perf_counter()
    sweep = layer_sweep(model, 3, 1, test=(images, labels))
    dose = coeff_sweep(model, DOSE_PAIRS, COEFFS, test=(images, labels))
    step("3 - 1 layer sweep and dose-response", start)

    study = study_tables()
    result = Reproduction(name, test_loss, test_acc, len(labels), grids, sweep, dose, study, timings, [])
    figures_dir = out / "figures"
    start = time.perf_counter()
    result.grid.save(figures_dir / "grid_layer0_post.json")
    result.files.append(figures_dir / "grid_layer0_post.json")
    if figures:
        from analysis import figures as fig

        result.files += fig.write_figure(fig.grid_heatmap(result.grid, study), figures_dir / "grid_loss")
        result.files += fig.write_figure(fig.grid_heatmap(result.grid, metric="flip_rate"), figures_dir / "grid_flip_rate")
        result.files += fig.write_figure(fig.layer_sweep_figure(sweep, study), figures_dir / "layer_sweep_3_1")
        assert result.grid.distributions is not None
        result.files += fig.write_figure(fig.distributions_figure(result.grid.distributions, DISTRIBUTION_PAIRS), figures_dir / "distributions")
        result.files += fig.write_figure(fig.dose_response_figure(dose), figures_dir / "dose_response")
        step("figures", start)
    timings["total"] = time.perf_counter() - t0
    result.files.append(write_report(result, out / "reproduction.md", figures=figures))
    log(f"wrote {len(result.files)} files under {out} in {timings['total']:.1f} s")
    return result
