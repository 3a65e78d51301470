"""Peak memory of caching and of streaming steering vectors (issue 6), each case in a fresh process.

Run: python bench/bench_memory.py [--case NAME]

Every case runs in its own subprocess: it loads the shipped model and the 60,000 MNIST
training images (float32, 188 MB), records the resident set size (VmRSS) as the
baseline, resets the kernel's high-water mark (``echo 5 > /proc/self/clear_refs``),
runs the case once and reads the peak two ways: ``VmHWM`` from ``/proc/self/status``
(the peak since the reset) and ``resource.getrusage().ru_maxrss`` (the peak of the whole
process, loading included; it cannot be reset). "above data" is VmHWM minus the
baseline.

Cases:
  forward             model(all 60k images) under no_grad: the forward pass's own transient memory, for reference
  cache-all           run_with_cache(all 60k images, device="cpu") of every hook point, in one call, under no_grad
  cache-all-grad      the same with autograd on (the default when a user forgets no_grad)
  cache-layer0.post   run_with_cache(..., names_filter="layer0.post"), under no_grad
  steer-mean          model.steering_vector(3, 1, "layer0.post", method="mean") (streams in batches of 10,000)

"cache" is what the returned ActivationCache holds (distinct storages). Entries are the
pass's own tensors, not copies: layer{i}.post and layer{i+1}.pre are one tensor, and
layer0.pre is the caller's input batch itself. Theory for all points: the 6 distinct
activations, 60,000 x (784 + 4 x 512 + 10) float32 = 650 MiB, of which the input's 179 MiB
is the loaded data (so at most 471 MiB above it); for layer0.post: 60,000 x 512 float32 = 117 MiB.
"""

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import torch
from hookedmlp import HookedMLP
from hookedmlp.data import load_mnist

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB -> MB
    return float("nan")

case = sys.argv[1]
torch.set_num_threads(int(sys.argv[2]))
model = HookedMLP.from_pretrained("mnist-mlp").eval()
images, labels = load_mnist("train")
baseline = status("VmRSS")
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    reset = True
except OSError:
    reset = False
t = time.perf_counter()
cache_mb, out = 0.0, None
if case == "forward":
    with torch.no_grad():
        out = model(images)
    n_entries = 0
elif case.startswith("cache"):
    grad = torch.enable_grad() if case == "cache-all-grad" else torch.no_grad()
    names = "layer0.post" if case == "cache-layer0.post" else None
    with grad:
        out, cache = model.run_with_cache(images, names_filter=names, device="cpu")
    storages = {v.untyped_storage().data_ptr(): v.untyped_storage().nbytes() for v in cache.values()}
    cache_mb = sum(storages.values()) / 2**20
    n_entries = len(cache)
elif case == "steer-mean":
    v = model.steering_vector(3, 1, "layer0.post", method="mean")
    n_entries = len(v)
else:
    raise SystemExit(f"unknown case {case}")
seconds = time.perf_counter() - t
print(json.dumps({"case": case, "seconds": seconds, "baseline_mb": baseline, "hwm_mb": status("VmHWM"),
                  "rss_after_mb": status("VmRSS"),
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "hwm_reset": reset, "cache_mb": cache_mb, "entries": n_entries,
                  "data_mb": images.untyped_storage().nbytes() / 2**20}))
"""

MB = 2**20  # "MB" below is MiB
N = 60_000
THEORY = {
    "forward": 0.0,
    "cache-all": N * (784 + 4 * 512 + 10) * 4 / MB,
    "cache-all-grad": N * (784 + 4 * 512 + 10) * 4 / MB,
    "cache-layer0.post": N * 512 * 4 / MB,
    "steer-mean": 0.0,
}
CASES = list(THEORY)


def run_case(case: str, threads: int) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, case, str(threads)], capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0:
        raise SystemExit(f"case {case} failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=CASES, action="append", help="run only this case (repeatable)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in each child (default: %(default)s)")
    args = parser.parse_args()
    rows = [run_case(case, args.threads) for case in (args.case or CASES)]
    import torch

    print(f"torch {torch.__version__}, {args.threads} threads, one fresh process per case; MB = 2**20 bytes")
    print(
        f"loaded data: 60,000 x 784 float32 images = {rows[0]['data_mb']:.0f} MB (+ the model and torch itself: the "
        "baseline)"
    )
    head = (
        f"{'case':<19}{'entries':>8}{'theory':>9}{'cache':>9}{'baseline':>10}{'peak':>9}{'above data':>12}"
        f"{'peak/cache':>11}{'ru_maxrss':>11}{'seconds':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        above = r["hwm_mb"] - r["baseline_mb"]
        ratio = f"{above / r['cache_mb']:.2f}" if r["cache_mb"] else "-"
        theory = f"{THEORY[r['case']]:.0f}" if THEORY[r["case"]] else "-"
        print(
            f"{r['case']:<19}{r['entries']:>8}{theory:>9}{r['cache_mb']:>9.0f}{r['baseline_mb']:>10.0f}{r['hwm_mb']:>9.0f}"
            f"{above:>12.0f}{ratio:>11}{r['maxrss_mb']:>11.0f}{r['seconds']:>9.2f}"
        )
    if not all(r["hwm_reset"] for r in rows):
        print("note: /proc/self/clear_refs could not reset VmHWM; 'peak' then includes loading")
    print(
        "columns: theory/cache = what the cache should hold / holds (distinct storages); baseline = VmRSS after "
        "loading model and data; peak = VmHWM during the case; above data = peak - baseline; ru_maxrss = the process's "
        "lifetime peak"
    )


if __name__ == "__main__":
    main()
