"""Every claim of the study with its spread: over exemplars, over training seeds, and on a control model.

The study made each digit's vector from one image, the first training image of the digit, on one
model. Here each claim is checked on every combination of a model (the shipped model and four
more trained with the same recipe and other seeds) and a way of making vectors (the k-th training
image of each digit, k = 0..9, and the class mean): 55 runs, each the grid of all 90 pairs at
every ``layer{i}.post``. Runs score on a fixed stratified subset of the test set (the first
``per_class`` test images of each digit) to keep the whole in minutes; the headline run of the
report scores on all 10,000 images. The runs are independent: ``spread`` sends them to any executor
(``analysis.executors``), each a pure function of its model, source and test set.
"""

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional, Union

import torch
from torch import Tensor

from hookedmlp import HookedRoot
from hookedmlp.errors import ClusterError
from hookedmlp_analysis.claims import evaluate_claims
from hookedmlp_analysis.executors import ExecutorSettings, Lost, run_tasks
from hookedmlp_analysis.grid import GridResult
from hookedmlp_analysis.published import StudyTables
from hookedmlp_analysis.sweep import all_pairs_sweep

__all__ = ["VectorSource", "Run", "vector_sources", "stratified_subset", "run_claims", "spread", "POSTS"]

POSTS = [f"layer{i}.post" for i in range(5)]


@dataclasses.dataclass(frozen=True)
class VectorSource:
    """How each digit becomes an activation: the ``exemplar``-th training image (``"first"``) or the class mean."""

    method: str
    exemplar: int = 0

    @property
    def label(self) -> str:
        if self.method == "mean":
            return "class mean"
        return "first training image" if self.exemplar == 0 else f"training image {self.exemplar + 1}"


def vector_sources(n_exemplars: int = 10) -> list[VectorSource]:
    """The first ``n_exemplars`` training images of each digit, then the class mean."""
    return [VectorSource("first", k) for k in range(n_exemplars)] + [VectorSource("mean")]


def stratified_subset(images: Tensor, labels: Tensor, per_class: int) -> tuple[Tensor, Tensor]:
    """The first ``per_class`` images of each class, in their original order."""
    keep = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique().tolist():
        keep[(labels == c).nonzero().squeeze(1)[:per_class]] = True
    return images[keep], labels[keep]


@dataclasses.dataclass
class Run:
    """One model and one vector source: its grids' claims, and the time it took."""

    model: str
    source: VectorSource
    claims: dict[str, tuple[bool, float]]
    off_diagonal_loss: float
    seconds: float


def run_claims(
    model: HookedRoot, source: VectorSource, test: tuple[Tensor, Tensor], study: StudyTables, name: str
) -> tuple[Run, dict[str, GridResult]]:
    """The grids of all 90 pairs at every ``layer{i}.post`` for one vector source, and the claims they decide."""
    start = time.perf_counter()
    with torch.no_grad():
        grids = all_pairs_sweep(
            model, POSTS, method=source.method, exemplar=source.exemplar, test=test, keep_distributions=True
        )
    run = Run(
        name,
        source,
        evaluate_claims(grids, study),
        float(grids["layer0.post"].off_diagonal("loss").mean()),
        time.perf_counter() - start,
    )
    return run, grids


@dataclasses.dataclass(frozen=True)
class _Portable:
    """A model as what travels to a worker: its class and checkpoint contents (its traced programs do not pickle)."""

    cls: type
    contents: dict
    meta: dict

    @classmethod
    def of(cls, model: HookedRoot) -> "_Portable":
        return cls(type(model), model.to_checkpoint(), dict(model.meta))

    def model(self) -> HookedRoot:
        model = self.cls.from_checkpoint(self.contents, "a spread run's model")
        model.meta = dict(self.meta)
        return model.eval()


def _run(task: tuple[Union[HookedRoot, _Portable], VectorSource, tuple[Tensor, Tensor], StudyTables, str]) -> Run:
    """One run where an executor sends it: its claims only (its grids stay where they were computed)."""
    model, *rest = task
    return run_claims(model.model() if isinstance(model, _Portable) else model, *rest)[0]


def spread(
    models: dict[str, HookedRoot],
    sources: Sequence[VectorSource],
    test: tuple[Tensor, Tensor],
    study: StudyTables,
    log: Optional[Callable[[str], None]] = None,
    executor: Optional[ExecutorSettings] = None,
) -> list[Run]:
    """Every (model, source) run, in order, logging one line per run as it finishes.

    ``executor``: where the runs go, each with its ``threads``; ``None`` runs them here, one after another, at torch's
    current threads. A run whose worker died on every try is a ``ClusterError``: every claim needs all its runs.
    """
    if executor is None:
        tasks = [(model, source, test, study, name) for name, model in models.items() for source in sources]
        finished: Iterator[tuple[int, Any]] = ((i, _run(task)) for i, task in enumerate(tasks))
    else:
        portable = {name: _Portable.of(model) for name, model in models.items()}
        tasks = [(portable[name], source, test, study, name) for name in models for source in sources]
        finished = run_tasks(_run, tasks, executor)
    runs: dict[int, Run] = {}
    for i, run in finished:
        if isinstance(run, Lost):
            raise ClusterError(f"spread run {tasks[i][4]}, {tasks[i][1].label} was lost: {run.why}; run it again")
        runs[i] = run
        if log is not None:
            flip = run.claims["flip"][1]
            log(
                f"  run {len(runs)}/{len(tasks)}: {run.model}, {run.source.label}: flip rate {flip:.3f}, "
                f"loss off-diagonal {run.off_diagonal_loss:.2f} ({run.seconds:.1f} s)"
            )
    return [runs[i] for i in range(len(tasks))]
