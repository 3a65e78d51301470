"""Grids and sweeps on other networks equal the plain loop (one full hooked pass per addition) at every hook point.

Networks: a tiny MLP, a tiny LeNet-style CNN (nested Sequentials, wrapped with
``HookedMLP.from_module``), a chain of norms, pools and reshapes (eval-mode BatchNorm,
LayerNorm, Dropout, AvgPool, Unflatten, Conv1d...) and a tiny ``ResidualMLP`` (full passes).
Data: random images in 3 classes, given as ``(images, labels)`` or as a torch ``Dataset``.
Also with a batch-dependent user hook and with an open ``model.patch`` holding a batch.
"""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from hookedmlp import HookedMLP, HookedRoot, ResidualConfig, ResidualMLP
from hookedmlp_analysis.additions import all_pairs, pair_additions
from hookedmlp_analysis.engine import evaluate_additions, evaluate_plain
from hookedmlp_analysis.grid import GridResult, steering_grid
from hookedmlp_analysis.metrics import METRICS
from hookedmlp_analysis.sweep import all_pairs_sweep, coeff_sweep, layer_sweep

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is faster on a busy machine

CLASSES = 3
PAIRS = [(2, 1)]
COEFFS = [-1.0, 2.0]


def _bn(n: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(n)
    g = torch.Generator().manual_seed(5)
    bn.running_mean.copy_(torch.randn(n, generator=g))
    bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    bn.weight.data.copy_(torch.randn(n, generator=g))
    return bn


def build(name: str) -> HookedRoot:
    torch.manual_seed(0)
    if name == "mlp":
        return HookedMLP.from_module(
            nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
        ).eval()
    if name == "lenet":
        net = nn.Sequential(
            nn.Sequential(
                nn.Conv2d(1, 4, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(4, 6, 3),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ),
            nn.Sequential(nn.Flatten(), nn.Linear(24, 10), nn.ReLU(), nn.Linear(10, 3)),
        )
        return HookedMLP.from_module(net, input_shape=(1, 12, 12)).eval()
    if name == "norms":
        net = nn.Sequential(
            nn.Conv2d(1, 3, 3, padding=1),
            _bn(3),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(108, 12),
            nn.LayerNorm(12),
            nn.ReLU(),
            nn.Unflatten(1, (3, 4)),
            nn.Conv1d(3, 2, 3, padding=1),
            nn.Identity(),
            nn.AdaptiveAvgPool1d(2),
            nn.Flatten(),
            nn.Linear(4, 3),
        )
        return HookedMLP.from_module(net, input_shape=(1, 12, 12)).eval()
    return ResidualMLP(ResidualConfig(d_in=16, d_model=8, d_mlp=8, n_blocks=2, d_out=3)).eval()


NAMES = ["mlp", "lenet", "norms", "residual"]


def random_set(model: HookedRoot, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *model.input_shape, generator=g), torch.arange(n) % CLASSES


@pytest.fixture(scope="module", params=NAMES)
def net(request) -> tuple[str, HookedRoot, tuple, tuple]:
    """(name, model, exemplar data, test set): 12 labelled images to take exemplars from, 45 to score on."""
    model = build(request.param)
    return request.param, model, random_set(model, 12, 1), random_set(model, 45, 2)


def middle(model: HookedRoot) -> str:
    return model.hook_names[len(model.hook_names) // 2]


def plain_grids(model: HookedRoot, train: tuple, test: tuple, hooks: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """``{hook: {metric: [a, b]}}`` from the plain loop, one full hooked pass per cell."""
    adds = pair_additions(model, hooks, all_pairs(range(CLASSES)), data=train)
    plain = evaluate_plain(model, *test, adds)
    k = CLASSES * CLASSES
    return {
        h: {m: plain.values[m][i * k : (i + 1) * k].reshape(CLASSES, CLASSES) for m in METRICS}
        | {"distributions": plain.distributions[i * k : (i + 1) * k].reshape(CLASSES, CLASSES, CLASSES, CLASSES)}
        for i, h in enumerate(hooks)
    }


@pytest.fixture(scope="module")
def plain(net) -> dict[str, dict[str, np.ndarray]]:
    _, model, train, test = net
    return plain_grids(model, train, test, model.hook_names)


def assert_grid(grid: GridResult, ref: dict[str, np.ndarray], atol: float = 1e-4) -> None:
    assert set(grid.metrics) == set(METRICS)
    for m in METRICS:
        np.testing.assert_allclose(grid.metrics[m], ref[m], rtol=0, atol=atol, err_msg=f"{grid.hook} {m}")
    if grid.distributions is not None:
        np.testing.assert_allclose(grid.distributions, ref["distributions"], rtol=0, atol=atol)


def test_all_pairs_sweep_equals_plain_at_every_hook(net, plain) -> None:
    name, model, train, test = net
    grids = all_pairs_sweep(model, data=train, test=test, keep_distributions=True)
    assert list(grids) == model.hook_names
    for hook, grid in grids.items():
        assert grid.digits == list(range(CLASSES)) and grid.n_test == 45
        assert_grid(grid, plain[hook])
    engine = grids[model.hook_names[0]].engine
    assert "folded prefix/suffix, stacked" in engine  # the residual MLP too: its graph is captured


def test_steering_grid_equals_plain_at_every_hook(net, plain) -> None:
    _, model, train, test = net
    for hook in model.hook_names:
        assert_grid(steering_grid(model, hook, data=train, test=test), plain[hook])


def test_chunks_of_a_few_images_give_the_same_grids(net, plain) -> None:
    _, model, train, test = net
    names = model.hook_names
    for hook in (names[0], middle(model), names[-2]):
        width = int(np.prod(model.activation_shape(hook)))
        grid = steering_grid(model, hook, data=train, test=test, chunk_elements=7 * width)  # 7 images per pass
        assert_grid(grid, plain[hook])


def test_layer_sweep_equals_plain_at_every_hook(net, plain) -> None:
    _, model, train, test = net
    sweep = layer_sweep(model, 2, 1, data=train, test=test)
    assert sweep.hooks == model.hook_names
    for m in METRICS:
        np.testing.assert_allclose(
            sweep.metrics[m], [plain[h][m][2, 1] for h in sweep.hooks], rtol=0, atol=1e-4, err_msg=m
        )


def test_coeff_sweep_equals_plain_at_every_hook(net) -> None:
    _, model, train, test = net
    hooks = model.hook_names
    ref = evaluate_plain(model, *test, pair_additions(model, hooks, PAIRS, COEFFS, data=train))
    for i, hook in enumerate(hooks):
        dose = coeff_sweep(model, PAIRS, COEFFS, hook, data=train, test=test)
        cells = slice(i * len(PAIRS) * len(COEFFS), (i + 1) * len(PAIRS) * len(COEFFS))
        for m in METRICS:
            np.testing.assert_allclose(
                dose.metrics[m],
                ref.values[m][cells].reshape(len(PAIRS), len(COEFFS)),
                rtol=0,
                atol=1e-4,
                err_msg=f"{hook} {m}",
            )


def test_datasets_give_the_same_grids(net) -> None:
    _, model, train, test = net
    hook = model.hook_names[1]
    as_tuples = steering_grid(model, hook, data=train, test=test)
    as_datasets = steering_grid(model, hook, data=TensorDataset(*train), test=TensorDataset(*test))
    assert as_datasets == as_tuples


def test_plain_loop_equals_a_pytorch_forward_hook(net) -> None:
    """The reference itself: the plain loop's cell equals the network run with a PyTorch hook adding the vector."""
    name, model, train, test = net
    if name == "residual":
        points = [(h, model.hook_dict[h]) for h in model.hook_names]  # HookPoints are modules of the network itself
    else:
        points = [(f"layer{i}.post", model.layout.layers[i].module) for i in range(model.n_layers)]
    images, labels = test
    for hook, module in points:
        add = pair_additions(model, [hook], [(2, 1)], data=train)[0]
        handle = module.register_forward_hook(lambda m, i, out: out + add.vector)
        try:
            with torch.no_grad():
                logits = model(images) if name == "residual" else model.to_sequential()(images)
        finally:
            handle.remove()
        keep = labels != 1
        loss = float(torch.nn.functional.cross_entropy(logits[keep], labels[keep]))
        assert evaluate_plain(model, images, labels, [add]).values["loss"][0] == pytest.approx(loss, abs=1e-5), hook


# -- hooks attached after the steered point ------------------------------------------------------


def minus_batch_mean(act: torch.Tensor, hook) -> torch.Tensor:
    """A hook whose result depends on the whole batch: stacking vectors into one batch would change it."""
    return act - act.mean(0, keepdim=True)


def test_batch_dependent_hook_gives_the_plain_results(net, plain) -> None:
    _, model, train, test = net
    upto = model.hook_names.index(middle(model))
    before = [
        h for i, h in enumerate(model.hook_names[: upto + 1]) if i % 2 == 0 or i == upto
    ]  # up to the hooked point
    with model.hooks(fwd_hooks=[(middle(model), minus_batch_mean)]):
        grids = all_pairs_sweep(model, before, data=train, test=test, keep_distributions=True)
        ref = plain_grids(model, train, test, before)
    for hook, grid in grids.items():
        assert_grid(grid, ref[hook])
    first = grids[model.hook_names[0]]
    assert not np.allclose(first.loss, plain[model.hook_names[0]]["loss"], atol=1e-3)  # the hook does change things
    if isinstance(model, HookedMLP):
        assert "per vector on the whole set at" in first.engine and "(hooks are attached at " in first.engine


def test_open_patch_holding_a_batch_gives_the_plain_results(net) -> None:
    _, model, train, test = net
    images, labels = test
    _, cache = model.run_with_cache(random_set(model, 45, 9)[0], names_filter=middle(model))
    hooks = model.hook_names[::2]
    with model.patch(middle(model), cache):  # a batch of 45 activations: only a batch of 45 fits
        grids = all_pairs_sweep(model, hooks, data=train, test=test)
        ref = plain_grids(model, train, test, hooks)
    for hook, grid in grids.items():
        assert_grid(grid, ref[hook])
    assert not model.attached_hooks()


def test_training_mode_batch_norm_runs_per_vector() -> None:
    model = build("norms")
    train, test = random_set(model, 12, 1), random_set(model, 45, 2)
    adds = pair_additions(model, ["layer0.pre"], all_pairs(range(CLASSES)), data=train)
    model.layer1.module.train()  # normalises with the batch's statistics: not affine, and batch-dependent
    fast = evaluate_additions(model, *test, adds)
    assert (
        "per vector on the whole set at layer0.post (module layer1.module (BatchNorm2d) is in training mode)"
        in fast.engine
    )
    reference = evaluate_plain(model, *test, adds)
    for m in METRICS:
        np.testing.assert_allclose(fast.values[m], reference.values[m], rtol=0, atol=1e-4)
