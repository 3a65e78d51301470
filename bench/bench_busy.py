"""Speed beside a busy neighbour (issue 20, point 4): torch's intra-op threads at 2, at 1, and ``--threads auto``.

Run: python bench/bench_busy.py [--rounds R]

Two jobs on the shipped model: one 10 x 10 grid at layer0.post on 2,000 test images
(``hookedmlp grid --n-test 2000``), and one spread run of ``hookedmlp reproduce`` (the 11
claims from one vector source, scored on its 2,000-image stratified subset). Each is timed at
2 threads, at 1 thread, and at ``pick_threads("auto")`` (the cores that idled over 0.1 s just
before, as the commands choose it), first with no process of ours beside it, then beside one
neighbour: a Python process spinning on one core. Rounds interleave every cell; the table shows
each cell's median wall time, the thread count auto chose, and the load average seen. The
neighbour's fair share of 2 cores is one: a job at 1 thread beside it runs at its own speed,
and at 2 threads it waits on its descheduled thread at every parallel op.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from hookedmlp import HookedMLP
from hookedmlp.cores import pick_threads
from hookedmlp.data import load_mnist
from hookedmlp_analysis.grid import steering_grid
from hookedmlp_analysis.published import study_tables
from hookedmlp_analysis.spread import run_claims, stratified_subset, vector_sources


def jobs() -> dict[str, Callable[[], object]]:
    model = HookedMLP.from_pretrained("mnist-mlp").eval()
    images, labels = load_mnist("test")
    grid_test = (images[:2000], labels[:2000])
    subset = stratified_subset(images, labels, 200)
    source, study = vector_sources(10)[0], study_tables()

    def grid() -> object:
        with torch.no_grad():
            return steering_grid(model, test=grid_test)

    def spread_run() -> object:
        with torch.no_grad():
            return run_claims(model, source, subset, study, "mnist-mlp")

    return {"grid, 2,000 images": grid, "one spread run": spread_run}


def timed(job: Callable[[], object], threads: int) -> float:
    torch.set_num_threads(threads)
    start = time.perf_counter()
    job()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds, median of each (default: 5)")
    args = parser.parse_args()
    todo = jobs()
    for job in todo.values():  # warm up: first calls compile and allocate
        timed(job, 2)
    cells: dict[tuple[str, str, str], list[float]] = {}
    chosen: dict[str, list[int]] = {"none": [], "busy": []}
    loads: dict[str, list[float]] = {"none": [], "busy": []}
    for _ in range(args.rounds):
        for neighbour in ("none", "busy"):
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if neighbour == "busy" else None
            try:
                time.sleep(0.5 if spinner else 0.0)  # the neighbour up and running
                for name, job in todo.items():
                    auto = pick_threads("auto")
                    chosen[neighbour].append(auto)
                    for label, n in (("2", 2), ("1", 1), ("auto", auto)):
                        cells.setdefault((neighbour, name, label), []).append(timed(job, n))
                loads[neighbour].append(os.getloadavg()[0])
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()
    print(f"torch {torch.__version__}, {os.cpu_count()} cores; median wall seconds of {args.rounds} interleaved rounds")
    print("| job | other process | torch threads 2 | torch threads 1 | threads auto | auto chose | load average |")
    print("|---|---|---|---|---|---|---|")
    for name in todo:
        for neighbour in ("none", "busy"):
            t = [statistics.median(cells[(neighbour, name, c)]) for c in ("2", "1", "auto")]
            picks = sorted(set(chosen[neighbour]))
            load = f"{min(loads[neighbour]):.1f} to {max(loads[neighbour]):.1f}"
            print(
                f"| {name} | {neighbour} | {t[0]:.2f} s | {t[1]:.2f} s | {t[2]:.2f} s | "
                f"{' or '.join(map(str, picks))} | {load} |"
            )


if __name__ == "__main__":
    main()
