"""Grid benchmark (issue 9): the study's MLP and a LeNet-style CNN, ratios measured interleaved in one run.

Run: python bench/bench_grid.py [--nets mlp,cnn] [--threads N] [--rounds N] [--cnn-images N] [--cpu-time]
For each network:
- forward with no hooks, HookedMLP vs the bare network (``model.to_sequential()``, the same
  modules), at batch 1 and 10,000 (targets <= 1.3x and <= 1.05x);
- the 10 x 10 grid at layer0.post (``steering_grid``) vs the plain loop (``evaluate_plain``:
  100 full hooked forward passes), on the same test images (targets: >= 2.7x on the MLP, over
  all 10,000 test images; >= 2x on the CNN, over the first ``--cnn-images``);
- the all-pairs grid at every hook point (``all_pairs_sweep``, one evaluation) vs the one grid;
- for the MLP, the grid vs its FLOP bound (the suffix's multiply-adds for the 90 non-zero
  vectors at the best sgemm rate measured in the same run).
The CNN is ``HookedMLP(LeNetConfig())`` (fresh seeded weights: speed does not depend on them).
Each round times every case once, in turn; the best round of each case counts.
"""

import argparse
import math
import time
from collections.abc import Callable

import torch
from torch import nn

from hookedmlp import HookedMLP, LeNetConfig
from hookedmlp.data import load_mnist
from hookedmlp_analysis.additions import all_pairs, pair_additions
from hookedmlp_analysis.engine import evaluate_plain
from hookedmlp_analysis.grid import steering_grid
from hookedmlp_analysis.sweep import all_pairs_sweep

CLOCK = [time.perf_counter]


def _time(fn: Callable[[], object], inner: int = 1) -> float:
    t = CLOCK[0]()
    for _ in range(inner):
        fn()
    return (CLOCK[0]() - t) / inner


def matmul_rate(n: int = 10_000, k: int = 512, m: int = 512) -> float:
    """Multiply-adds per second of the sgemm kernel alone (preallocated output), best of 5."""
    a, b, out = torch.rand(n, k), torch.rand(k, m), torch.empty(n, m)
    torch.mm(a, b, out=out)
    return n * k * m / min(_time(lambda: torch.mm(a, b, out=out)) for _ in range(5))


def network(name: str) -> HookedMLP:
    if name == "mlp":
        model = HookedMLP.from_pretrained("mnist-mlp")
    else:
        torch.manual_seed(0)
        model = HookedMLP(LeNetConfig())
        model.meta["dataset"] = "mnist"  # exemplars come from MNIST's training set, as for the MLP
    return model.eval()


def cases(model: HookedMLP, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The timed cases of one network: name -> a call."""
    bare = model.to_sequential()
    shaped = images.reshape(len(images), *model.input_shape)  # what the bare network takes
    one, batch = shaped[:1], load_mnist("test")[0][:10_000].reshape(-1, *model.input_shape)
    adds = pair_additions(model, ["layer0.post"], all_pairs(range(10)))
    return {
        "bare, batch 1": lambda: [bare(one) for _ in range(200)],
        "hooked, batch 1": lambda: [model(one) for _ in range(200)],
        "bare, batch 10000": lambda: bare(batch),
        "hooked, batch 10000": lambda: model(batch),
        "grid": lambda: steering_grid(model, "layer0.post", test=(images, labels)),
        "plain loop": lambda: evaluate_plain(model, images, labels, adds),
        "all pairs x all hooks": lambda: all_pairs_sweep(model, test=(images, labels)),
    }


def suffix_macs(model: HookedMLP, first: int) -> int:
    """Multiply-adds per image of the Linear layers from module ``first`` on."""
    return sum(
        layer.module.in_features * layer.module.out_features
        for layer in model.layout.layers[first:]
        if isinstance(layer.module, nn.Linear)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="mlp,cnn", help="comma-separated: mlp, cnn")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cnn-images", type=int, default=2000, help="test images the CNN's grid is scored on")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with the process's CPU time (with --threads 1: robust to other processes' load)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time:
        CLOCK[0] = time.process_time
    images, labels = load_mnist("test")
    nets = args.nets.split(",")
    setups = {}
    for name in nets:
        model = network(name)
        n = 10_000 if name == "mlp" else args.cnn_images
        setups[name] = (model, n, cases(model, images[:n], labels[:n]))
    best: dict[tuple[str, str], float] = {}
    rates = []
    with torch.no_grad():
        for _, _, calls in setups.values():  # warm-up
            for case, fn in calls.items():
                if "batch" in case:
                    fn()
        for _ in range(args.rounds):
            rates.append(matmul_rate())
            for name, (_, _, calls) in setups.items():
                for case, fn in calls.items():
                    t = _time(fn) / (200 if case.endswith("batch 1") else 1)
                    best[name, case] = min(best.get((name, case), math.inf), t)
    rate = max(rates)
    clock = "CPU time" if args.cpu_time else "wall time"
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, {clock}, best of {args.rounds} interleaved "
        f"rounds, sgemm rate {rate / 1e9:.1f} G multiply-adds/s"
    )
    for name, (model, n, _) in setups.items():
        b = lambda case, name=name: best[name, case]
        print(f"{name}: {type(model.layer0.module).__name__} first, {model.n_layers} modules")
        for batch, target in (("1", 1.3), ("10000", 1.05)):
            ratio = b(f"hooked, batch {batch}") / b(f"bare, batch {batch}")
            print(
                f"  forward, no hooks, batch {batch}: hooked {b(f'hooked, batch {batch}') * 1e3:.3f} ms, bare "
                f"{b(f'bare, batch {batch}') * 1e3:.3f} ms -> {ratio:.3f}x (target <= {target}x)"
            )
        target = 2.7 if name == "mlp" else 2.0
        print(
            f"  10 x 10 grid at layer0.post over {n} test images: ours {b('grid'):.2f} s, plain loop "
            f"{b('plain loop'):.2f} s -> {b('plain loop') / b('grid'):.2f}x faster (target >= {target}x)"
        )
        print(
            f"  all pairs x all {len(model.hook_names)} hook points: {b('all pairs x all hooks'):.2f} s -> "
            f"{b('all pairs x all hooks') / b('grid'):.2f}x the layer0.post grid"
        )
        if name == "mlp":
            macs = suffix_macs(model, 1)
            bound = 90 * n * macs / rate
            print(
                f"  FLOP bound {bound:.2f} s (90 vectors x {n} images x {macs} multiply-adds): ours is "
                f"{b('grid') / bound:.2f}x the bound; at most {100 * suffix_macs(model, 0) / (90 * macs):.2f}x "
                "faster than the plain loop by arithmetic"
            )


if __name__ == "__main__":
    main()
