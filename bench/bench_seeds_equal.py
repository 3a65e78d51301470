"""Seeds trained together against the same seeds trained alone, for every variant of the study, at full size.

Run: python bench/bench_seeds_equal.py [--images N] [--epochs E] [--threads T]

Each of the study's 13 variants (its recipe and weight decay, the study's optimiser settings)
is trained with seeds 0, 1 and 2 together (``train_seeds``) and each seed alone
(``train_model``) on the first N MNIST training images, then the weights are compared: bit for
bit, and the largest absolute difference of any weight. At ``--threads 1`` (the default, and
``TrainSettings``' default) they are the same bits; at more threads the lone runs split their
matrix products by thread and the two differ, which is what this prints then.
"""

import argparse
import dataclasses

import torch

from hookedmlp.data import load_mnist
from hookedmlp.train import train_model
from hookedmlp.train_seeds import train_seeds
from hookedmlp_analysis.family import STUDY_SETTINGS, VARIANTS

SEEDS = (0, 1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="training images (default: 2000)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs (default: 1)")
    parser.add_argument("--threads", type=int, default=1, help="TrainSettings.threads (default: 1)")
    args = parser.parse_args()
    train_x, train_y = load_mnist("train")
    test_x, test_y = load_mnist("test")
    data = (train_x[: args.images], train_y[: args.images], test_x[:500], test_y[:500])
    print(
        f"torch {torch.__version__}, threads {args.threads}; {args.images} training images, {args.epochs} epoch(s), "
        f"seeds {list(SEEDS)}"
    )
    print("| variant | same bits | largest weight difference |")
    print("|---|---|---|")
    for variant in VARIANTS:
        settings = dataclasses.replace(
            STUDY_SETTINGS, epochs=args.epochs, weight_decay=variant.weight_decay, threads=args.threads
        )
        together = train_seeds(variant.recipe, settings, SEEDS, data=data, progress=False)
        alone = [
            train_model(variant.recipe, dataclasses.replace(settings, seed=s), data=data, progress=False) for s in SEEDS
        ]
        diffs = [
            max((a.model.state_dict()[k] - t.model.state_dict()[k]).abs().max().item() for k in a.model.state_dict())
            for a, t in zip(alone, together)
        ]
        print(f"| {variant.name} | {'yes' if max(diffs) == 0 else 'no'} | {max(diffs):.3g} |")


if __name__ == "__main__":
    main()
