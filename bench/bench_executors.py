"""What running a task elsewhere costs (issue 20, the scale projection's inputs): Ray and the process pool.

Run: python bench/bench_executors.py [--tasks N] [--result-mb M]

- "start": from nothing to the first task's result: a local Ray instance with 2 CPUs
  (``ray.init``), or the pool's 2 spawned processes (each imports torch and hookedmlp).
- "per task": N tasks that do nothing and return ``--result-mb`` MB (a study cell returns its
  numbers, a few KB; a model's checkpoint is 2.7 MB for the baseline, 33 MB for width 2048),
  through ``analysis.executors.run_tasks`` on 2 workers, after the start; wall seconds per
  task. Serial, in this process, is the reference.
- "MNIST per worker": loading MNIST's training and test sets in a fresh process, what each
  worker of a cluster pays once (the study's cells load their data where they run).
"""

import argparse
import subprocess
import sys
import time

import torch

from hookedmlp_analysis.executors import ExecutorSettings, run_tasks


def _nothing(task: tuple[int, int]) -> bytes:
    return bytes(task[1])


def _timed(settings: ExecutorSettings, n: int, size: int) -> tuple[float, float]:
    """Seconds to the first result, then seconds per task for the rest."""
    start = time.perf_counter()
    results = run_tasks(_nothing, [(i, size if i else 0) for i in range(n + 1)], settings)
    next(results)
    first = time.perf_counter()
    for _ in results:
        pass
    return first - start, (time.perf_counter() - first) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200, help="tasks per executor (default: 200)")
    parser.add_argument("--result-mb", type=float, default=0.0, help="each task's result, MB (default: 0)")
    args = parser.parse_args()
    size = int(args.result_mb * 2**20)
    print(f"torch {torch.__version__}; {args.tasks} tasks returning {args.result_mb:g} MB each, 2 workers")
    print("| executor | start | per task |")
    print("|---|---|---|")
    for settings in (
        ExecutorSettings("serial"),
        ExecutorSettings("process", workers=2),
        ExecutorSettings("ray", workers=2),
    ):
        try:
            start, per_task = _timed(settings, args.tasks, size)
        except ImportError as e:
            print(f"| {settings.kind} | {e} | |")
            continue
        print(f"| {settings.kind} | {start:.2f} s | {per_task * 1e3:.2f} ms |")
    code = "import time; t = time.perf_counter(); from hookedmlp.data import load_mnist; "
    code += "load_mnist('train'); load_mnist('test'); print(time.perf_counter() - t)"
    seconds = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    print(f"MNIST per worker (import hookedmlp.data, load both splits, fresh process): {seconds:.2f} s")


if __name__ == "__main__":
    main()
