"""hookedmlp.stats.class_stats: streamed per-class moments against numpy's, on a tiny seeded model."""

import numpy as np
import pytest
import torch
from torch import nn

from hookedmlp import ConfigError, HookedMLP, ShapeError, SizeError, UsageError
from hookedmlp.sizes import memory_budget
from hookedmlp.stats import ClassStatistics, class_statistics


def _tiny() -> tuple[HookedMLP, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = HookedMLP.from_sequential(nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))).eval()
    g = torch.Generator().manual_seed(1)
    return model, torch.rand(37, 6, generator=g), torch.randint(0, 3, (37,), generator=g)


def test_streamed_statistics_equal_numpy_at_every_batch_size():
    model, x, y = _tiny()
    acts = model.clean_activations(x, ["layer1.post"])["layer1.post"].double().numpy()
    for batch in (1, 5, 37):
        s = class_statistics(model, ["layer1.post"], data=(x, y), classes=[2, 0], batch_size=batch)["layer1.post"]
        for i, c in enumerate([2, 0]):
            rows = acts[y.numpy() == c]
            assert int(s.count[i]) == len(rows)
            # (float32 activations of other batch sizes differ in the last bits)
            np.testing.assert_allclose(s.mean[i].numpy(), rows.mean(0), rtol=0, atol=1e-6)
            np.testing.assert_allclose(s.covariance()[i].numpy(), np.cov(rows.T), rtol=0, atol=1e-6)
            np.testing.assert_allclose(s.covariance(ddof=0)[i].numpy(), np.cov(rows.T, ddof=0), rtol=0, atol=1e-6)
        both = acts[np.isin(y.numpy(), [2, 0])]
        np.testing.assert_allclose(s.total_mean().numpy(), both.mean(0), rtol=0, atol=1e-6)
        np.testing.assert_allclose(s.total_covariance().numpy(), np.cov(both.T), rtol=0, atol=1e-6)


def test_float64_accumulation_keeps_a_large_offset_exact():
    s = ClassStatistics([0], (1,))
    for _ in range(100):  # variance 1 around 1e6: a float32 running sum of squares would lose it all
        s.add(torch.tensor([[1e6 - 1.0], [1e6 + 1.0]], dtype=torch.float32), torch.tensor([0, 0]))
    assert float(s.mean[0, 0]) == 1e6
    assert float(s.covariance(ddof=0)[0, 0, 0]) == 1.0


def test_means_only_and_refusals():
    model, x, y = _tiny()
    s = class_statistics(model, ["layer0.post"], data=(x, y), covariance=False)["layer0.post"]
    assert s.classes == [0, 1, 2] and s.scatter is None
    with pytest.raises(UsageError, match="keep no covariance; collect them with covariance=True"):
        s.covariance()
    with pytest.raises(UsageError, match=r"class 7 was not collected; the classes are \[0, 1, 2\]"):
        s.of(7)
    with pytest.raises(ConfigError, match="must be from 0 to 2, got 5"):
        class_statistics(model, ["layer0.post"], data=(x, y), classes=[5])
    with pytest.raises(ShapeError, match=r"expected activations \[n, 5\] and n labels, got \[2, 4\] and 2 labels"):
        s.add(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    one = ClassStatistics([0, 1], (2,))
    one.add(torch.zeros(1, 2), torch.tensor([0]))
    with pytest.raises(UsageError, match=r"class\(es\) \[0, 1\] have fewer than 2 example"):
        one.covariance()
    with memory_budget(1000), pytest.raises(SizeError, match="pass covariance=False"):
        ClassStatistics(range(10), (100,))
