"""Steering benchmark (issues 3 and 10), ratios measured in one run.

Run: python bench/bench_steering.py [--rounds 21]
- ``with model.steer(vec): model(x)`` per call at batch 1 vs the bare nn.Sequential, hook
  layer0.post (target <= 1.5x): the per-call cost of entering, checking and leaving the vector;
- steered forward at batch 10,000 vs unsteered, hook layer0.post (target <= 1.1x);
- building a method="mean" 3 - 1 vector over the training set: time (target < 3 s)
  and peak memory above the loaded data (target < 500 MB), measured in a fresh
  subprocess so that nothing else counts.
"""

import argparse
import json
import statistics
import subprocess
import sys

import torch
from _timing import per_call

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = HookedMLP.from_pretrained("mnist-mlp").eval()
    seq = model.to_sequential()
    x1, x = torch.rand(1, 784), torch.rand(10_000, 784)
    vec = model.steering_vector(3, 1, "layer0.post")

    def steer_one():
        with model.steer(vec):
            return model(x1)

    def steered_big():
        with vec.apply(model):
            return model(x)

    def ratio(ours, plain, inner: int, r: int) -> float:
        if r % 2:  # alternate the order (ABBA), so neither side always runs first
            o = per_call(ours, inner)
            return o / per_call(plain, inner)
        p = per_call(plain, inner)
        return per_call(ours, inner) / p

    with torch.no_grad():
        steer_one(), steered_big(), seq(x1), model(x)
        # Batch 1 first, then batch 10,000: after a big multi-threaded matmul the idle worker thread
        # still spins for a while and would slow the small case measured next.
        per_call_ratio = [ratio(steer_one, lambda: seq(x1), 1000, r) for r in range(args.rounds)]
        big_ratio = [ratio(steered_big, lambda: model(x), 3, r) for r in range(args.rounds)]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, medians of {args.rounds} interleaved rounds")
    r1, r2 = statistics.median(per_call_ratio), statistics.median(big_ratio)
    print(f"with model.steer(vec): model(x) per call, batch 1, vs nn.Sequential: ratio {r1:.3f} (target <= 1.50)")
    print(f"steered forward, batch 10000, layer0.post, vs unsteered: ratio {r2:.3f} (target <= 1.10)")
    out = subprocess.run([sys.executable, "-c", MEAN_CHILD], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"mean vector 3 - 1 over {sum(r['n_examples'])} training images of 3s and 1s: {r['seconds']:.2f} s "
        f"(target < 3 s), peak RSS {r['peak_mb']:.0f} MB, {r['peak_above_data_mb']:.0f} MB above the loaded data "
        "(target < 500 MB)"
    )


if __name__ == "__main__":
    main()
