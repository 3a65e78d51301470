"""analysis.hook_classes: affine-equivalent hook points give equal results, on every kind of study network."""

import sys

import numpy as np
import pytest
import torch
from torch import nn

from hookedmlp import HookedMLP, LeNetConfig, MLPConfig, ResidualConfig, ResidualMLP, UsageError
from hookedmlp_analysis.engine import Addition, evaluate_plain
from hookedmlp_analysis.hook_classes import INPUT, OUTPUT, affine_next, fold_between, hook_classes
from hookedmlp_analysis.steerability import SteerSettings, steerability

pytestmark = pytest.mark.usefixtures("one_thread")

KINDS = ("mlp", "dropout", "batchnorm", "layernorm", "lenet", "residual")


def build(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "lenet":
        return HookedMLP(LeNetConfig(channels=(2, 3), d_hidden=(8, 6), d_out=3)).eval()
    if kind == "residual":
        return ResidualMLP(ResidualConfig(d_in=16, d_model=8, d_mlp=8, n_blocks=2, d_out=3)).eval()
    norm = {"batchnorm": "batchnorm", "layernorm": "layernorm"}.get(kind, "none")
    model = HookedMLP(
        MLPConfig(d_in=16, d_hidden=(8, 8), d_out=3, dropout=0.2 if kind == "dropout" else 0.0, norm=norm)
    )
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):  # running statistics that are not the identity
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def data(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    shape = (1, 28, 28) if kind == "lenet" else (16,)
    return torch.rand(48, *shape, generator=g), torch.arange(48) % 3


EXPECTED = {
    "mlp": ["layer0.pre..layer1.pre", "layer1.post..layer3.pre", "layer3.post..layer4.post"],
    "dropout": ["layer0.pre..layer1.pre", "layer1.post..layer4.pre", "layer4.post..layer6.post"],
    "batchnorm": ["layer0.pre..layer2.pre", "layer2.post..layer5.pre", "layer5.post..layer6.post"],
    "layernorm": [
        "layer0.pre..layer1.pre",
        "layer1.post..layer2.pre",
        "layer2.post..layer4.pre",
        "layer4.post..layer5.pre",
        "layer5.post..layer6.post",
    ],
    "lenet": [
        "layer0.pre..layer1.pre",
        "layer1.post..layer2.pre",
        "layer2.post..layer4.pre",
        "layer4.post..layer5.pre",
        "layer5.post..layer8.pre",
        "layer8.post..layer10.pre",
        "layer10.post..layer11.post",
    ],
}


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_chains_group_hook_points_joined_by_affine_modules(kind: str) -> None:
    classes = hook_classes(build(kind))
    assert [c.label for c in classes] == EXPECTED[kind]
    assert [c.role for c in classes] == ["input"] + ["internal"] * (len(classes) - 2) + ["logits"]
    assert [c.depth for c in classes] == pytest.approx(np.linspace(0, 1, len(classes)).tolist())
    assert [h for c in classes for h in c.hooks] == build(kind).hook_names  # every hook point once, in order


def test_a_training_mode_dropout_is_not_affine() -> None:
    model = build("dropout").train()
    assert [c.label for c in hook_classes(model)] == [
        "layer0.pre..layer1.pre",
        "layer1.post..layer2.pre",
        "layer2.post..layer4.pre",
        "layer4.post..layer5.pre",
        "layer5.post..layer6.post",
    ]


def test_any_other_model_is_read_from_its_graph() -> None:
    res = build("residual")  # embed -> blocks (x + mlp(ln(x))) -> ln_final -> unembed
    assert [affine_next(res, h) for h in res.hook_names] == [
        "blocks.0.hook_resid_pre",  # one tensor, two hook points
        None,  # two users: the LayerNorm and the skip connection
        None,  # a ReLU follows
        "blocks.0.hook_mlp_out",  # through W_out, a Linear
        None,  # added to the skip connection
        "blocks.1.hook_resid_pre",
        None,
        None,
        "blocks.1.hook_mlp_out",
        None,
        None,  # a LayerNorm follows
        OUTPUT,
    ]
    assert affine_next(res, INPUT) == "hook_embed"  # through embed, a Linear
    classes = hook_classes(res)
    assert [c.label for c in classes] == [
        "hook_embed..blocks.0.hook_resid_pre",
        "blocks.0.mlp.hook_pre",
        "blocks.0.mlp.hook_post..blocks.0.hook_mlp_out",
        "blocks.0.hook_resid_post..blocks.1.hook_resid_pre",
        "blocks.1.mlp.hook_pre",
        "blocks.1.mlp.hook_post..blocks.1.hook_mlp_out",
        "blocks.1.hook_resid_post",
        "hook_logits",
    ]
    assert [c.role for c in classes] == ["input"] + ["internal"] * 6 + ["logits"]


def test_without_a_graph_only_the_output_is_known(monkeypatch) -> None:
    res = build("residual")
    monkeypatch.setattr(sys.modules["hookedmlp_analysis.hook_classes"], "graph_view", lambda model: None)
    assert [affine_next(res, h) for h in res.hook_names] == [None] * 11 + [OUTPUT]
    assert affine_next(res, INPUT) is None


def test_affine_next_on_a_chain(tiny) -> None:
    assert [affine_next(tiny, h) for h in tiny.hook_names] == [
        "layer0.post",
        "layer1.pre",
        None,
        "layer2.pre",
        "layer2.post",
        "layer3.pre",
        None,
        "layer4.pre",
        "layer4.post",
        OUTPUT,
    ]
    assert affine_next(tiny, INPUT) == "layer0.pre"


@pytest.mark.parametrize("kind", KINDS)
def test_affine_equivalent_hooks_give_equal_results(kind: str) -> None:
    """Each member of a class, steered with its own a - b vector, scores the same; the class is computed once."""
    model = build(kind)
    x, y = data(kind)
    settings = SteerSettings(c_min=0.5, c_max=2.0, draws=0)
    with torch.no_grad():
        steer = steerability(model, (x, y), pairs=[(2, 1)], data=(x, y), settings=settings)
        for cls in hook_classes(model):
            site = steer.site(cls.label)
            for hook in cls.hooks:
                vec = model.steering_vector(2, 1, hook, data=(x, y))[hook]
                adds = [Addition(hook, float(c) * vec, 2, 1) for c in settings.grid]
                plain = evaluate_plain(model, x, y, adds)
                for metric, values in plain.values.items():
                    np.testing.assert_allclose(site.grid[metric][0], values, atol=2e-5, err_msg=f"{hook} {metric}")


def test_hook_classes_refuse_attached_hooks(tiny) -> None:
    with tiny.hooks(fwd_hooks=[("layer1.post", lambda act, hook: act)]):
        with pytest.raises(UsageError, match=r"1 hook\(s\) are attached; remove them first with model.reset_hooks\(\)"):
            hook_classes(tiny)


def test_fold_between_is_the_affine_map_without_its_offset(tiny) -> None:
    v = torch.randn(4, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        folded = fold_between(tiny, "layer1.post", "layer3.pre", v)
    torch.testing.assert_close(folded, v @ tiny.layer2.module.weight.T)
    assert fold_between(tiny, "layer1.post", "layer1.post", v) is v
