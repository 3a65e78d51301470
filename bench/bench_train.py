"""Training benchmark (issue 12, point 3): each recipe's epoch against the FLOP bound of that epoch, in one run.

Run: python bench/bench_train.py [--threads N] [--recipes baseline,lenet,...] [--rounds R] [--seeds S]

- The bound: the epoch's matrix multiply-adds (Linear and Conv2d layers, counted from the
  architecture on a probe pass: forward, plus the backward's gradients of the inputs and of
  the weights; the first layer's input needs no gradient; plus the end-of-epoch evaluation
  on the 10,000 test images) over the sgemm burst rate measured in the same run: a large
  [4096, 1024] x [1024, 1024] float32 matmul into a preallocated output, best of 10.
- The measured time: ``train_model`` for one epoch on MNIST held in memory (as ``hookedmlp
  train`` runs it, minus loading the data), best of the rounds.
- Rounds interleave the rate and every recipe, so that a slow spell of the machine hits all
  alike; the ratio is measured / bound (target <= 1.3x). Both clocks are reported: wall time,
  and the process's CPU time (both threads), which other processes on a shared machine do
  not inflate.
- "matmuls only" (recipes of Linear layers: all but LeNet): the epoch's own matrix products at
  its shapes (batch 128: the forward product, the input gradient and the weight gradient of
  every Linear, then the evaluation's forwards), run bare with preallocated outputs and
  nothing else. Small matrices run below the burst rate, so this is the floor any training
  loop of this recipe can reach on this machine; its ratio to the bound shows how much of the
  target the shapes alone use up. "optimizer only": the epoch's fused AdamW steps on the
  recipe's parameters, nothing else. The two floors added are a lower bound on the epoch.
- "S seeds together" (issue 20): ``train_seeds`` training S seeds of the recipe as one stacked
  network for one epoch; its bound is S times the recipe's, so its ratio sits beside the single
  model's, measured in the same rounds. Batching shares each step's per-op dispatch among the
  seeds; the matrix products keep their per-seed shapes, so the "matmuls only" floor still holds.
- "before": the redesign's loop for the baseline (hook points in every training step,
  AdamW's default per-tensor update), to show what training the bare modules with the fused
  AdamW saved.
"""

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from hookedmlp import LeNetConfig, MLPConfig, ResidualConfig
from hookedmlp.data import load_mnist
from hookedmlp.train import TrainSettings, build_model, evaluate, train_model
from hookedmlp.train_seeds import train_seeds

RECIPES = {
    "baseline": MLPConfig(),  # the study's 784-512-512-10
    "1-layer": MLPConfig(d_hidden=(512,)),
    "4-layers": MLPConfig(d_hidden=(512, 512, 512, 512)),
    "width-64": MLPConfig(d_hidden=(64, 64)),
    "width-2048": MLPConfig(d_hidden=(2048, 2048)),
    "gelu": MLPConfig(activation="gelu"),
    "dropout": MLPConfig(dropout=0.2),
    "layernorm": MLPConfig(norm="layernorm"),
    "residual": ResidualConfig(),
    "lenet": LeNetConfig(),
}


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def sgemm_rate(repeats: int = 10) -> dict[str, float]:
    """Multiply-adds per second (of each clock) of the sgemm kernel at a size where it runs at its burst rate."""
    a, b, out = torch.rand(4096, 1024), torch.rand(1024, 1024), torch.empty(4096, 1024)
    torch.mm(a, b, out=out)
    times = [_time(lambda: torch.mm(a, b, out=out)) for _ in range(repeats)]
    return {clock: 4096 * 1024 * 1024 / min(t[clock] for t in times) for clock in CLOCKS}


def _time(fn) -> dict[str, float]:
    start = {name: clock() for name, clock in CLOCKS.items()}
    fn()
    return {name: clock() - start[name] for name, clock in CLOCKS.items()}


def before_epoch(data: tuple, settings: TrainSettings) -> None:
    """The redesign's loop: the hooked model in every step and AdamW's default (per-tensor) update."""
    train_x, train_y, test_x, test_y = data
    torch.manual_seed(settings.seed)
    model = build_model(MLPConfig())
    gen = torch.Generator().manual_seed(settings.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=(len(train_x) + 127) // 128)
    model.train()
    order = torch.randperm(len(train_x), generator=gen)
    for i in range(0, len(train_x), settings.batch_size):
        idx = order[i : i + settings.batch_size]
        loss = torch.nn.functional.cross_entropy(model(train_x[idx]), train_y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    evaluate(model, test_x, test_y)


def matmul_floor(recipe, n_train: int, n_test: int, batch_size: int) -> Callable[[], None]:
    """The epoch's matrix products of a recipe of Linear layers at its own shapes, bare (see the module docstring)."""
    layers = [m for m in build_model(recipe).modules() if isinstance(m, nn.Linear)]
    steps = []
    for i, layer in enumerate(layers):
        x = torch.rand(batch_size, layer.in_features)
        g = torch.rand(batch_size, layer.out_features)
        w = layer.weight.detach().clone()
        out, grad_w, grad_x = torch.empty_like(g), torch.empty_like(w), torch.empty_like(x)
        steps.append(lambda x=x, w=w, out=out: torch.mm(x, w.T, out=out))
        steps.append(lambda g=g, x=x, grad_w=grad_w: torch.mm(g.T, x, out=grad_w))
        if i > 0:  # the first layer's input needs no gradient
            steps.append(lambda g=g, w=w, grad_x=grad_x: torch.mm(g, w, out=grad_x))
    evals = []
    for layer in layers:
        x, w = torch.rand(n_test, layer.in_features), layer.weight.detach().clone()
        out = torch.empty(n_test, layer.out_features)
        evals.append(lambda x=x, w=w, out=out: torch.mm(x, w.T, out=out))
    n_steps = (n_train + batch_size - 1) // batch_size

    def run() -> None:
        for _ in range(n_steps):
            for step in steps:
                step()
        for step in evals:
            step()

    return run


def optimizer_floor(recipe, n_train: int, batch_size: int) -> Callable[[], None]:
    """The epoch's fused AdamW steps on the recipe's parameters (random gradients), nothing else."""
    params = list(build_model(recipe).parameters())
    for p in params:
        p.grad = torch.rand_like(p)
    opt = torch.optim.AdamW(params, lr=1e-3, fused=True)
    n_steps = (n_train + batch_size - 1) // batch_size

    def run() -> None:
        for _ in range(n_steps):
            opt.step()

    return run


def forward_macs(model: nn.Module, input_shape: tuple[int, ...]) -> list[int]:
    """Multiply-adds per example of each Linear and Conv2d, in forward order (a probe pass with hooks)."""
    macs: list[int] = []

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        per_example = output[0].numel()
        if isinstance(module, nn.Linear):
            macs.append(per_example * module.in_features)
        else:
            macs.append(
                per_example * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            )

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
    return macs


def epoch_macs(recipe, n_train: int, n_test: int) -> int:
    """Forward + input gradients (all layers but the first) + weight gradients, per training image; plus evaluation."""
    model = build_model(recipe)
    layers = forward_macs(model, tuple(model.input_shape))
    train = 3 * sum(layers) - layers[0]
    return n_train * train + n_test * sum(layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated names (default: all)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds, best of each (default: 3)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds trained together (default: 3; 0: skip)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.recipes.split(",")
    train_x, train_y = load_mnist("train")
    test_x, test_y = load_mnist("test")
    data = (train_x, train_y, test_x, test_y)
    settings = TrainSettings(epochs=1, threads=torch.get_num_threads())  # train as the bound is measured
    runs = {
        **{name: (lambda name=name: train_model(RECIPES[name], settings, data=data, progress=False)) for name in names},
        **{
            f"{name} {args.seeds} seeds together": (
                lambda name=name: train_seeds(RECIPES[name], settings, range(args.seeds), data=data, progress=False)
            )
            for name in names
            if args.seeds
        },
        "before": lambda: before_epoch(data, settings),
        **{
            f"{name} matmuls only": matmul_floor(RECIPES[name], len(train_y), len(test_y), settings.batch_size)
            for name in names
            if not isinstance(RECIPES[name], LeNetConfig)  # Linear layers only
        },
        **{
            f"{name} optimizer only": optimizer_floor(RECIPES[name], len(train_y), settings.batch_size)
            for name in names
            if isinstance(RECIPES[name], MLPConfig)
        },
    }
    rates, seconds = [], {name: [] for name in runs}
    for _ in range(args.rounds):
        rates.append(sgemm_rate())
        for name, run in runs.items():
            seconds[name].append(_time(run))
    rate = {clock: max(r[clock] for r in rates) for clock in CLOCKS}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; sgemm burst rate {rate['wall'] / 1e9:.1f} G "
        f"multiply-adds per wall second, {rate['cpu'] / 1e9:.1f} per CPU second; one epoch = {len(train_y):,} training "
        f"images, batch {settings.batch_size}, then {len(test_y):,} test images; best of {args.rounds} interleaved "
        "rounds"
    )
    print(
        f"{'recipe':<28} {'G MACs':>7} | {'wall: bound':>11} {'measured':>8} {'ratio':>6} | {'cpu: bound':>10} "
        f"{'measured':>8} {'ratio':>6}"
    )
    together = f" {args.seeds} seeds together"
    for name in runs:
        recipe = name.removesuffix(" matmuls only").removesuffix(" optimizer only").removesuffix(together)
        copies = args.seeds if name.endswith(together) else 1
        macs = copies * epoch_macs(RECIPES["baseline" if recipe == "before" else recipe], len(train_y), len(test_y))
        cells = []
        for clock in CLOCKS:
            bound, best = macs / rate[clock], min(s[clock] for s in seconds[name])
            cells.append(f"{bound:>10.2f}s {best:>7.2f}s {best / bound:>5.2f}x")
        print(f"{name:<28} {macs / 1e9:>7.1f} | {cells[0]} | {cells[1]}")
    for name in names:
        if f"{name}{together}" in runs:
            alone = args.seeds * min(s["cpu"] for s in seconds[name])
            batched = min(s["cpu"] for s in seconds[name + together])
            print(
                f"{name}: {args.seeds} seeds together take {batched / alone:.2f}x the CPU time of "
                f"{args.seeds} single runs"
            )
    if "baseline" in names:
        print(
            "before -> now (baseline): "
            f"{min(s['wall'] for s in seconds['before']) / min(s['wall'] for s in seconds['baseline']):.2f}x "
            "faster in wall time"
        )


if __name__ == "__main__":
    main()
