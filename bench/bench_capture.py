"""The captured-graph core (issue 17): forward overhead, the graph cut's grids, and opening networks beside peers.

Run: python bench/bench_capture.py [--rounds 7] [--threads 2] [--big 10000] [--resnet-big 1000] [--grid-images 1000]
     [--resnet-images 200] [--skip-peers]

Every ratio is measured in one run, the cases of a table interleaved round by round, the best
round of each case kept (timings on a shared machine vary by +-15% and more).

1. Forward with nothing attached against the bare network, at batch 1 and at ``--big``:
   the study's MLP (``HookedMLP``, and ``capture`` of its ``nn.Sequential``), the residual MLP
   (``capture`` of a plain residual network, and ``ResidualMLP``, its hand-written twin), and
   torchvision's resnet18 on 32 x 32 inputs (``capture``; ``--resnet-big`` images for the big
   batch). Targets: at most 1.3x at batch 1 and 1.05x at the big batch.
2. The 10 x 10 grid (``steering_grid``) against the plain loop (``evaluate_plain``: 100 full
   hooked passes) on ``--grid-images`` MNIST images (resnet18: ``--resnet-images`` random 32 x 32
   ones): the residual MLP at its first hidden ``post`` hook point (target >= 2x), the MLP at
   layer0.post (its bound is 2.78x; target >= 2.6x), and resnet18 at a hook point in its third
   stage.
3. Opening a network (``capture``) and one forward pass through what is opened, beside nnsight
   (``NNsight(net)``, and a ``trace`` reading the output) and torchlens (``trace``,
   which opens and runs in one call), on the same three networks at batch 1. Peers that cannot be
   imported are left out with the reason.
"""

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch
import torchvision
from _timing import per_call
from torch import nn

from hookedmlp import HookedMLP, ResidualConfig, ResidualMLP, capture
from hookedmlp.data import load_mnist
from hookedmlp_analysis.additions import all_pairs, pair_additions
from hookedmlp_analysis.engine import evaluate_plain
from hookedmlp_analysis.grid import steering_grid


class PlainResidual(nn.Module):
    """The residual MLP written as a plain network (``x = x + block(x)``), the shape of the study's residual variant."""

    def __init__(self, d_in: int = 784, d_model: int = 256, d_mlp: int = 512, n_blocks: int = 2, d_out: int = 10):
        super().__init__()
        self.embed = nn.Linear(d_in, d_model)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, d_mlp), nn.ReLU(), nn.Linear(d_mlp, d_model))
            for _ in range(n_blocks)
        )
        self.ln_final = nn.LayerNorm(d_model)
        self.unembed = nn.Linear(d_model, d_out)

    def forward(self, x):
        h = self.embed(x.flatten(1))
        for block in self.blocks:
            h = h + block(h)
        return self.unembed(self.ln_final(h))


def best_ratios(cases: dict[str, Callable[[], Any]], inner: dict[str, int], rounds: int) -> dict[str, float]:
    """Seconds per call of each case, best over ``rounds`` interleaved rounds."""
    times: dict[str, list[float]] = {k: [] for k in cases}
    for fn in cases.values():
        fn()  # warm up: compiled programs, allocator
    for _ in range(rounds):
        for k, fn in cases.items():
            times[k].append(per_call(fn, inner[k]))
    return {k: min(v) for k, v in times.items()}


def forward_table(args: argparse.Namespace) -> None:
    print("\n## 1. Forward with nothing attached, against the bare network (best of interleaved rounds)\n")
    print(
        f"Batch 1: best of {3 * args.rounds} rounds (500 calls each; resnet18 20); the big batch: of {args.rounds}.\n"
    )
    print(f"| network | view | batch 1 | batch {args.big} (resnet18: {args.resnet_big}) |")
    print("|---|---|---|---|")
    torch.manual_seed(0)
    mlp = HookedMLP.from_pretrained("mnist-mlp").eval()
    seq = mlp.to_sequential()
    res_plain = PlainResidual().eval()
    res_hand = ResidualMLP(ResidualConfig(d_in=784, d_model=256, d_mlp=512, n_blocks=2, d_out=10)).eval()
    resnet = torchvision.models.resnet18(num_classes=10).eval()
    images = load_mnist("test")[0]
    nets = {
        "MLP": (seq, {"HookedMLP": mlp, "capture": capture(seq, (1, 28, 28))}, images.reshape(-1, 1, 28, 28)),
        "residual MLP": (res_plain, {"capture": capture(res_plain, (1, 28, 28)), "ResidualMLP": res_hand}, images),
        "resnet18 32x32": (resnet, {"capture": capture(resnet, (3, 32, 32))}, None),
    }
    for name, (bare, views, data) in nets.items():
        for batch_name in ("1", "big"):
            if data is None:  # resnet18: random 32 x 32 images
                n = 1 if batch_name == "1" else args.resnet_big
                x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
            else:
                x = data[: 1 if batch_name == "1" else args.big]
            # batch 1: enough calls per round that a round outlasts a neighbour's burst (resnet18: 10 ms a call)
            inner = (20 if data is None else 500) if batch_name == "1" else 1
            rounds = 3 * args.rounds if batch_name == "1" else args.rounds
            cases = {"bare": lambda b=bare, x=x: b(x), **{v: (lambda m=m, x=x: m(x)) for v, m in views.items()}}
            with torch.no_grad():
                t = best_ratios(cases, dict.fromkeys(cases, inner), rounds)
            for v in views:
                ratio = t[v] / t["bare"]
                row = forward_table.rows.setdefault((name, v), {})  # type: ignore[attr-defined]
                row[batch_name] = (
                    f"{ratio:.2f}x ({t['bare'] * 1e6:.0f} us bare)"
                    if batch_name == "1"
                    else (f"{ratio:.2f}x ({t['bare'] * 1e3:.0f} ms bare)")
                )
    for (name, v), row in forward_table.rows.items():  # type: ignore[attr-defined]
        print(f"| {name} | {v} | {row['1']} | {row['big']} |")


forward_table.rows = {}  # type: ignore[attr-defined]


def grid_table(args: argparse.Namespace) -> None:
    print(f"\n## 2. The 10 x 10 grid against the plain loop of 100 hooked passes, {args.grid_images} images\n")
    print("| network | hook point | plain loop | grid | speed-up | max diff (loss) | engine |")
    print("|---|---|---|---|---|---|---|")
    images, labels = load_mnist("test")
    images, labels = images[: args.grid_images], labels[: args.grid_images]
    torch.manual_seed(0)
    res = ResidualMLP(ResidualConfig(d_in=784, d_model=256, d_mlp=512, n_blocks=2, d_out=10)).eval()
    res.meta["dataset"] = "mnist"
    mlp = HookedMLP.from_pretrained("mnist-mlp").eval()
    resnet = capture(torchvision.models.resnet18(num_classes=10).eval(), (3, 32, 32))
    res_images = torch.rand(args.resnet_images, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    res_labels = torch.arange(args.resnet_images) % 10
    cases = [
        ("residual MLP", res, next(h for h in res.hook_names if h.endswith("post")), images, labels),
        ("residual MLP", res, "hook_embed", images, labels),
        ("MLP", mlp, "layer0.post", images, labels),
        ("resnet18 32x32", resnet, "layer3.0.relu", res_images, res_labels),  # (random images: speed only)
    ]
    for name, model, hook, x, y in cases:
        data = (x, y) if name != "resnet18 32x32" else (res_images, res_labels)
        adds = pair_additions(model, [hook], all_pairs(range(10)), data=data)
        with torch.no_grad():
            t = best_ratios(
                {
                    "plain": lambda m=model, x=x, y=y, a=adds: evaluate_plain(m, x, y, a),
                    "grid": lambda m=model, h=hook, x=x, y=y, d=data: steering_grid(m, h, data=d, test=(x, y)),
                },
                {"plain": 1, "grid": 1},
                max(1, args.rounds // 3),
            )
            plain = evaluate_plain(model, x, y, adds)
            grid = steering_grid(model, hook, data=data, test=(x, y))
        diff = float(abs(torch.tensor(grid.metrics["loss"]).flatten() - torch.tensor(plain.values["loss"])).max())
        print(
            f"| {name} | {hook} | {t['plain']:.2f} s | {t['grid']:.2f} s | {t['plain'] / t['grid']:.2f}x | {diff:.1e} "
            f"| {grid.engine.split(';')[0]} |"
        )


def peer_cases(net: nn.Module, shape: tuple[int, ...], have: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
    """The timed calls for one network: bare, ours (open, forward), and each peer's."""
    x = torch.rand(1, *shape)
    opened = capture(net, shape)
    cases: dict[str, Callable[[], Any]] = {
        "bare": lambda: net(x),
        "capture open": lambda: capture(net, shape),
        "capture forward": lambda: opened(x),
    }
    inner = {"bare": 50, "capture open": 1, "capture forward": 50}
    if "nnsight" in have:
        nn_model = have["nnsight"].NNsight(net)

        def nn_trace() -> Any:
            with nn_model.trace(x):
                out = nn_model.output.save()
            return out

        cases["nnsight open"], cases["nnsight trace"] = (lambda: have["nnsight"].NNsight(net)), nn_trace
        inner.update({"nnsight open": 20, "nnsight trace": 5})
    if "torchlens" in have:
        cases["torchlens"] = lambda: have["torchlens"].trace(net, x)
        inner["torchlens"] = 1
    return cases, inner


def peers_table(args: argparse.Namespace) -> None:
    print("\n## 3. Opening a network, and one forward pass through it at batch 1, beside nnsight and torchlens\n")
    have: dict[str, Any] = {}
    for name in ("nnsight", "torchlens"):
        try:
            have[name] = __import__(name)
        except Exception as e:  # a peer that does not import is reported, not fatal
            print(f"- {name}: left out ({type(e).__name__}: {e})")
    torch.manual_seed(0)
    nets = {
        "MLP": (HookedMLP.from_pretrained("mnist-mlp").to_sequential().eval(), (1, 28, 28)),
        "residual MLP": (PlainResidual().eval(), (1, 28, 28)),
        "resnet18 32x32": (torchvision.models.resnet18(num_classes=10).eval(), (3, 32, 32)),
    }
    print("| network | bare forward | capture: open, forward | nnsight: open, trace | torchlens: open + run |")
    print("|---|---|---|---|---|")
    for name, (net, shape) in nets.items():
        cases, inner = peer_cases(net, shape, have)
        with torch.no_grad():
            t = best_ratios(cases, inner, max(1, args.rounds // 2))
        bare = t["bare"]
        ours = f"{t['capture open'] * 1e3:.0f} ms, {t['capture forward'] / bare:.2f}x"
        nnsight = f"{t['nnsight open'] * 1e3:.1f} ms, {t['nnsight trace'] / bare:.1f}x" if "nnsight open" in t else "-"
        lens = f"{t['torchlens'] * 1e3:.0f} ms ({t['torchlens'] / bare:.0f}x a forward)" if "torchlens" in t else "-"
        print(f"| {name} | {bare * 1e6:.0f} us | {ours} | {nnsight} | {lens} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--big", type=int, default=10_000)
    parser.add_argument("--resnet-big", type=int, default=1_000)
    parser.add_argument("--grid-images", type=int, default=1_000)
    parser.add_argument("--resnet-images", type=int, default=200)
    parser.add_argument("--skip-peers", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d %H:%M')}")
    forward_table(args)
    grid_table(args)
    if not args.skip_peers:
        peers_table(args)


if __name__ == "__main__":
    main()
