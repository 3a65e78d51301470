"""Core overhead benchmark: HookedMLP vs the same plain nn.Sequential, as ratios in one run.

Run: python bench/bench_core.py [--repeats N]
Targets (issue 2): no hooks at batch 10,000 <= 1.05x; no hooks at batch 1 <= 1.3x;
run_with_cache of every hook point at batch 10,000 <= 1.1x.
"""

import argparse
import statistics
import time

import torch

from hookedmlp import HookedMLP, MLPConfig


def timeit(fn, repeats: int, inner: int) -> float:
    """Fastest over ``repeats`` of the mean time of ``inner`` calls, in seconds."""
    fn()
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t) / inner)
    return min(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = HookedMLP(MLPConfig()).eval()
    seq = model.to_sequential()
    rows = []
    with torch.inference_mode():
        for batch, inner in ((1, 2000), (10_000, 3)):
            x = torch.rand(batch, 1, 28, 28)
            # interleave the two so drifts in machine speed hit both alike
            plain, hooked = [], []
            for _ in range(args.repeats):
                plain.append(timeit(lambda: seq(x), 1, inner))
                hooked.append(timeit(lambda: model(x), 1, inner))
            p, h = min(plain), min(hooked)
            rows.append((f"no hooks, batch {batch}", p, h, 1.3 if batch == 1 else 1.05))
    x = torch.rand(10_000, 1, 28, 28)
    with torch.no_grad():
        plain, cached = [], []
        for _ in range(args.repeats):
            plain.append(timeit(lambda: seq(x), 1, 3))
            cached.append(timeit(lambda: model.run_with_cache(x), 1, 3))
        rows.append(("run_with_cache all 10 points, batch 10000", min(plain), min(cached), 1.1))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'case':<44}{'plain':>12}{'hooked':>12}{'ratio':>8}{'target':>8}")
    for name, p, h, target in rows:
        ok = "ok" if h / p <= target else "MISS"
        print(f"{name:<44}{p * 1e3:>10.3f}ms{h * 1e3:>10.3f}ms{h / p:>8.3f}{target:>7.2f} {ok}")


if __name__ == "__main__":
    main()
