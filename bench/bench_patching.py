"""Patching benchmark (issue 19): the study's MLP, ratios measured interleaved in one run.

Run: python bench/bench_patching.py [--pairs N] [--threads N] [--rounds N] [--plain-units N]
Cases, on ``--pairs`` pairs of MNIST test images (a 3 and a 1), metric logit(3) - logit(1):
- the per-unit sweep over layer1.post (512 units): ``activation_patch`` (graph cut, units folded
  through layer2's Linear) against the plain loop of hooked forward passes
  (``plain_activation_patch``'s way: one full pass per unit, a hook swapping the unit in), on the
  first ``--plain-units`` units (default all 512), its time scaled to 512 (every pass costs the same);
- attribution patching at every hook point and unit (one forward and backward pass of the base
  run, one forward pass of the source run) against one forward pass of the pairs; also integrated
  gradients (16 steps) and the exact per-unit sweep over every hook point.
Each round times every case once, in turn; the best round of each case counts. The results of
the fast and plain sweeps are checked to agree.
"""

import argparse
import time
from collections.abc import Callable

import torch

from hookedmlp import HookedMLP
from hookedmlp.data import load_mnist
from hookedmlp.patching import activation_patch, attribution_patch, plain_activation_patch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--plain-units", type=int, default=512, help="units the plain loop runs per round")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = HookedMLP.from_pretrained("mnist-mlp").eval()
    images, labels = load_mnist("test")
    clean, corrupt = images[labels == 3][: args.pairs], images[labels == 1][: args.pairs]
    n = min(len(clean), len(corrupt))
    clean, corrupt = clean[:n], corrupt[:n]
    common = dict(labels=(3, 1), per="unit")
    units = args.plain_units

    def plain_slice() -> None:  # the same passes, for the first `units` units only
        source = model.run_with_cache(clean, names_filter="layer1.post")[1]["layer1.post"]
        for u in range(units):

            def swap(act: torch.Tensor, hook: object, u: int = u) -> torch.Tensor:
                act = act.clone()
                act[:, u] = source[:, u]
                return act

            with torch.no_grad(), model.hooks(fwd_hooks=[("layer1.post", swap)]):
                logits = model(corrupt)
            (logits[:, 3] - logits[:, 1]).mean()

    x = torch.cat([clean, corrupt])
    cases: dict[str, Callable[[], object]] = {
        "forward pass (2 x pairs images)": lambda: model(x),
        "forward pass (pairs images)": lambda: model(corrupt),
        "sweep layer1.post, fast": lambda: activation_patch(
            model, clean, corrupt, "logit_diff", hooks="layer1.post", **common
        ),
        f"sweep layer1.post, plain loop ({units} units)": plain_slice,
        "attribution, every hook point": lambda: attribution_patch(model, clean, corrupt, "logit_diff", **common),
        "integrated gradients (16 steps), every hook point": lambda: attribution_patch(
            model, clean, corrupt, "logit_diff", method="integrated_gradients", **common
        ),
        "exact sweep, every hook point": lambda: activation_patch(model, clean, corrupt, "logit_diff", **common),
    }
    best = {name: float("inf") for name in cases}
    with torch.no_grad():
        model(x)  # warm up
    for _ in range(args.rounds):
        for name, fn in cases.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    check = plain_activation_patch(model, clean[:50], corrupt[:50], "logit_diff", hooks="layer1.post", **common)
    quick = activation_patch(model, clean[:50], corrupt[:50], "logit_diff", hooks="layer1.post", **common)
    agree = float((check.values - quick.values).abs().max())
    plain_full = best[f"sweep layer1.post, plain loop ({units} units)"] * 512 / units
    forward = best["forward pass (pairs images)"]
    print(f"{n} pairs of test images (3, 1), {args.threads} thread(s), best of {args.rounds} rounds")
    for name, t in best.items():
        print(f"  {name:<52} {t * 1000:10.1f} ms  ({t / forward:7.1f} forward passes)")
    print(f"  {'plain loop scaled to 512 units':<52} {plain_full * 1000:10.1f} ms")
    speedup = plain_full / best["sweep layer1.post, fast"]
    print(f"per-unit sweep over layer1.post: {speedup:.1f}x faster than the plain loop")
    print(f"  (fast and plain agree to {agree:.2g} on 50 pairs)")
    attribution = best["attribution, every hook point"]
    both = best["forward pass (2 x pairs images)"]
    print(
        f"attribution at every hook point and unit: {attribution / forward:.1f} forward passes of the pairs "
        f"({attribution / both:.1f} of both runs)"
    )


if __name__ == "__main__":
    main()
