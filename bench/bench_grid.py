"""Grid benchmark (issue 4): ratios measured in one run, on the 10,000 MNIST test images.

Run: python bench/bench_grid.py
- the 10 x 10 grid at layer0.post: our way (prefix once, stacked suffix) vs the plain
  way (100 full hooked forward passes), and vs the FLOP bound (the suffix's
  multiply-adds for the 90 non-zero vectors over a matmul rate measured here);
- the all-pairs x all-hook-points sweep vs the layer-0 grid alone (folding).
"""

import time

import torch

from analysis.engine import Contrast, evaluate_plain
from analysis.grid import digit_vectors, steering_grid
from analysis.sweep import all_pairs_sweep
from hookedmlp import HookedMLP
from hookedmlp.data import load_mnist


def matmul_rate(n: int = 10_000, k: int = 512, m: int = 512, repeats: int = 10) -> float:
    """Multiply-adds per second of the sgemm kernel alone: an [n, k] x [k, m] float32 matmul into a
    preallocated output (no allocation), best of ``repeats``."""
    a, b, out = torch.rand(n, k), torch.rand(k, m), torch.empty(n, m)
    torch.mm(a, b, out=out)
    best = min(_time(lambda: torch.mm(a, b, out=out)) for _ in range(repeats))
    return n * k * m / best


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    model = HookedMLP.from_pretrained("mnist-mlp")
    images, labels = load_mnist("test")
    n = len(labels)
    with torch.no_grad():
        # Interleaved rounds, best of each, so that a slow spell of the machine hits all alike.
        ours, sweep, rates = [], [], []
        for _ in range(4):
            rates.append(matmul_rate(n))
            ours.append(_time(lambda: steering_grid(model, images=images, labels=labels)))
            sweep.append(_time(lambda: all_pairs_sweep(model, images=images, labels=labels)))
        ours, sweep, rate = min(ours), min(sweep), max(rates)
        vectors = digit_vectors(model, "layer0.post", range(10))
        contrasts = [Contrast("layer0.post", v, a, b) for (a, b), v in vectors.items()]
        plain = min(_time(lambda: evaluate_plain(model, images, labels, contrasts)) for _ in range(2))
    suffix_macs = sum(s.d_in * s.d_out for s in model.specs[2:] if s.kind == "linear")  # after layer0.post's ReLU
    bound = 90 * n * suffix_macs / rate  # the 10 diagonal vectors are zero and cost nothing
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, matmul rate {rate / 1e9:.1f} G multiply-adds/s")
    print(f"grid layer0.post, 10x10 over {n} images: ours {ours:.2f} s, plain {plain:.2f} s "
          f"-> {plain / ours:.2f}x faster (target >= 4x)")
    print(f"  FLOP bound {bound:.2f} s ({90} vectors x {n} images x {suffix_macs} multiply-adds) "
          f"-> ours is {ours / bound:.2f}x the bound (target <= 1.3x)")
    full_macs = sum(s.d_in * s.d_out for s in model.specs if s.kind == "linear")
    plain_bound = 100 * n * full_macs / rate
    print(f"  the plain way's own FLOP bound: {plain_bound:.2f} s (it runs at {plain / plain_bound:.2f}x its bound); "
          f"the best possible speed-up by skipping the prefix is {100 * full_macs / (90 * suffix_macs):.2f}x")
    print(f"all pairs x all {len(model.hook_names)} hook points: {sweep:.2f} s -> {sweep / ours:.2f}x the layer-0 grid (target <= 1.5x)")


if __name__ == "__main__":
    main()
