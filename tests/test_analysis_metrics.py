"""analysis.metrics: the registry. A metric added to METRICS flows into every result without other changes."""

import numpy as np
import pytest
import torch

from hookedmlp_analysis.grid import GridResult, steering_grid
from hookedmlp_analysis.metrics import METRICS, Metric, Scored
from hookedmlp_analysis.sweep import all_pairs_sweep, coeff_sweep, layer_sweep

N = 100


def _margin(s: Scored) -> torch.Tensor:
    """How far the logit of a is above the logit of b, per image."""
    return s.logits.gather(2, s.a.view(-1, 1, 1).expand(-1, s.logits.shape[1], 1)).squeeze(2) - s.logits.gather(
        2, s.b.view(-1, 1, 1).expand(-1, s.logits.shape[1], 1)
    ).squeeze(2)


@pytest.fixture
def margin(monkeypatch) -> Metric:
    metric = Metric(
        "margin",
        "mean logit of a minus logit of b on the images of b",
        "logit margin (nats)",
        "b",
        _margin,
        "success",
        "margin",
        ".4f",
    )
    monkeypatch.setitem(METRICS, "margin", metric)
    return metric


def hand_margin(model, images, labels, a: int, b: int, hook: str, coeff: float = 1.0) -> float:
    vec = model.steering_vector(a, b, hook, coeff=coeff)
    with torch.no_grad(), model.steer(vec):
        logits = model(images[labels == b])
    return float((logits[:, a] - logits[:, b]).mean())


def test_a_registered_metric_flows_into_every_result(model, data, margin, tmp_path) -> None:
    images, labels = data
    test = (images, labels)
    grid = steering_grid(model, "layer0.post", test=test, digits=[3, 1, 7])
    assert list(grid.metrics) == [*list(METRICS)[:-1], "margin"]
    assert grid.margin.shape == (3, 3) and grid.normal["margin"].shape == (3,)
    assert grid.margin[0, 1] == pytest.approx(hand_margin(model, images, labels, 3, 1, "layer0.post"), abs=1e-4)
    assert grid.cell(3, 1)["margin"] == pytest.approx(float(grid.margin[0, 1]))
    np.testing.assert_array_equal(np.diag(grid.margin), 0.0)  # a == b: the logit minus itself
    assert grid.to_markdown("margin").splitlines()[0].startswith("mean logit of a minus logit of b on the images of b")
    grid.save(tmp_path / "g.json")
    back = GridResult.load(tmp_path / "g.json")
    assert back == grid and "margin" in back.metrics

    sweep = layer_sweep(model, 3, 1, hooks=["layer0.post", "layer2.post"], test=test)
    assert sweep.margin[1] == pytest.approx(hand_margin(model, images, labels, 3, 1, "layer2.post"), abs=1e-4)
    assert (
        sweep.to_markdown().splitlines()[2]
        == "| hook | loss without b | flip rate | accuracy other | KL | collateral | margin |"
    )
    assert f"| {sweep.margin[0]:.4f} |" in sweep.to_markdown()
    assert "margin" in sweep.to_dict()["metrics"]

    dose = coeff_sweep(model, [(3, 1)], [0.0, 2.0], test=test)
    assert dose.margin.shape == (1, 2) and dose.normal["margin"].shape == (1,)
    assert dose.margin[0, 1] == pytest.approx(hand_margin(model, images, labels, 3, 1, "layer0.post", 2.0), abs=1e-4)
    assert "| 3 - 1 |" in dose.to_markdown("margin")

    grids = all_pairs_sweep(model, ["layer0.pre", "layer4.post"], test=test, digits=[3, 1])
    assert all(g.margin.shape == (2, 2) for g in grids.values())


def test_metrics_are_not_kept_after_the_test() -> None:
    assert list(METRICS) == ["loss", "flip_rate", "accuracy_other", "kl", "collateral"]
