"""The study's cache (issue 21, items 5 and 6): an entry that cannot be read is a miss, recomputed with one line
saying so; a truncated cached model is retrained; the cache path and the seeds and variants are checked."""

import json
import shutil

import pytest
import torch

from hookedmlp import ConfigError, MLPConfig
from hookedmlp.data import load_mnist
from hookedmlp.train import TrainSettings
from hookedmlp_analysis.family import Variant, study_model
from hookedmlp_analysis.spread import stratified_subset
from hookedmlp_analysis.study_cells import run_study
from hookedmlp_analysis.study_report import study
from hookedmlp_cli.commands import main

TINY = Variant("tiny", "a tiny net", MLPConfig(d_hidden=(16,)))
SETTINGS = TrainSettings(epochs=1, batch_size=32)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mnist():
    train_x, train_y = load_mnist("train")
    test_x, test_y = load_mnist("test")
    return train_x[:64], train_y[:64], test_x[:64], test_y[:64]


@pytest.fixture(scope="module")
def test_set(mnist):
    return stratified_subset(mnist[2], mnist[3], 3)


@pytest.fixture(scope="module")
def filled(tmp_path_factory, mnist, test_set):
    """A cache holding one trained model and its result."""
    cache = tmp_path_factory.mktemp("cache")
    result = study_model(TINY, 0, cache, test_set, (0.5, 1.0), mnist, SETTINGS, [(3, 1)], log=_fail)
    return cache, result


def _fail(line):
    raise AssertionError(f"unexpected log line: {line}")


def _copy(filled, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(filled[0], cache)
    (model,) = cache.glob("*.pt")
    (entry,) = cache.glob("*.json")
    return cache, model, entry


def _run(cache, mnist, test_set):
    lines = []
    result = study_model(TINY, 0, cache, test_set, (0.5, 1.0), mnist, SETTINGS, [(3, 1)], log=lines.append)
    return result, lines


def _same_numbers(a, b):
    return (a.variant, a.seed, a.test_loss, a.hooks, a.at_one, a.share) == (
        b.variant,
        b.seed,
        b.test_loss,
        b.hooks,
        b.at_one,
        b.share,
    )


def test_a_whole_cache_is_reused_silently(filled, tmp_path, mnist, test_set):
    cache, _, _ = _copy(filled, tmp_path)
    result, lines = _run(cache, mnist, test_set)
    assert result == filled[1] and lines == []


DAMAGE = {
    "truncated": lambda text: text[: len(text) // 2],
    "a list": lambda text: "[1, 2, 3]",
    "an extra key": lambda text: json.dumps({**json.loads(text), "result": {**json.loads(text)["result"], "x": 1}}),
    "a missing key": lambda text: json.dumps(
        {**json.loads(text), "result": {k: v for k, v in json.loads(text)["result"].items() if k != "share"}}
    ),
    "a changed number": lambda text: text.replace('"test_loss": ', '"test_loss": 1'),
    "empty": lambda text: "",
}


@pytest.mark.parametrize("damage", list(DAMAGE) + ["non-UTF-8 bytes"])
def test_a_damaged_result_is_recomputed_saying_so_in_one_line(filled, tmp_path, mnist, test_set, damage):
    cache, model, entry = _copy(filled, tmp_path)
    if damage == "non-UTF-8 bytes":
        entry.write_bytes(b"\xff\xfe" + entry.read_bytes())
    else:
        entry.write_text(DAMAGE[damage](entry.read_text()))
    before = model.read_bytes()
    result, lines = _run(cache, mnist, test_set)
    assert _same_numbers(result, filled[1])  # recomputed, from the cached model
    assert result.train_seconds == 0.0  # not retrained
    assert model.read_bytes() == before
    assert len(lines) == 1 and lines[0].startswith(f"  cache: {entry.name} is unreadable (")
    assert lines[0].endswith("; recomputing it")
    assert json.loads(entry.read_text())["result"]["test_loss"] == filled[1].test_loss  # rewritten whole
    assert _run(cache, mnist, test_set)[1] == []  # and read back silently


def test_a_whole_entry_of_another_result_format_is_recomputed(filled, tmp_path, mnist, test_set):
    """A consistent entry (its digest matches) whose fields are another version's: a miss, not a TypeError."""
    from hookedmlp_analysis.family import _digest

    cache, model, entry = _copy(filled, tmp_path)
    data = json.loads(entry.read_text())
    data["result"]["added_later"] = 1
    data["digest"] = _digest(data["result"])
    entry.write_text(json.dumps(data))
    result, lines = _run(cache, mnist, test_set)
    assert lines == [f"  cache: {entry.name} is unreadable (fields ['added_later'] missing or extra); recomputing it"]
    assert _same_numbers(result, filled[1])


def test_a_truncated_cached_model_is_retrained(filled, tmp_path, mnist, test_set):
    cache, model, entry = _copy(filled, tmp_path)
    model.write_bytes(model.read_bytes()[:1000])
    result, lines = _run(cache, mnist, test_set)
    assert lines == [f"  cache: {model.name} cannot be loaded (CheckpointError); retraining it"]
    assert result.train_seconds > 0
    assert _same_numbers(result, filled[1])  # seeded: the same model again, bit for bit
    assert torch.load(model, weights_only=True)["format"] == "hookedmlp.checkpoint"


def test_an_interrupted_studys_partial_file_does_not_block_the_next_run(filled, tmp_path, mnist, test_set):
    """train refuses to overwrite a partial file it did not write; in the cache, the partial is the cache's own."""
    cache, model, entry = _copy(filled, tmp_path)
    partial = model.with_name(model.stem + ".partial.pt")
    model.rename(partial)  # as if the study had been stopped after an epoch of this model
    result, lines = _run(cache, mnist, test_set)
    assert result.train_seconds > 0 and not partial.exists() and model.exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"seeds": [0, 0]}, "seeds repeat (0); give each once"),
        ({"seeds": [1, 0, 1, 2, 2]}, "seeds repeat (1, 2); give each once"),
        ({"variants": ["baseline", "baseline"]}, "variants repeat ('baseline'); give each once"),
    ],
)
def test_the_study_refuses_repeated_seeds_and_variants_before_training(tmp_path, kwargs, message):
    args = {"out_dir": tmp_path, "cache": tmp_path / "cache", "quick": True, "figures": False, "log": _fail}
    with pytest.raises(ConfigError) as info:
        study(**{**args, **kwargs})
    assert str(info.value).startswith(message)
    assert not (tmp_path / "cache").exists()


def test_run_study_refuses_repeated_variants(tmp_path):
    with pytest.raises(ConfigError, match=r"variants repeat \('tiny'\)"):
        run_study(tmp_path, [TINY, TINY], [0], log=_fail)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seeds", "0", "0"], "hookedmlp study: error: seeds repeat (0); give each once"),
        (
            ["--variants", "baseline", "baseline"],
            "hookedmlp study: error: variants repeat ('baseline'); give each once",
        ),
    ],
)
def test_the_cli_says_so_in_one_line(tmp_path, capsys, argv, message):
    assert main(["study", "--quick", "--out", str(tmp_path), "--cache", str(tmp_path / "c"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_an_empty_cache_flag_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["study", "--cache", ""])
    assert exc.value.code == 2
    assert capsys.readouterr().err == (
        "hookedmlp study: error: argument --cache: expected a directory path, got an empty one; pass e.g. runs/study "
        "(see hookedmlp study --help)\n"
    )
