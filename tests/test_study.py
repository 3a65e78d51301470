"""The network-properties study: every variant trains and steers; runs are cached, resumable, keyed on the recipe."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hookedmlp import MLPConfig
from hookedmlp.data import load_mnist
from hookedmlp.train import TrainSettings, build_model, train_model
from hookedmlp_analysis import family
from hookedmlp_analysis.additions import pair_additions
from hookedmlp_analysis.engine import evaluate_additions, evaluate_plain
from hookedmlp_analysis.family import VARIANTS, Variant, study_model
from hookedmlp_analysis.outputs import same_to_precision
from hookedmlp_analysis.spread import stratified_subset
from hookedmlp_analysis.steer_result import Steerability, analysis_version
from hookedmlp_analysis.study_report import results_from_dict, study, study_text


@pytest.fixture(scope="module")
def mnist():
    train_x, train_y = load_mnist("train")
    test_x, test_y = load_mnist("test")
    return train_x[:64], train_y[:64], test_x[:64], test_y[:64]


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_every_variant_trains_one_step_and_one_cell_equals_the_plain_loop(variant: Variant, mnist):
    settings = TrainSettings(epochs=1, batch_size=64, weight_decay=variant.weight_decay)
    model = train_model(variant.recipe, settings, data=mnist, progress=False).model
    hook = model.hook_names[len(model.hook_names) // 2]
    data, test = mnist[:2], mnist[2:]
    additions = pair_additions(model, [hook], [(3, 1)], data=data)
    fast = evaluate_additions(model, *test, additions)
    plain = evaluate_plain(model, *test, additions)
    for metric in fast.values:
        np.testing.assert_allclose(fast.values[metric], plain.values[metric], atol=1e-4)


@pytest.mark.parametrize("recipe", [VARIANTS[-1].recipe, VARIANTS[-2].recipe], ids=["LeNet", "residual"])
def test_seeds_reproduce_bit_for_bit(recipe, mnist):
    a, b = (
        train_model(recipe, TrainSettings(epochs=1, batch_size=32, seed=5), data=mnist, progress=False).model
        for _ in range(2)
    )
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_the_cache_is_keyed_on_the_recipe_and_resumes(tmp_path: Path, mnist):
    test = stratified_subset(mnist[2], mnist[3], 3)
    tiny = Variant("tiny", "a tiny net", MLPConfig(d_hidden=(16,)))
    settings = TrainSettings(epochs=1, batch_size=32)
    first = study_model(tiny, 0, tmp_path, test, (0.5, 1.0), mnist, settings, [(3, 1)])
    assert first.train_seconds > 0 and len(list(tmp_path.glob("*.pt"))) == 1
    again = study_model(tiny, 0, tmp_path, test, (0.5, 1.0), mnist, settings, [(3, 1)])
    assert again == first  # the cached result, nothing retrained or recomputed
    other = dataclasses.replace(tiny, recipe=MLPConfig(d_hidden=(8,)))
    study_model(other, 0, tmp_path, test, (0.5, 1.0), mnist, settings, [(3, 1)])
    assert len(list(tmp_path.glob("*.pt"))) == 2  # another recipe: another file, never the cached one


def test_a_result_measured_by_other_analysis_code_is_not_reused(tmp_path: Path, mnist, monkeypatch):
    test = stratified_subset(mnist[2], mnist[3], 3)
    tiny = Variant("tiny", "a tiny net", MLPConfig(d_hidden=(16,)))
    settings = TrainSettings(epochs=1, batch_size=32)
    first = study_model(tiny, 0, tmp_path, test, (0.5, 1.0), mnist, settings, [(3, 1)])
    (result,) = tmp_path.glob("*.json")
    saved = json.loads(result.read_text())
    assert saved["analysis"] == analysis_version() and saved["steer_settings"]["c_min"] == 0.5
    assert {row["site"] for row in Steerability.from_dict(saved["steerability"]).table()} == {
        s["name"] for s in first.steer["sites"]
    }
    saved["result"]["test_loss"] = -1.0  # what a reused result would show
    saved["digest"] = family._digest(saved["result"])  # (an honest entry: not damage, which is recomputed)
    for key, other in (("analysis", "0123456789ab"), ("steer_settings", {**saved["steer_settings"], "steps": 3})):
        result.write_text(json.dumps({**saved, key: other}))
        again = study_model(tiny, 0, tmp_path, test, (0.5, 1.0), mnist, settings, [(3, 1)])
        assert again.test_loss == first.test_loss and again.train_seconds == 0.0  # re-measured, not retrained
    result.write_text(json.dumps(saved))
    assert study_model(tiny, 0, tmp_path, test, (0.5, 1.0), mnist, settings, [(3, 1)]).test_loss == -1.0


def test_a_cached_model_of_another_recipe_is_not_reused(tmp_path: Path, mnist):
    test = stratified_subset(mnist[2], mnist[3], 3)
    tiny = Variant("tiny", "a tiny net", MLPConfig(d_hidden=(16,)))
    settings = TrainSettings(epochs=1, batch_size=32)
    study_model(tiny, 0, tmp_path, test, (0.5, 1.0), mnist, settings, [(3, 1)])
    (path,) = tmp_path.glob("*.pt")
    impostor = build_model(MLPConfig(d_hidden=(16,), activation="tanh"))
    impostor.meta = {"recipe": {"kind": "mlp", "activation": "tanh"}}
    impostor.save(path)
    for stale in tmp_path.glob("*.json"):
        stale.unlink()
    result = study_model(tiny, 0, tmp_path, test, (0.5, 1.0), mnist, settings, [(3, 1)])
    assert result.train_seconds > 0  # retrained: the file at its path described another recipe


def test_study_quick_end_to_end(tmp_path: Path):
    results = study(out_dir=tmp_path, cache=tmp_path / "cache", quick=True, log=lambda line: None)
    assert [r.variant for r in results] == ["baseline", "residual", "LeNet"]
    text = (tmp_path / "study.md").read_text()
    assert text.startswith("# Which network properties make activation additions work?")
    for name in ("baseline", "residual", "LeNet"):
        assert f"| {name} |" in text
    assert "| baseline | `layer1.post..layer3.pre` |" in text  # its one internal hook class, never the logits'
    assert all(h not in results[0].logit_hooks for h in (results[0].best_hook, "layer1.post"))
    assert all((tmp_path / "figures" / f"study_{f}.png").exists() for f in ("frontier", "layers", "predicted"))
    assert "- Variants against the baseline: not compared; that needs at least 2 seeds per variant" in text
    # the vector arm (seed 0 is among the first three) and the matched arm, trained to its own target loss
    assert {row["source"] for row in results[0].vectors} == {0, 1, 2, 3}
    assert "## Which vector: exemplars and class means as a random factor" in text
    assert "## At matched accuracy" in text
    # properties beside the scores, one row per hook class and pair; the page's prediction section from them
    assert {(row["a"], row["b"]) for row in results[0].properties} == {
        (a, b) for a in range(3) for b in range(3) if a != b
    }
    assert {"d_prime", "probe", "jacobian_share", "pauc"} <= set(results[0].properties[0])
    assert "## Which properties predict steerability" in text
    assert "| `d_prime` | d' of a's and b's images along v |" in text
    assert "needs at least 2 seeds per variant; this run has 1." in text
    data = json.loads((tmp_path / "figures" / "study.json").read_text())
    assert data["results"][0]["properties"]["a"][:2] == [0, 0]  # property rows stored as columns
    saved = results_from_dict(data)
    results_again, n_test, quick, matched = saved
    for main, stopped in zip(results, matched):  # a model that reaches the target stops; one that never does is
        assert stopped.test_loss <= family.QUICK_MATCHED_LOSS or stopped.test_loss == main.test_loss  # the main one
    assert sum(m.test_loss <= family.QUICK_MATCHED_LOSS for m in matched) >= 1
    assert same_to_precision(text, study_text(results_again, True, n_test, quick, matched))  # the same page
    mtime = (tmp_path / "study.md").stat().st_mtime_ns
    study(out_dir=tmp_path, cache=tmp_path / "cache", quick=True, log=lambda line: None)  # resumes from the cache
    assert (tmp_path / "study.md").stat().st_mtime_ns == mtime


def test_cli_study_quick(tmp_path: Path, capsys):
    from hookedmlp_cli.commands import main

    assert (
        main(
            [
                "study",
                "--quick",
                "--out",
                str(tmp_path),
                "--cache",
                str(tmp_path / "cache"),
                "--variants",
                "baseline",
                "--no-figures",
                "--no-matched",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "model 1/1: baseline, seed 0" in out and f"report: {tmp_path / 'study.md'}" in out
    assert "matched-accuracy arm" not in out and len(list((tmp_path / "cache").glob("*.pt"))) == 1
    text = (tmp_path / "study.md").read_text()
    assert "| baseline |" in text and "## At matched accuracy" not in text


def test_cli_study_unknown_variant(capsys):
    from hookedmlp_cli.commands import main

    with pytest.raises(SystemExit) as exc:
        main(["study", "--variants", "giant"])
    assert exc.value.code == 2
    assert "invalid choice: 'giant'" in capsys.readouterr().err
