"""hookedmlp.stats.probe: cross-validated logistic-regression probes against scikit-learn's, fold by fold."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from hookedmlp import ConfigError, ShapeError, UsageError
from hookedmlp.stats import linear_probe
from hookedmlp.stats.probe import _folds


def _data(d: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat(20)
    x = torch.randn(60, d, generator=g, dtype=torch.float64)
    x[:, :3] += 1.2 * torch.nn.functional.one_hot(y, 3).double()
    return x, y


def _sklearn(x: torch.Tensor, y: torch.Tensor, classes: tuple, folds: int, l2: float) -> tuple[float, list]:
    """The same folds, features and objective, fitted by scikit-learn."""
    fold = _folds(y, list(classes), folds, 0).numpy()
    z = x.numpy() - x.numpy().mean(0)
    z = z / np.sqrt((z**2).sum(1).mean())
    keep = np.isin(y.numpy(), classes)
    hits, per_fold = 0, []
    for f in range(folds):
        train, test = keep & (fold != f), keep & (fold == f)
        clf = LogisticRegression(C=1 / (l2 * train.sum()), tol=1e-12, max_iter=10_000)
        clf.fit(z[train], y.numpy()[train])
        right = (clf.predict(z[test]) == y.numpy()[test]).sum()
        hits += right
        per_fold.append(right / test.sum())
    return hits / keep.sum(), per_fold


@pytest.mark.parametrize("d", [4, 80])  # fewer features than rows, and more (fitted in the rows' own span)
def test_pair_and_multinomial_probes_equal_sklearn(d):
    x, y = _data(d)
    r = linear_probe(x, y, pairs=[(0, 1), (2, 0), (1, 0)], folds=4, l2=0.05)
    for p, pair in enumerate([(0, 1), (2, 0), (0, 1)]):
        acc, per_fold = _sklearn(x, y, pair, 4, 0.05)
        assert float(r.accuracy[p]) == pytest.approx(acc, abs=1e-12)
        np.testing.assert_allclose(r.fold_accuracy[p].numpy(), per_fold, atol=1e-12)
    with torch.no_grad():  # the fit needs gradients: a caller's no_grad does not stop it
        multi = linear_probe(x, y, folds=4, l2=0.05)
    assert multi.classes == [(0, 1, 2)]
    assert float(multi.accuracy[0]) == pytest.approx(_sklearn(x, y, (0, 1, 2), 4, 0.05)[0], abs=1e-12)
    assert r.grad_max < 1e-6 and multi.grad_max < 1e-6


def test_separable_classes_and_folds_are_stratified_and_seeded():
    x, y = _data(4)
    x[:, 0] += 10.0 * (y == 2)
    assert linear_probe(x, y, pairs=[(2, 1)], folds=3).accuracy.tolist() == [1.0]
    fold = _folds(y, [0, 1, 2], 5, 0)
    assert [int(((fold == f) & (y == c)).sum()) for c in range(3) for f in range(5)] == [4] * 15
    assert torch.equal(fold, _folds(y, [0, 1, 2], 5, 0)) and not torch.equal(fold, _folds(y, [0, 1, 2], 5, 1))


def test_refusals():
    x, y = _data(4)
    with pytest.raises(ConfigError, match=r"class\(es\) \[7\] have no example in labels; the labels hold \[0, 1, 2\]"):
        linear_probe(x, y, pairs=[(0, 7)])
    with pytest.raises(ConfigError, match=r"two or more distinct classes, got \(1, 1\)"):
        linear_probe(x, y, pairs=[(1, 1)])
    with pytest.raises(UsageError, match="class 0 has 20 example.*25-fold cross-validation needs at least 25"):
        linear_probe(x, y, folds=25)
    with pytest.raises(ConfigError, match=r"l2 must be finite and in \(0, inf\], got 0"):
        linear_probe(x, y, l2=0)
    with pytest.raises(ShapeError, match=r"expected activations \[n, \*shape\] and labels \[n\], got \[60, 4\] and"):
        linear_probe(x, y[:5].clone())
