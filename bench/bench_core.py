"""Core overhead benchmark: HookedMLP vs the same plain nn.Sequential, as ratios measured in one run.

Run: python bench/bench_core.py [--rounds 21]
Each case's time per call is divided by the bare nn.Sequential's in the same round; the
figure is the median of ``--rounds`` interleaved rounds (2 threads by default).
Targets: no hooks at batch 1 <= 1.3x and at batch 10,000 <= 1.05x (issue 2);
``with model.hooks(...)`` per call at batch 1 <= 1.5x and run_with_cache of every hook
point at batch 10,000 <= 1.05x (issue 10).
"""

import argparse
import statistics
from typing import Any

import torch
from _timing import per_call

from hookedmlp import HookedMLP


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = HookedMLP.from_pretrained("mnist-mlp").eval()
    seq = model.to_sequential()
    x1 = torch.rand(1, 1, 28, 28)
    x10k = torch.rand(10_000, 1, 28, 28)

    def shift(act: torch.Tensor, hook: Any) -> torch.Tensor:
        return act + 1.0

    def hooked() -> torch.Tensor:
        with model.hooks(fwd_hooks=[("layer0.post", shift)]):
            return model(x1)

    # (case, plain fn, hooked fn, calls per measurement, target)
    cases = [
        ("no hooks, batch 1", lambda: seq(x1), lambda: model(x1), 1000, 1.3),
        ("with model.hooks(...) per call, batch 1", lambda: seq(x1), hooked, 1000, 1.5),
        ("no hooks, batch 10000", lambda: seq(x10k), lambda: model(x10k), 3, 1.05),
        ("run_with_cache, all 10 points, batch 10000", lambda: seq(x10k), lambda: model.run_with_cache(x10k), 3, 1.05),
    ]
    ratios: dict[str, list[float]] = {c[0]: [] for c in cases}
    times: dict[str, list[tuple[float, float]]] = {c[0]: [] for c in cases}
    with torch.no_grad():
        for _, plain, ours, _, _ in cases:
            plain(), ours()
        # Batch-1 cases first, then batch 10,000: right after a big multi-threaded matmul the idle
        # worker thread still spins for a while and would slow whichever small case came next.
        for group in (cases[:2], cases[2:]):
            for r in range(args.rounds):  # interleaved, so drifts in machine speed hit both alike
                for name, plain, ours, inner, _ in group:
                    if r % 2:  # alternate the order (ABBA), so neither side always runs first
                        h, p = per_call(ours, inner), per_call(plain, inner)
                    else:
                        p, h = per_call(plain, inner), per_call(ours, inner)
                    ratios[name].append(h / p)
                    times[name].append((p, h))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, median of {args.rounds} interleaved rounds")
    print(f"{'case':<46}{'plain':>12}{'hooked':>12}{'ratio':>8}{'target':>8}")
    for name, _, _, _, target in cases:
        r = statistics.median(ratios[name])
        p = statistics.median(t[0] for t in times[name])
        h = statistics.median(t[1] for t in times[name])
        print(
            f"{name:<46}{p * 1e3:>10.3f}ms{h * 1e3:>10.3f}ms{r:>8.3f}{target:>7.2f} {'ok' if r <= target else 'MISS'}"
        )


if __name__ == "__main__":
    main()
