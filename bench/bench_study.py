"""The network-properties study's per-model cost (issue 12's benchmark), from a finished ``hookedmlp study`` cache.

Run: python bench/bench_study.py [--cache runs/study] [--seed 0]

For one model of each variant (``--seed``), in one run:

- "analysis": the study's own analysis of that model, recorded in the cache when the study ran
  it (``analysis.steerability``: every hook class and control, 90 pairs, on 1,000 test images;
  ``bench/bench_steerability.py`` compares its cost with the old selectivity's).
- "one plain grid": the 10 x 10 grid at the model's first hidden hook point, the plain way
  (``evaluate_plain``: one full hooked forward pass per cell), on the same 1,000 images, timed
  here (best of ``--rounds``).
- "plain analysis": what the old selectivity would cost the plain way, that grid's time per cell
  times its number of additions (90 pairs x 7 coefficients at every hook point).

The ratio "analysis / one plain grid" is how many plain grids one model's analysis costs.
Training time per model is in the cache too, and the study's log prints both.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from hookedmlp import HookedModel
from hookedmlp.data import load_mnist
from hookedmlp_analysis.additions import pair_additions
from hookedmlp_analysis.engine import evaluate_plain
from hookedmlp_analysis.family import TEST_PER_CLASS, VARIANTS
from hookedmlp_analysis.selectivity import COEFFS
from hookedmlp_analysis.spread import stratified_subset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="runs/study", help="the study's cache (default: runs/study)")
    parser.add_argument("--seed", type=int, default=0, help="which seed's model of each variant (default: 0)")
    parser.add_argument("--rounds", type=int, default=2, help="timed plain grids per model, best of (default: 2)")
    args = parser.parse_args()
    cache = Path(args.cache)
    images, labels = load_mnist("test")
    test = stratified_subset(images, labels, TEST_PER_CLASS)
    pairs = [(a, b) for a in range(10) for b in range(10)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(test[1])} test images; seed {args.seed}")
    print(
        f"{'variant':<14} {'hooks':>5} {'train':>7} {'analysis':>9} {'plain grid':>11} {'ratio':>6} "
        f"{'plain analysis':>15}"
    )
    totals = {"train": 0.0, "analysis": 0.0}
    for variant in VARIANTS:
        found = sorted(cache.glob(f"{variant.slug}-seed{args.seed}-*.json"))
        if not found:
            print(f"{variant.name:<14} (not in {cache})")
            continue
        result = json.loads(found[0].read_text())["result"]
        model = HookedModel.load(found[0].with_suffix(".pt")).eval()
        hook = next(h for h in model.hook_names if h.endswith("post"))
        with torch.no_grad():
            additions = pair_additions(model, [hook], pairs)
            best = float("inf")
            for _ in range(args.rounds):
                start = time.perf_counter()
                evaluate_plain(model, *test, additions)
                best = min(best, time.perf_counter() - start)
        n_additions = 90 * len(COEFFS) * len(result["hooks"])
        plain = best / len(additions) * n_additions
        totals["train"] += result["train_seconds"]
        totals["analysis"] += result["analysis_seconds"]
        print(
            f"{variant.name:<14} {len(result['hooks']):>5} {result['train_seconds']:>6.1f}s "
            f"{result['analysis_seconds']:>8.1f}s {best:>10.2f}s {result['analysis_seconds'] / best:>5.1f}x "
            f"{plain:>14.0f}s"
        )
    print(f"these models: training {totals['train']:.0f} s, analysis {totals['analysis']:.0f} s")


if __name__ == "__main__":
    main()
