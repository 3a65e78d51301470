"""analysis.properties: every property against a brute-force or closed-form value on a tiny seeded model."""

import numpy as np
import pytest
import torch
from torch import nn

from hookedmlp import ConfigError, HookedMLP, UsageError, linear_probe
from hookedmlp_analysis.properties import PROPERTIES, ModelProperties, model_properties, participation_ratio

PAIRS = [(0, 1), (2, 1), (1, 2)]


def _setup() -> tuple[HookedMLP, tuple, tuple]:
    torch.manual_seed(0)
    model = HookedMLP.from_sequential(
        nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 3))
    ).eval()
    g = torch.Generator().manual_seed(1)
    y = torch.arange(3).repeat(5)
    x = torch.rand(15, 6, generator=g) + 0.5 * nn.functional.one_hot(y, 6)
    test_y = torch.arange(3).repeat(4)
    return model, (x, y), (torch.rand(12, 6, generator=g), test_y)


def test_each_property_equals_its_brute_force_value():
    model, (x, y), test = _setup()
    props = model_properties(model, (x, y), test, pairs=PAIRS, source=(x, y), folds=3)
    assert [c["label"] for c in props.classes] == [
        "layer0.pre..layer1.pre",
        "layer1.post..layer3.pre",
        "layer3.post..layer4.post",
    ]
    first = {c: int((y == c).nonzero()[0]) for c in range(3)}  # each class's exemplar: its first example
    for cls in props.classes:
        rep, last = cls["hooks"][0], cls["hooks"][-1]
        h = model.clean_activations(x, [rep])[rep].double().numpy()
        values = props.values[cls["label"]]
        assert set(values) == set(PROPERTIES)
        probes = linear_probe(torch.as_tensor(h), y, pairs=PAIRS, folds=3).accuracy.tolist()
        assert values["probe"].tolist() == probes
        hl = model.clean_activations(x, [last])[last].double()
        run = model.double()
        jacobians = {  # by autograd, image by image
            i: torch.autograd.functional.jacobian(lambda t: run(t[None], start_at=last)[0], hl[i])
            for i in range(len(y))
        }
        for p, (a, b) in enumerate(PAIRS):
            v = h[first[a]] - h[first[b]]
            ha, hb = h[y.numpy() == a], h[y.numpy() == b]
            pa, pb = ha @ v, hb @ v
            d = (pa.mean() - pb.mean()) / np.sqrt((pa.var(ddof=1) + pb.var(ddof=1)) / 2)
            assert values["d_prime"][p] == pytest.approx(d, rel=1e-9)
            mu = ha.mean(0) - hb.mean(0)
            assert values["typicality"][p] == pytest.approx(v @ mu / np.linalg.norm(v) / np.linalg.norm(mu), rel=1e-9)
            diffs = ha - hb
            cos = [
                diffs[i] @ diffs[j] / np.linalg.norm(diffs[i]) / np.linalg.norm(diffs[j])
                for i in range(len(diffs))
                for j in range(len(diffs))
                if i != j
            ]
            assert values["coherence"][p] == pytest.approx(np.mean(cos), rel=1e-9)
            assert values["rel_size"][p] == pytest.approx(np.linalg.norm(v) / np.linalg.norm(h, axis=1).mean())
            # the first-order change J v against the actual change at coefficient 1, by a steered pass
            vl = hl[first[a]] - hl[first[b]]
            shares, err, size = [], 0.0, 0.0
            for i in (y == b).nonzero().squeeze(1).tolist():
                jv = jacobians[i] @ vl
                jv = jv - jv.mean()
                target = torch.zeros(3, dtype=torch.float64)
                target[a], target[b] = 1.0, -1.0
                shares.append(float(jv @ target / jv.norm() / target.norm()))
                with torch.no_grad():
                    dz = run((hl[i] + vl)[None], start_at=last)[0] - run(hl[i][None], start_at=last)[0]
                dz = dz - dz.mean()
                err, size = err + float(((dz - jv) ** 2).sum()), size + float((dz**2).sum())
            assert values["jacobian_share"][p] == pytest.approx(np.mean(shares), abs=1e-5)
            assert values["linearity"][p] == pytest.approx(1 - err / size, abs=1e-4)
        model.float()
        cov = np.cov(h.T)
        eig = np.linalg.eigvalsh(cov)
        assert values["eff_dim"][0] == pytest.approx(eig.sum() ** 2 / (eig**2).sum(), rel=1e-9)
        assert values["depth"][0] == cls["depth"]
    logits = props.values["layer3.post..layer4.post"]
    assert logits["linearity"] == pytest.approx(1.0, abs=1e-12)  # the logit class: the change is the vector itself
    z = model(test[0]).double()
    loss = torch.nn.functional.cross_entropy(z, test[1])
    true = z[torch.arange(12), test[1]]
    other = torch.stack([torch.cat([z[i, : test[1][i]], z[i, test[1][i] + 1 :]]).max() for i in range(12)])
    assert props.test_loss == pytest.approx(float(loss), rel=1e-6)
    assert props.margin == pytest.approx(float((true - other).mean()), rel=1e-6)
    again = ModelProperties.from_dict(props.to_dict())
    assert again.table() == props.table() and len(props.table()) == 3 * len(PAIRS)


def test_participation_ratio_closed_forms():
    g = torch.Generator().manual_seed(0)
    line = torch.randn(50, 1, generator=g, dtype=torch.float64) * torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    assert participation_ratio(line) == pytest.approx(1.0)
    axes = torch.cat([torch.eye(4), -torch.eye(4)]).double()  # equal variance on 4 axes
    assert participation_ratio(axes) == pytest.approx(4.0)
    wide = torch.randn(5, 40, generator=g, dtype=torch.float64)  # d > n: from the Gram matrix
    eig = np.linalg.eigvalsh(np.cov(wide.numpy().T))
    assert participation_ratio(wide) == pytest.approx(eig.sum() ** 2 / (eig**2).sum())


def test_refusals():
    model, data, test = _setup()
    with pytest.raises(ConfigError, match=r"pair \(1, 1\) compares a class with itself"):
        model_properties(model, data, test, pairs=[(1, 1)], source=data)
    with pytest.raises(UsageError, match=r"fewer than 10 images of class\(es\) \[0, 1\]"):
        model_properties(model, data, test, pairs=[(0, 1)], source=data, folds=10)
    with pytest.raises(ConfigError, match="must be from 0 to 2, got 5"):
        model_properties(model, data, test, pairs=[(0, 5)], source=data)
