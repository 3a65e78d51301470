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
  seeds; its floors are measured at its own shapes: "S seeds together matmuls only" (the batched
  products, ``bmm``, each step touching every seed's weights), "matmuls per seed" (the same
  stacked operands, but one ``mm`` per seed's slice, as the lone run calls it: the stack's
  memory without the batched kernel), "optimizer only" (one AdamW over S models' parameters).
- "elementwise only" (ReLU MLPs without norm or dropout): the step's other tensor work, bare: the
  batch's gather, the bias broadcast into each Linear's output, ReLU forward and backward, the
  bias gradients, the cross-entropy forward and backward. The last lines add the three floors and
  set them beside the measured epoch: what is left is per-op dispatch plus what the parts cost
  each other (caches) when they run in one loop.
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


def _per_seed_mm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    for s in range(len(a)):
        torch.mm(a[s], b[s], out=out[s])


def matmul_floor(
    recipe, n_train: int, n_test: int, batch_size: int, seeds: int = 0, per_seed: bool = False
) -> Callable[[], None]:
    """The epoch's matrix products of a recipe of Linear layers at its own shapes, bare (see the module docstring);
    with ``seeds``, the batched products a stack of that many seeds runs in their place (``bmm``), or with
    ``per_seed`` one ``mm`` per seed on the stack's slices."""
    layers = [m for m in build_model(recipe).modules() if isinstance(m, nn.Linear)]
    mm = (_per_seed_mm if per_seed else torch.bmm) if seeds else torch.mm
    lead = (seeds,) if seeds else ()
    steps = []
    for i, layer in enumerate(layers):
        x = torch.rand(*lead, batch_size, layer.in_features)
        g = torch.rand(*lead, batch_size, layer.out_features)
        w = torch.rand(*lead, layer.out_features, layer.in_features)
        out, grad_w, grad_x = torch.empty_like(g), torch.empty_like(w), torch.empty_like(x)
        steps.append(lambda x=x, w=w, out=out: mm(x, w.transpose(-1, -2), out=out))
        steps.append(lambda g=g, x=x, grad_w=grad_w: mm(g.transpose(-1, -2), x, out=grad_w))
        if i > 0:  # the first layer's input needs no gradient
            steps.append(lambda g=g, w=w, grad_x=grad_x: mm(g, w, out=grad_x))
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
        for _ in range(max(seeds, 1)):  # each seed is evaluated on its own
            for step in evals:
                step()

    return run


def elementwise_floor(recipe, train_x: torch.Tensor, batch_size: int, seeds: int = 0) -> Callable[[], None]:
    """The epoch's other tensor work in a ReLU MLP's step, bare: the batch's gather from the training set, each
    Linear's bias broadcast into its output, ReLU forward and backward, the bias gradients, and the cross-entropy's
    forward and backward; at the step's shapes (``seeds`` models stacked, or one), into fresh outputs as in training."""
    sizes = [m.out_features for m in build_model(recipe).modules() if isinstance(m, nn.Linear)]
    lead = (seeds,) if seeds else ()
    rows = max(seeds, 1) * batch_size
    n_steps = (len(train_x) + batch_size - 1) // batch_size
    labels = torch.randint(0, sizes[-1], (rows,))
    biases = [torch.rand(*lead, 1, d) for d in sizes]
    acts = [torch.rand(*lead, batch_size, d) - 0.5 for d in sizes]

    def run() -> None:
        order = torch.randperm(len(train_x))
        for i in range(n_steps):
            train_x.index_select(0, order[i * rows % (len(train_x) - rows) :][:rows])
            for b, a in zip(biases, acts):
                torch.empty_like(a).copy_(b.expand_as(a))  # what baddbmm and addmm do with a bias
            for a in acts[:-1]:
                h = a.clamp_min(0)
                torch.ops.aten.threshold_backward(a, h, 0)
                a.sum(-2)  # the bias gradient
            logits = acts[-1].reshape(rows, -1).requires_grad_()
            torch.nn.functional.cross_entropy(logits, labels).backward()
            acts[-1].sum(-2)

    return run


def _relu_mlp(recipe) -> bool:
    """Whether ``elementwise_floor`` describes the recipe's step: Linear layers with biases, ReLU, nothing else."""
    plain = dict(activation="relu", dropout=0.0, norm="none", bias=True)
    return isinstance(recipe, MLPConfig) and all(getattr(recipe, k) == v for k, v in plain.items())


def optimizer_floor(recipe, n_train: int, batch_size: int, seeds: int = 1) -> Callable[[], None]:
    """The epoch's fused AdamW steps on the parameters of ``seeds`` models of the recipe (random gradients), nothing
    else: one optimiser for all of them, as ``train_seeds`` steps them."""
    params = [p for _ in range(seeds) for p in build_model(recipe).parameters()]
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
    together = f" {args.seeds} seeds together"
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
        **{
            f"{name}{together} matmuls only": matmul_floor(
                RECIPES[name], len(train_y), len(test_y), settings.batch_size, args.seeds
            )
            for name in names
            if args.seeds and not isinstance(RECIPES[name], LeNetConfig)
        },
        **{
            f"{name}{together} matmuls per seed": matmul_floor(
                RECIPES[name], len(train_y), len(test_y), settings.batch_size, args.seeds, per_seed=True
            )
            for name in names
            if args.seeds and not isinstance(RECIPES[name], LeNetConfig)
        },
        **{
            f"{name}{suffix} elementwise only": elementwise_floor(RECIPES[name], train_x, settings.batch_size, seeds)
            for name in names
            for suffix, seeds in (("", 0), (together, args.seeds))
            if (seeds or not suffix) and _relu_mlp(RECIPES[name])
        },
        **{
            f"{name}{together} optimizer only": optimizer_floor(
                RECIPES[name], len(train_y), settings.batch_size, args.seeds
            )
            for name in names
            if args.seeds and isinstance(RECIPES[name], MLPConfig)
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
        f"{'recipe':<42} {'G MACs':>7} | {'wall: bound':>11} {'measured':>8} {'ratio':>6} | {'cpu: bound':>10} "
        f"{'measured':>8} {'ratio':>6}"
    )
    for name in runs:
        recipe = name
        for part in (" matmuls only", " matmuls per seed", " optimizer only", " elementwise only"):
            recipe = recipe.removesuffix(part)
        copies = args.seeds if recipe.endswith(together) else 1
        recipe = recipe.removesuffix(together)
        macs = copies * epoch_macs(RECIPES["baseline" if recipe == "before" else recipe], len(train_y), len(test_y))
        cells = []
        for clock in CLOCKS:
            bound, best = macs / rate[clock], min(s[clock] for s in seconds[name])
            cells.append(f"{bound:>10.2f}s {best:>7.2f}s {best / bound:>5.2f}x")
        print(f"{name:<42} {macs / 1e9:>7.1f} | {cells[0]} | {cells[1]}")

    def best(name: str) -> float:
        return min(s["cpu"] for s in seconds[name])

    for name in names:
        if f"{name}{together}" in runs:
            batched = best(name + together)
            print(
                f"{name}: {args.seeds} seeds together take {batched / (args.seeds * best(name)):.2f}x the CPU time of "
                f"{args.seeds} single runs"
            )
    for name in names:
        for suffix, copies in (("", 1), (together, args.seeds)):
            parts = [f"{name}{suffix} {part} only" for part in ("matmuls", "optimizer", "elementwise")]
            if f"{name}{suffix}" not in runs or not all(part in runs for part in parts):
                continue
            bound = copies * epoch_macs(RECIPES[name], len(train_y), len(test_y)) / rate["cpu"]
            floors = [best(part) / bound for part in parts]
            print(
                f"{name}{suffix}, of its bound (CPU time): matmuls {floors[0]:.2f}x + optimizer {floors[1]:.2f}x + "
                f"elementwise {floors[2]:.2f}x = {sum(floors):.2f}x bare; measured {best(name + suffix) / bound:.2f}x, "
                f"so {best(name + suffix) / bound - sum(floors):.2f}x is dispatch and the parts' cost in each other's "
                "company"
            )
    if "baseline" in names:
        print(
            "before -> now (baseline): "
            f"{min(s['wall'] for s in seconds['before']) / min(s['wall'] for s in seconds['baseline']):.2f}x "
            "faster in wall time"
        )


if __name__ == "__main__":
    main()
