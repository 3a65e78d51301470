"""The numbers and figures of docs/patching.md: which units carry "this is a 3 and not a 1"?

Run ``python -m hookedmlp_analysis.patching_example`` (280 s of CPU time, 11.5 minutes on the shared 2-core
machine): it prints the page's tables as Markdown and writes ``docs/figures/patching.json`` and the figures
``docs/figures/patching_{map,hooks,agreement}.{png,html}``.

1. Locate: on 1,000 pairs of training images (a 3 and a 1), the logit difference
   ``logit(3) - logit(1)``, exact activation patching of every unit of every hook point
   (corrupt run: the 1s; clean values patched in), and the attribution estimates beside it.
2. Steer: the class-mean ``3 - 1`` vector at ``layer1.post``, kept only on the ``k`` units with
   the largest patching effect; on the test set, how many 1s it turns into 3s and how much
   accuracy on the other digits it costs, against the dense vector, against the ``k`` largest
   entries of the dense vector, against the ``k`` units attribution picks, and against ``k``
   random units. The locating is repeated on ``SETS`` disjoint sets of pairs (the spread).
"""

import argparse
import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hookedmlp import HookedMLP, SteeringVector
from hookedmlp.data import load_mnist
from hookedmlp.files.atomic import atomic_write
from hookedmlp.patching import activation_patch, attribution_patch, compare
from hookedmlp_analysis.figures import attribution_scatter, patching_heatmap, patching_hooks_figure, write_figure

__all__ = ["run", "main", "PAIRS", "SETS", "KS", "HOOK"]

PAIRS, SETS, KS, HOOK, RANDOM_DRAWS = 1000, 5, (10, 25, 50, 100), "layer1.post", 20
TARGET, MAX_COEFF = 0.9, 16.0
LOCATE_HOOKS = ["layer0.pre", "layer0.post", "layer1.post", "layer2.post", "layer3.post", "layer4.post"]


def _steered(model: HookedMLP, vector: SteeringVector, test: tuple[Tensor, Tensor]) -> dict[str, float]:
    """Flip rate (test 1s read as 3) and accuracy on the test images of the other digits, with ``vector`` added."""
    images, labels = test
    with torch.no_grad(), model.steer(vector):
        predicted = model(images).argmax(-1)
    others = (labels != 1) & (labels != 3)
    return {
        "flip_rate": float((predicted[labels == 1] == 3).double().mean()),
        "accuracy_other": float((predicted[others] == labels[others]).double().mean()),
    }


def _at_target(model: HookedMLP, vector: SteeringVector, test: tuple[Tensor, Tensor]) -> Any:
    """``(coefficient, accuracy on the other digits)`` at the smallest coefficient (to 1/256) turning TARGET of the
    1s into 3s, by bisection on [0, MAX_COEFF]; None where even MAX_COEFF does not."""
    low, high = 0.0, MAX_COEFF
    if _steered(model, vector * high, test)["flip_rate"] < TARGET:
        return None
    while high - low > 1 / 256:
        middle = (low + high) / 2
        low, high = (middle, high) if _steered(model, vector * middle, test)["flip_rate"] < TARGET else (low, middle)
    return high, _steered(model, vector * high, test)["accuracy_other"]


def _evaluated(model: HookedMLP, vector: SteeringVector, test: tuple[Tensor, Tensor]) -> dict[str, float]:
    """``_steered`` at coefficient 1, and the coefficient and accuracy at TARGET flips (NaN where not reached)."""
    reached = _at_target(model, vector, test) or (float("nan"), float("nan"))
    return {**_steered(model, vector, test), "coeff_at_target": reached[0], "accuracy_at_target": reached[1]}


def _sparse(dense: Tensor, units: Tensor) -> SteeringVector:
    mask = torch.zeros_like(dense)
    mask[units] = 1
    return SteeringVector({HOOK: dense * mask}, {"label": f"3 - 1 on {len(units)} units"})


def _summary(runs: list[dict[str, float]]) -> dict[str, Any]:
    """Mean, min and max of each number over runs."""
    return {
        key: {
            "mean": statistics.fmean(r[key] for r in runs),
            "min": min(r[key] for r in runs),
            "max": max(r[key] for r in runs),
            "sd": statistics.stdev(r[key] for r in runs) if len(runs) > 1 else 0.0,
        }
        for key in runs[0]
    }


def run(out: Path) -> dict[str, Any]:
    """Every number of the page (see the module's docs); writes the figures under ``out / "figures"``."""
    torch.manual_seed(0)
    model = HookedMLP.from_pretrained("mnist-mlp").eval()
    images, labels = load_mnist("train")
    test = load_mnist("test")
    threes, ones = images[labels == 3], images[labels == 1]
    kwargs = dict(labels=(3, 1), per="unit")
    exact = activation_patch(model, threes[:PAIRS], ones[:PAIRS], "logit_diff", hooks=LOCATE_HOOKS, **kwargs)
    gradient = attribution_patch(model, threes[:PAIRS], ones[:PAIRS], "logit_diff", hooks=LOCATE_HOOKS, **kwargs)
    ig = attribution_patch(
        model, threes[:PAIRS], ones[:PAIRS], "logit_diff", hooks=LOCATE_HOOKS, method="integrated_gradients", **kwargs
    )
    figures = out / "figures"
    write_figure(patching_heatmap(exact), figures / "patching_map")
    write_figure(patching_hooks_figure(exact), figures / "patching_hooks")
    write_figure(attribution_scatter(exact, gradient), figures / "patching_agreement")
    agreement = {
        name: {h: dataclasses.asdict(compare(exact.select(h), estimate.select(h))) for h in LOCATE_HOOKS}
        | {"all": dataclasses.asdict(compare(exact, estimate))}
        for name, estimate in (("gradient", gradient), ("integrated_gradients", ig))
    }
    dense = model.steering_vector(3, 1, HOOK, method="mean")[HOOK]
    located = []
    for s in range(SETS):  # disjoint sets of pairs: the spread of the located units
        pair = (threes[s * PAIRS : (s + 1) * PAIRS], ones[s * PAIRS : (s + 1) * PAIRS])
        exact_s = activation_patch(model, *pair, "logit_diff", hooks=HOOK, **kwargs).by_hook(HOOK)
        gradient_s = attribution_patch(model, *pair, "logit_diff", hooks=HOOK, **kwargs).by_hook(HOOK)
        located.append(
            {
                "patching": exact_s.abs().argsort(descending=True),
                "attribution": gradient_s.abs().argsort(descending=True),
            }
        )
    generator = torch.Generator().manual_seed(0)
    steering: dict[str, Any] = {"dense": _evaluated(model, SteeringVector({HOOK: dense}), test)}
    for k in KS:
        row = {
            name: _summary([_evaluated(model, _sparse(dense, units[name][:k]), test) for units in located])
            for name in ("patching", "attribution")
        }
        row["largest_entries"] = _evaluated(model, _sparse(dense, dense.abs().argsort(descending=True)[:k]), test)
        draws = [torch.randperm(512, generator=generator)[:k] for _ in range(RANDOM_DRAWS)]
        row["random"] = _summary([_steered(model, _sparse(dense, units), test) for units in draws])
        row["random_reach"] = sum(_at_target(model, _sparse(dense, units), test) is not None for units in draws[:5])
        steering[str(k)] = row
    return {
        "pairs": PAIRS,
        "base": exact.base,
        "source": exact.source,
        "top": [e._asdict() for e in exact.select(["layer0.pre", "layer1.post", "layer3.post", "layer4.post"]).top(10)],
        "agreement": agreement,
        "engine": exact.engine,
        "steering": steering,
        "hook": HOOK,
        "sets": SETS,
    }


def _cell(value: Any, key: str, fmt: str = ".1%", sd: bool = False) -> str:
    """One number, or for a summary over runs its mean and range or sd (``-`` where the target was not reached)."""
    v = value[key]
    if isinstance(v, dict):
        if v["mean"] != v["mean"]:
            return "-"
        spread = f" ± {v['sd']:{fmt}}" if sd else f" ({v['min']:{fmt}} - {v['max']:{fmt}})"
        return f"{v['mean']:{fmt}}{spread}"
    return "-" if v != v else f"{v:{fmt}}"


def markdown(numbers: dict[str, Any]) -> str:
    """The page's tables."""
    lines = ["| hook point | unit | logit difference after the patch | change |", "|---|---|---|---|"]
    lines += [f"| {e['hook']} | {e['unit'][0]} | {e['value']:.2f} | {e['effect']:+.2f} |" for e in numbers["top"]]
    lines += [
        "",
        "| hook point | units | gradient: Pearson r | Spearman | top-10 | integrated gradients: Pearson r "
        "| Spearman | top-10 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for h in [*LOCATE_HOOKS, "all"]:
        g, i = numbers["agreement"]["gradient"][h], numbers["agreement"]["integrated_gradients"][h]
        lines.append(
            f"| {h} | {g['entries']} | {g['pearson']:.3f} | {g['spearman']:.3f} | {g['top_k']:.0%} | "
            f"{i['pearson']:.3f} | {i['spearman']:.3f} | {i['top_k']:.0%} |"
        )
    s = numbers["steering"]
    lines += [
        "",
        "| units kept | chosen by | 1s read as 3 (coefficient 1) | accuracy on the other digits | coefficient for 90% "
        "| accuracy on the other digits there |",
        "|---|---|---|---|---|---|",
        f"| all 512 | (the dense vector) | {_cell(s['dense'], 'flip_rate')} | {_cell(s['dense'], 'accuracy_other')} | "
        f"{_cell(s['dense'], 'coeff_at_target', '.2f')} | {_cell(s['dense'], 'accuracy_at_target')} |",
    ]
    for k in KS:
        row = s[str(k)]
        for name, label in (
            ("patching", "patching"),
            ("attribution", "attribution"),
            ("largest_entries", "largest entries"),
        ):
            r = row[name]
            lines.append(
                f"| {k} | {label} | {_cell(r, 'flip_rate')} | {_cell(r, 'accuracy_other')} | "
                f"{_cell(r, 'coeff_at_target', '.2f')} | {_cell(r, 'accuracy_at_target')} |"
            )
        r = row["random"]
        lines.append(
            f"| {k} | random ({RANDOM_DRAWS} draws) | {_cell(r, 'flip_rate', sd=True)} | "
            f"{_cell(r, 'accuracy_other', sd=True)} | "
            f"reached by {row['random_reach']} of 5 draws | |"
        )
    return "\n".join(lines)


def main(argv: Any = None) -> None:
    """``python -m hookedmlp_analysis.patching_example [--out docs]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"), help="docs directory (default: %(default)s)")
    args = parser.parse_args(argv)
    numbers = run(args.out)
    with atomic_write(args.out / "figures" / "patching.json", "w") as f:
        json.dump(numbers, f, indent=1)
    print(markdown(numbers))


if __name__ == "__main__":
    main()
