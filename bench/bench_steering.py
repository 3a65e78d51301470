"""Steering benchmark (issue 3), ratios measured in one run.

Run: python bench/bench_steering.py
- steered forward at batch 10,000 vs unsteered, hook layer0.post (target <= 1.1x);
- building a method="mean" 3 - 1 vector over the training set: time (target < 3 s)
  and peak memory above the loaded data (target < 500 MB), measured in a fresh
  subprocess so that nothing else counts.
"""

import json
import subprocess
import sys
import time

import torch

from hookedmlp import HookedMLP

MEAN_CHILD = r"""
import json, resource, time, torch
from hookedmlp import HookedMLP
from hookedmlp.data import load_mnist
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20
model = HookedMLP.from_pretrained("mnist-mlp")
load_mnist("train")
before = rss_mb()
peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
v = model.steering_vector(3, 1, "layer0.post", method="mean")
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "rss_before_mb": before, "peak_mb": max(peak, peak_before),
                  "peak_above_data_mb": max(0.0, peak - before), "n_examples": v.meta["n_examples"]}))
"""


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    model = HookedMLP.from_pretrained("mnist-mlp")
    x = torch.rand(10_000, 784)
    vec = model.steering_vector(3, 1, "layer0.post")
    plain, steered = [], []
    with torch.no_grad():
        model(x)
        for _ in range(40):  # interleaved, so drifts in machine speed hit both alike
            plain.append(best_of(lambda: model(x), 1))
            with vec.apply(model):
                steered.append(best_of(lambda: model(x), 1))
    p, s = min(plain), min(steered)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"steered forward, batch 10000, layer0.post: plain {p * 1e3:.1f} ms, steered {s * 1e3:.1f} ms, "
          f"ratio {s / p:.3f} (target <= 1.10)")
    out = subprocess.run([sys.executable, "-c", MEAN_CHILD], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"mean vector 3 - 1 over {sum(r['n_examples'])} training images of 3s and 1s: {r['seconds']:.2f} s (target < 3 s), "
          f"peak RSS {r['peak_mb']:.0f} MB, {r['peak_above_data_mb']:.0f} MB above the loaded data (target < 500 MB)")


if __name__ == "__main__":
    main()
