"""The study's cells as tasks any executor runs (``analysis.executors``): each a pure function of its recipe.

A cell is one (variant, seed): train its model or load it from the cache, then analyse it. A
task is a variant's cells: the seeds missing from the cache are trained together
(``hookedmlp.train_seeds``: at the study's one training thread, the same bits as one at a time),
then each is analysed. A worker writes the cache itself, every file atomically, holding a lock
per cell, so that two studies sharing a cache compute and write each cell once: the second
finds it done. A worker on another machine also sends back the files it wrote, and the
coordinator adds them to its own cache (``merge``).
"""

import contextlib
import dataclasses
import fcntl
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Optional

from torch import Tensor

from hookedmlp.data import load_mnist
from hookedmlp.errors import ClusterError
from hookedmlp.files.atomic import atomic_write
from hookedmlp.train import TrainSettings
from hookedmlp.train_files import partial_path
from hookedmlp.train_seeds import train_seeds
from hookedmlp_analysis.executors import ExecutorSettings, Lost, run_tasks
from hookedmlp_analysis.family import (
    PROPERTY_PER_CLASS,
    SEEDS,
    STUDY_SETTINGS,
    TEST_PER_CLASS,
    VARIANTS,
    ModelResult,
    Variant,
    cached_model,
    cell_files,
    headline,
    study_model,
    unique,
)
from hookedmlp_analysis.selectivity import COEFFS
from hookedmlp_analysis.spread import stratified_subset

__all__ = ["CellTask", "CellOutcome", "run_cell_task", "merge", "seed_groups", "run_study"]

SERIAL = ExecutorSettings()


@dataclasses.dataclass(frozen=True)
class CellTask:
    """Everything a variant's cells need, as plain data: what a worker anywhere receives."""

    variant: Variant
    seeds: tuple[int, ...]
    cache: Path
    test: tuple[Tensor, Tensor]
    coeffs: tuple[float, ...]
    train_data: Optional[tuple[Tensor, ...]]
    settings: TrainSettings
    pairs: Optional[tuple[tuple[int, int], ...]]
    device: str = "cpu"
    together: bool = True
    host: str = dataclasses.field(default_factory=socket.gethostname)  # the coordinator's
    property_per_class: int = PROPERTY_PER_CLASS
    vectors: tuple[int, ...] = ()  # the seeds whose models score every vector source too (family.VECTORS)


@dataclasses.dataclass
class CellOutcome:
    """A task's results (one per seed, in order), the lines its cells logged, and files for the coordinator."""

    results: list[ModelResult]
    lines: list[str]
    files: dict[str, bytes]


@contextlib.contextmanager
def _locked(paths: Sequence[Path]) -> Iterator[None]:
    """Hold an exclusive lock per cell (``<stem>.lock``, in sorted order so that two holders never deadlock).

    The kernel drops a lock when its process dies, so a killed study never leaves a cell locked.
    """
    handles = []
    try:
        for path in sorted(paths):
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path.with_suffix(".lock"), "a")
            handles.append(handle)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        for handle in handles:
            handle.close()  # closing releases the lock


def _train_missing(task: CellTask, cells: list[tuple[TrainSettings, Path, Path]], log: list[str]) -> dict[int, float]:
    """Train together the seeds whose model is not in the cache; each one's share of the time it took."""
    missing = [
        (seed, path)
        for seed, (settings, path, _) in zip(task.seeds, cells)
        if cached_model(task.variant, settings, path, log.append) is None
    ]
    if len(missing) < 2 or not task.together or task.settings.target_loss is not None:
        return {}  # one model (or none) to train, or each to its own step: study_model trains them alone
    for _, path in missing:
        partial_path(path).unlink(missing_ok=True)  # the cache's own: an interrupted study's last epoch
    start = time.perf_counter()
    train_seeds(
        task.variant.recipe,
        cells[0][0],
        [seed for seed, _ in missing],
        outs=[path for _, path in missing],
        data=task.train_data,
        device=task.device,
        progress=False,
        command=f"hookedmlp study (variant {task.variant.name!r}, seeds {[seed for seed, _ in missing]} together)",
    )
    share = (time.perf_counter() - start) / len(missing)
    return {seed: share for seed, _ in missing}


def run_cell_task(task: CellTask) -> CellOutcome:
    """Train what is missing and analyse every seed of ``task``; a pure function of the task (and the cache)."""
    lines: list[str] = []
    cells = [cell_files(task.variant, seed, task.cache, task.settings, task.train_data) for seed in task.seeds]
    with _locked([model for _, model, _ in cells]):
        trained = _train_missing(task, cells, lines)
        results = [
            study_model(
                task.variant,
                seed,
                task.cache,
                task.test,
                task.coeffs,
                task.train_data,
                task.settings,
                task.pairs,
                log=lines.append,
                device=task.device,
                trained_seconds=trained.get(seed, 0.0),
                property_per_class=task.property_per_class,
                vectors=seed in task.vectors,
            )
            for seed in task.seeds
        ]
    here = socket.gethostname() == task.host
    files = {} if here else {p.name: p.read_bytes() for _, *paths in cells for p in paths if p.exists()}
    return CellOutcome(results, lines, files)


def merge(outcome: CellOutcome, cache: Path) -> int:
    """Write into ``cache`` the files a worker elsewhere computed that it lacks (atomically); how many."""
    written = 0
    for name, data in outcome.files.items():
        target = cache / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(target, "wb") as f:
                f.write(data)
            written += 1
    return written


def seed_groups(seeds: Sequence[int], n_variants: int, slots: Optional[int], together: bool) -> list[tuple[int, ...]]:
    """A variant's seeds split into tasks: as few as keep every worker busy (``slots`` of them; ``None``, a cluster
    of unknown size: one seed per task), each group trained together; one seed per task unless ``together``."""
    if not together or slots is None:
        return [(s,) for s in seeds]
    n = min(len(seeds), max(1, -(-slots // n_variants)))
    size, longer = divmod(len(seeds), n)  # n groups, their sizes at most one apart
    ends = [(k + 1) * size + min(k + 1, longer) for k in range(n)]
    return [tuple(seeds[start:end]) for start, end in zip([0, *ends], ends)]


def _line(done: int, total: int, r: ModelResult) -> str:
    return (
        f"  model {done}/{total}: {r.variant}, seed {r.seed}: test loss {r.test_loss:.3f}, {headline(r)} (train "
        f"{r.train_seconds:.0f} s, analysis {r.analysis_seconds:.0f} s)"
    )


def run_study(
    cache: Path,
    variants: Sequence[Variant] = VARIANTS,
    seeds: Sequence[int] = SEEDS,
    test: Optional[tuple[Tensor, Tensor]] = None,
    coeffs: Sequence[float] = COEFFS,
    train_data: Optional[tuple[Tensor, ...]] = None,
    settings: TrainSettings = STUDY_SETTINGS,
    pairs: Optional[Sequence[tuple[int, int]]] = None,
    log: Callable[[str], None] = print,
    executor: ExecutorSettings = SERIAL,
    device: str = "cpu",
    together: bool = True,
    property_per_class: int = PROPERTY_PER_CLASS,
    vectors: Sequence[int] = (),
) -> list[ModelResult]:
    """Every (variant, seed) model, trained or loaded from ``cache``, analysed; one progress line per model.

    Properties are measured on the first ``property_per_class`` training images of each digit; the models of the seeds
    in ``vectors`` score every vector source too (``family.VECTORS``).

    The cells run on ``executor`` (a task per group of a variant's seeds, its missing seeds trained ``together``, as
    few groups as keep the workers busy: ``seed_groups``; or one task per cell),
    each with ``executor.threads`` intra-op threads, and come back in the order they finish; the results are
    returned in the study's order (variants, then seeds), whichever executor ran them. A cell whose worker died
    on every try is reported and the others kept in the cache: ``ClusterError`` at the end names it, and a second
    run computes only what is missing.
    """
    unique([v.name for v in variants], "variants")
    unique(list(seeds), "seeds")
    if test is None:
        test = stratified_subset(*load_mnist("test"), TEST_PER_CLASS)
    groups = seed_groups(list(seeds), len(variants), executor.slots, together)
    tasks = [
        CellTask(
            v,
            group,
            Path(cache),
            test,
            tuple(coeffs),
            train_data,
            settings,
            None if pairs is None else tuple(tuple(p) for p in pairs),
            str(device),
            together,
            property_per_class=property_per_class,
            vectors=tuple(vectors),
        )
        for v in variants
        for group in groups
    ]
    total = len(variants) * len(seeds)
    log(f"  {total} models in {len(tasks)} tasks on the {executor.label}")
    found: dict[tuple[str, int], ModelResult] = {}
    lost: list[str] = []
    for i, outcome in run_tasks(run_cell_task, tasks, executor):
        if isinstance(outcome, Lost):
            lost += [f"{tasks[i].variant.name} seed {s}" for s in tasks[i].seeds]
            log(f"  lost: {tasks[i].variant.name}, seeds {list(tasks[i].seeds)}: {outcome.why}")
            continue
        merge(outcome, Path(cache))
        for line in outcome.lines:
            log(line)
        for r in outcome.results:
            found[(r.variant, r.seed)] = r
            log(_line(len(found), total, r))
    if lost:
        raise ClusterError(
            f"{len(lost)} of {total} models could not be computed ({', '.join(lost)}): their workers died on every "
            f"try; the other {len(found)} are in {cache}; run the study again to compute only what is missing"
        )
    return [found[(v.name, s)] for v in variants for s in seeds]
