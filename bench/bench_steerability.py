"""The study's per-model analysis: the new steerability measurement against the old selectivity, interleaved.

Run: python bench/bench_steerability.py [--cache runs/study] [--variants baseline LeNet] [--quick] [--rounds 1]

For one model of each variant (``--seed``; trained in ``--cache`` by ``hookedmlp study``, or, where
none is there, trained here for one epoch on 10,000 images: the analysis costs the same), in one
run, alternating:

- "old": what the study measured before, ``selectivity`` at every hook point (90 pairs x 7
  coefficients, on 1,000 test images).
- "new": ``steerability`` (hook classes, every pair traced over the coefficient range with
  bisection, the controls: logit class, two-logit bias, 3 random vectors per class, pixel
  arithmetic), on the same images.

``--quick`` uses the quick study's sizes (20 images per digit, the pairs of digits 0-2, coefficients
1 to 4). Prints seconds per model (best of ``--rounds``), their ratio, and the rows and batched
passes the new measurement ran. Timings vary with the machine's load: compare the ratios.
"""

import argparse
import time
from pathlib import Path

import torch

from hookedmlp import HookedModel
from hookedmlp.data import load_mnist
from hookedmlp.train import TrainSettings, train_model
from hookedmlp_analysis.family import STUDY_SETTINGS, TEST_PER_CLASS, VARIANTS
from hookedmlp_analysis.hook_classes import hook_classes
from hookedmlp_analysis.selectivity import COEFFS, off_diagonal_pairs, selectivity
from hookedmlp_analysis.spread import stratified_subset
from hookedmlp_analysis.steerability import SteerSettings, steerability


def model_of(variant, cache: Path, seed: int) -> tuple[HookedModel, str]:
    found = sorted(cache.glob(f"{variant.slug}-seed{seed}-*.pt"))
    if found:
        return HookedModel.load(found[0]).eval(), "cached"
    x, y = load_mnist("train")
    tx, ty = load_mnist("test")
    settings = TrainSettings(epochs=1, seed=seed, weight_decay=variant.weight_decay)
    model = train_model(variant.recipe, settings, data=(x[:10_000], y[:10_000], tx[:1000], ty[:1000]), progress=False)
    return model.model.eval(), "trained 1 epoch here"


def best_of(rounds: int, fn) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(rounds):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="runs/study", help="the study's cache (default: runs/study)")
    parser.add_argument("--seed", type=int, default=0, help="which seed's model of each variant (default: 0)")
    parser.add_argument("--variants", nargs="+", default=None, help="variant names (default: all 13)")
    parser.add_argument("--quick", action="store_true", help="the quick study's sizes")
    parser.add_argument("--rounds", type=int, default=1, help="timed runs of each, best of (default: 1)")
    args = parser.parse_args()
    variants = [v for v in VARIANTS if args.variants is None or v.name in args.variants]
    images, labels = load_mnist("test")
    test = stratified_subset(images, labels, 20 if args.quick else TEST_PER_CLASS)
    pairs = off_diagonal_pairs(range(3)) if args.quick else None
    coeffs = (1.0, 4.0) if args.quick else COEFFS
    settings = SteerSettings(c_min=min(coeffs), c_max=max(coeffs))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(test[1])} test images; {STUDY_SETTINGS}")
    print(f"{'variant':<14} {'hooks':>5} {'classes':>7} {'old':>8} {'new':>8} {'new/old':>7}  new: rows, passes")
    totals = [0.0, 0.0]
    for variant in variants:
        model, where = model_of(variant, Path(args.cache), args.seed)
        model.meta["dataset"] = "mnist"  # (as the study sets it: vectors from MNIST's training images)
        with torch.no_grad():
            old, _ = best_of(args.rounds, lambda m=model: selectivity(m, m.hook_names, coeffs, pairs=pairs, test=test))
            new, steer = best_of(args.rounds, lambda m=model: steerability(m, test, pairs=pairs, settings=settings))
        totals[0] += old
        totals[1] += new
        print(
            f"{variant.name:<14} {len(model.hook_names):>5} {len(hook_classes(model)):>7} {old:>7.1f}s {new:>7.1f}s "
            f"{new / old:>6.2f}x  {steer.engine} ({where})"
        )
    print(f"total: old {totals[0]:.0f} s, new {totals[1]:.0f} s, new/old {totals[1] / max(totals[0], 1e-9):.2f}x")


if __name__ == "__main__":
    main()
