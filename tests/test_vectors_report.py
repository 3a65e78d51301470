"""The study's vector arm: per-source means, their spread, and the variants compared with the source a random factor."""

import dataclasses

import numpy as np
import pytest
from study_fakes import result

from hookedmlp import ConfigError
from hookedmlp_analysis.prediction import variant_differences
from hookedmlp_analysis.vectors_report import sd_by, vector_arm, vectors_section


def _with_vectors(variant: str, seed: int, scores: dict[int, float]):
    """A fake model whose vector rows score ``scores[source]`` at every pair of one internal class."""
    rows = [
        {"source": i, "site": "layer1.post", "a": a, "b": b, "pauc": v}
        for i, v in scores.items()
        for a, b in [(0, 1), (1, 0), (2, 1)]
    ]
    return dataclasses.replace(result(variant, seed, 0.2, 0.3, 0.25), vectors=rows)


RESULTS = [
    _with_vectors("baseline", 0, {0: 0.1, 1: 0.3, 2: 0.2, 3: 0.2}),
    _with_vectors("baseline", 1, {0: 0.2, 1: 0.4, 2: 0.3, 3: 0.3}),
    _with_vectors("wide", 0, {0: 0.5, 1: 0.5, 2: 0.5, 3: 0.5}),
    _with_vectors("wide", 1, {0: 0.6, 1: 0.6, 2: 0.6, 3: 0.6}),
]


def test_means_per_source_and_seed_and_their_spread() -> None:
    arm = vector_arm(RESULTS, reps=50)
    assert list(arm.means["baseline"]) == [0, 1, 2, 3]
    np.testing.assert_allclose(list(arm.means["baseline"].values()), [[0.1, 0.2], [0.3, 0.4], [0.2, 0.3], [0.2, 0.3]])
    across_sources, across_seeds = sd_by(arm.means["baseline"])
    np.testing.assert_allclose(across_sources, np.std([0.1, 0.3, 0.2, 0.2], ddof=1))  # the same for both seeds
    np.testing.assert_allclose(across_seeds, np.std([0.1, 0.2], ddof=1))
    assert sd_by(arm.means["wide"])[0] == 0.0  # every source scores the same
    (diff,) = arm.differences
    assert diff.name == "wide" and diff.value == pytest.approx(0.55 - 0.25)
    assert diff.low <= diff.value <= diff.high


def test_the_section_names_every_source_and_says_na_where_a_spread_is_undefined() -> None:
    lines = vectors_section(vector_arm(RESULTS[::2], reps=50))  # one seed each: no SD across seeds, no differences
    table = next(x for x in lines if x.startswith("| ")).splitlines()
    assert table[0] == "| variant | ex. 0 | ex. 1 | ex. 2 | mean | SD: sources / seeds |"
    assert table[2] == "| baseline | 0.100 | 0.300 | 0.200 | 0.200 | 0.082 / n/a |"
    assert not any("minus the baseline" in x for x in lines)
    assert vectors_section(vector_arm([], reps=50))[-1] == (
        "Not computed: no model of this run has an internal hook class.\n"
    )


def test_within_must_start_with_the_seed() -> None:
    rows = [{**row, "variant": r.variant, "seed": r.seed} for r in RESULTS for row in r.vectors]
    with pytest.raises(ConfigError, match=r"within must start with 'seed' \(the trained models\), got \['source'\]"):
        variant_differences(rows, "pauc", within=("source",))
