"""Attribution patching: the gradient cache on every network kind, the estimate against autograd by hand,
exactness on linear networks, integrated gradients, and the agreement with the exact sweep."""

import pytest
import torch
from test_patching import NETS, build, diff01, inputs
from torch import nn
from zoo import KINDS, OUTPUTS

from hookedmlp import HookedMLP, UsageError, capture
from hookedmlp.patching import PER, activation_patch, attribution_patch, compare
from hookedmlp.patching.result import PatchResult

pytestmark = pytest.mark.usefixtures("one_thread")

SLOW = ("resnet18", "mobilenet")  # checked once by hand (every hook point has its gradient); 5-15 s each here


def _outputs(model, x):
    """Every hook point's activation in one pass, kept in the autograd graph by plain PyTorch forward hooks."""
    seen, handles = {}, []
    for name, point in model.hook_dict.items():
        handles.append(point.register_forward_hook(lambda m, i, o, name=name: seen.setdefault(name, o)))
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    return out, seen


def _check_gradient_cache(model, x, loss_fn) -> None:
    _, cache = model.run_with_cache(x, incl_bwd=True, loss_fn=loss_fn)
    out, seen = _outputs(model, x.clone().requires_grad_(True))
    used = {n: t for n, t in seen.items() if t.requires_grad}
    grads = torch.autograd.grad(loss_fn(out), list(used.values()), allow_unused=True)
    expected = {n: g for n, g in zip(used, grads) if g is not None}
    assert set(expected) == {n[: -len("_grad")] for n in cache if n.endswith("_grad")}
    for name, g in expected.items():
        torch.testing.assert_close(cache[f"{name}_grad"], g, rtol=1e-5, atol=1e-6)
    assert {n for n in model.hook_names if n not in expected} <= {"aux"}  # TupleOut's aux: the loss ignores it


@pytest.mark.parametrize("name", NETS)
def test_the_gradient_cache_holds_every_hook_points_gradient(name) -> None:
    model = build(name)
    x, _ = inputs(model)
    _check_gradient_cache(model, x, lambda out: (out**2).mean())


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in SLOW])
def test_the_gradient_cache_fills_on_every_captured_kind(kind) -> None:
    make, shape = KINDS[kind]
    model = capture(make(), input_shape=shape, output=OUTPUTS.get(kind))
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(0))
    _check_gradient_cache(model, x, lambda out: (model.select_output(out) ** 2).mean())


def _by_hand(model, base, source, hook, per, metric) -> torch.Tensor:
    """``(source - base) * d metric / d base``, from autograd on a pass with a leaf swapped in at ``hook``."""
    _, seen = _outputs(model, source)
    src = seen[hook].detach()
    _, seen = _outputs(model, base)
    leaf = seen[hook].detach().requires_grad_(True)
    handle = model.hook_dict[hook].register_forward_hook(lambda m, i, o: leaf)
    try:
        (grad,) = torch.autograd.grad(metric(model(base)), leaf)
    finally:
        handle.remove()
    product = (src - leaf.detach()) * grad
    if per == "hook":
        return product.sum().reshape(1)
    if per == "unit":
        return product.sum(0).reshape(product.shape[1], -1).sum(1)
    return product.sum((0, 1)).reshape(-1) if product.ndim > 2 else product.sum().reshape(1)


@pytest.mark.parametrize("per", PER)
@pytest.mark.parametrize("direction", ["denoise", "noise"])
@pytest.mark.parametrize("name", NETS)
def test_attribution_is_the_activation_difference_times_the_gradient(name, per, direction) -> None:
    model = build(name)
    clean, corrupt = inputs(model)
    result = attribution_patch(model, clean, corrupt, diff01, per=per, direction=direction)
    base, source = (corrupt, clean) if direction == "denoise" else (clean, corrupt)
    expected = torch.cat([_by_hand(model, base, source, h, per, diff01) for h in model.hook_names]).double()
    torch.testing.assert_close(result.effect, expected, rtol=1e-4, atol=1e-5)
    assert result.kind == "attribution" and result.hooks == model.hook_names


def _linear(conv: bool) -> HookedMLP:
    torch.manual_seed(1)
    if conv:
        net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(48, 3))
        return HookedMLP.from_module(net, input_shape=(1, 8, 8)).eval()
    return HookedMLP.from_module(nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 8), nn.Linear(8, 3))).eval()


@pytest.mark.parametrize("conv", [False, True], ids=["mlp", "cnn"])
@pytest.mark.parametrize("per", PER)
def test_on_a_linear_network_attribution_is_exact(conv, per) -> None:
    model = _linear(conv)
    clean, corrupt = inputs(model)
    exact = activation_patch(model, clean, corrupt, "logit_diff", labels=(0, 2), per=per)
    estimate = attribution_patch(model, clean, corrupt, "logit_diff", labels=(0, 2), per=per)
    torch.testing.assert_close(estimate.values, exact.values, rtol=1e-5, atol=1e-5)


def test_integrated_gradients_add_up_to_the_whole_hook_points_effect() -> None:
    """Completeness: per hook point, the path integral of the gradient is the exact effect (less the sum's error)."""
    model = build("mlp")
    clean, corrupt = inputs(model)
    exact = activation_patch(model, clean, corrupt, diff01)
    first = attribution_patch(model, clean, corrupt, diff01)
    ig = attribution_patch(model, clean, corrupt, diff01, method="integrated_gradients", steps=256)
    error = (ig.effect - exact.effect).abs().max()
    assert error < 1e-3 * exact.effect.abs().max() < (first.effect - exact.effect).abs().max()
    units = attribution_patch(model, clean, corrupt, diff01, method="integrated_gradients", steps=256, per="unit")
    sums = torch.stack([units.by_hook(h).sum() for h in model.hook_names])
    torch.testing.assert_close(sums, ig.effect, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["mlp", "cnn", "branchy"])
def test_integrated_gradients_are_the_mean_gradient_along_the_path(name) -> None:
    model = build(name)
    clean, corrupt = inputs(model)
    hook = model.hook_names[len(model.hook_names) // 2]
    steps = 4
    result = attribution_patch(model, clean, corrupt, diff01, hooks=hook, method="integrated_gradients", steps=steps)
    _, seen = _outputs(model, clean)
    src = seen[hook].detach()
    _, seen = _outputs(model, corrupt)
    base = seen[hook].detach()
    total = torch.zeros_like(base)
    for j in range(steps):
        leaf = (base + (j + 0.5) / steps * (src - base)).requires_grad_(True)
        handle = model.hook_dict[hook].register_forward_hook(lambda m, i, o, leaf=leaf: leaf)
        try:
            total += torch.autograd.grad(diff01(model(corrupt)), leaf)[0]
        finally:
            handle.remove()
    expected = ((src - base) * total / steps).sum().double()
    torch.testing.assert_close(result.effect, expected.reshape(1), rtol=1e-5, atol=1e-5)


def test_compare_reports_correlation_and_top_k_agreement() -> None:
    fields = dict(hooks=["h"], grids=[(4,)], per="unit", kind="activation", direction="denoise", metric="m", n=1)
    exact = PatchResult(torch.tensor([1.0, -4.0, 2.0, 0.5], dtype=torch.float64), base=0.0, source=1.0, **fields)
    estimate = PatchResult(torch.tensor([1.5, -3.0, 0.5, 2.0], dtype=torch.float64), base=0.0, source=1.0, **fields)
    agreement = compare(exact, estimate, k=2)
    a, b = exact.effect - exact.effect.mean(), estimate.effect - estimate.effect.mean()
    assert agreement.pearson == pytest.approx(float(a @ b / (a.norm() * b.norm())))
    assert agreement.spearman == pytest.approx(0.2)  # ranks 2 0 3 1 vs 2 0 1 3: 1 - 6 * 8 / (4 * 15)
    assert (agreement.k, agreement.top_k, agreement.sign) == (2, 0.5, 1.0)  # top 2 by |effect|: {1, 2} vs {1, 3}
    assert (agreement.max_error, agreement.scale, agreement.entries) == (1.5, 4.0, 4)
    assert str(agreement).startswith("4 entries: Pearson r = ")


def test_compare_refuses_results_of_other_entries() -> None:
    model = build("mlp")
    clean, corrupt = inputs(model)
    a = activation_patch(model, clean, corrupt, diff01, hooks="layer1.post", per="unit")
    b = attribution_patch(model, clean, corrupt, diff01, hooks="layer2.post", per="unit")
    with pytest.raises(UsageError, match=r"the results differ in hooks \(\['layer1.post'\] vs \['layer2.post'\]\)"):
        compare(a, b)


def test_a_step_function_metric_is_refused_for_attribution() -> None:
    model = build("mlp")
    clean, corrupt = inputs(model)
    with pytest.raises(UsageError, match="metric 'flip_rate' is a step function"):
        attribution_patch(model, clean, corrupt, "flip_rate", labels=(0, 1))
    with pytest.raises(UsageError, match="does not depend on the logits through autograd"):
        attribution_patch(model, clean, corrupt, lambda logits: logits[:, 0].mean().item())
