"""The study's claims: verdicts, numbers and their summaries over runs."""

import numpy as np
import pytest

from hookedmlp_analysis.claims import CLAIMS, flips_as_the_study_says, permutation_p, summarise
from hookedmlp_analysis.grid import GridResult


def _grid(dist: np.ndarray) -> GridResult:
    k = dist.shape[0]
    metrics = {m: np.zeros((k, k)) for m in ("loss", "flip_rate", "accuracy_other", "kl")}
    return GridResult(
        "layer0.post",
        1.0,
        "first",
        list(range(k)),
        metrics,
        {m: np.zeros(k) for m in metrics},
        10,
        "model",
        distributions=dist,
    )


def test_flips_as_the_study_says_reads_the_mean_logit_distributions():
    k = 3
    dist = np.full((k, k, k, k), 1 / k)  # every cell: uniform over classes on every digit's images
    for b in range(k):
        dist[b, b, b] = [0.1, 0.1, 0.1]
        dist[b, b, b, b] = 0.8  # unsteered: b's images read as b
    dist[0, 1, 1] = [0.7, 0.2, 0.1]  # 0 - 1: b's images now read as 0 (a), less as 1 (b)
    flips = flips_as_the_study_says(_grid(dist))
    # pairs in order (0,1), (0,2), (1,0), (1,2), (2,0), (2,1); uniform 1/3 > 0.1 and < 0.8 also "flips"
    assert flips.tolist() == [True, True, True, True, True, True]
    dist[2, 1, 1] = [0.1, 0.85, 0.05]  # 2 - 1: b read as b more than before: does not flip
    assert flips_as_the_study_says(_grid(dist)).tolist() == [True, True, True, True, True, False]


def test_flips_need_distributions():
    g = _grid(np.zeros((2, 2, 2, 2)))
    g.distributions = None
    with pytest.raises(ValueError, match="keep_distributions=True"):
        flips_as_the_study_says(g)


def test_permutation_p():
    x = np.arange(30, dtype=float)
    assert permutation_p(x, x, n=999) == pytest.approx(1 / 1000)
    assert permutation_p(x, -x, n=999) == pytest.approx(1.0)
    assert permutation_p(x, x, n=999, seed=3) == permutation_p(x, x, n=999, seed=3)


def test_summarise_counts_verdicts_and_spreads_numbers():
    runs = [{c.key: (i % 2 == 0, float(i)) for c in CLAIMS} for i in range(5)]
    s = summarise(runs)
    assert [x.claim.key for x in s] == [c.key for c in CLAIMS]
    assert (s[0].holds, s[0].runs, s[0].median, s[0].low, s[0].high) == (3, 5, 2.0, 0.0, 4.0)
    assert s[0].verdict == "holds in 3 of 5 runs"
    assert summarise([{c.key: (True, 1.0) for c in CLAIMS}] * 2)[0].verdict == "holds in all 2 runs"
    assert summarise([{c.key: (False, 1.0) for c in CLAIMS}] * 2)[0].verdict == "fails in all 2 runs"
    assert summarise([{c.key: (True, 1.0) for c in CLAIMS}])[0].verdict == "holds in its one run"


def test_rank_threshold_is_where_the_permutation_p_crosses_rank_p() -> None:
    """Grids whose rho lies clearly above the drawn line hold, clearly below it fail (Monte Carlo: near it, either)."""
    from hookedmlp_analysis.claims import RANK_P, rank_threshold
    from hookedmlp_analysis.published import spearman, study_tables

    study = study_tables()
    line = rank_threshold(study)
    assert 0.2 < line < 0.3  # about 2.33 / sqrt(89), the normal approximation's
    off = ~np.eye(10, dtype=bool)
    rng = np.random.default_rng(1)
    theirs = study.grid[off]
    checked = 0
    for _ in range(60):
        ours = theirs + rng.normal(0, rng.uniform(2, 30), size=90)  # from strongly to barely correlated
        rho = spearman(ours, theirs)
        if abs(rho - line) > 0.03:
            checked += 1
            assert (permutation_p(ours, theirs) < RANK_P) == (rho > line), (rho, line)
    assert checked > 30
