"""``hookedmlp patch``: what it prints and writes equals the library's results; bad input is one line and status 2."""

import json

import pytest
import torch

from hookedmlp import HookedMLP
from hookedmlp.data import load_mnist
from hookedmlp.patching import DIRECTIONS, METHODS, METRICS, PER, PatchResult, activation_patch, attribution_patch
from hookedmlp_cli import parser
from hookedmlp_cli.commands import main

pytestmark = pytest.mark.usefixtures("one_thread")
ARGS = ["patch", "--clean", "3", "--corrupt", "1", "--pairs", "40", "--hooks", "layer1.post", "layer3.post"]


@pytest.fixture(scope="module")
def expected():
    model = HookedMLP.from_pretrained("mnist-mlp").eval()
    images, labels = load_mnist("test")
    clean, corrupt = images[labels == 3][:40], images[labels == 1][:40]
    kwargs = dict(labels=(3, 1), hooks=["layer1.post", "layer3.post"], per="unit")
    return (
        activation_patch(model, clean, corrupt, "logit_diff", **kwargs),
        attribution_patch(model, clean, corrupt, "logit_diff", **kwargs),
    )


def test_the_parser_mirrors_the_library() -> None:
    assert tuple(parser.PATCH_METRICS) == tuple(METRICS)
    assert (parser.PATCH_PER, parser.DIRECTIONS, parser.ATTRIBUTIONS[1:]) == (PER, DIRECTIONS, METHODS)


def test_patch_prints_the_top_entries(capsys, expected) -> None:
    assert main([*ARGS, "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(expected[0].summary(3))


def test_patch_with_attribution_prints_the_agreement(capsys, expected) -> None:
    assert main([*ARGS, "--attribution", "gradient", "--top", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    from hookedmlp.patching import compare

    assert out[-1] == f"agreement: {compare(*expected, k=5)}"


def test_patch_writes_json_results_and_figures(capsys, tmp_path, expected) -> None:
    argv = [*ARGS, "--attribution", "gradient", "--json", "-", "--out", str(tmp_path / "r.safetensors")]
    assert main([*argv, "--figure", str(tmp_path / "fig.html")]) == 0
    captured = capsys.readouterr().out
    data = json.loads(captured[: captured.index("\nwrote")])
    assert data["exact"] == expected[0].to_dict() and data["estimate"] == expected[1].to_dict()
    assert data["agreement"]["entries"] == 1024
    assert torch.equal(PatchResult.load(tmp_path / "r.safetensors").values, expected[0].values)
    assert torch.equal(PatchResult.load(tmp_path / "r-estimate.safetensors").values, expected[1].values)
    assert sorted(p.name for p in tmp_path.glob("fig*")) == ["fig-agreement.html", "fig-hooks.html", "fig-map.html"]


def test_image_indices_pair_those_test_images(capsys) -> None:
    assert main(["patch", "--clean", "@18,30", "--corrupt", "@2,5", "--hooks", "layer4.post", "--json", "-"]) == 0
    data = json.loads(capsys.readouterr().out)["exact"]
    model = HookedMLP.from_pretrained("mnist-mlp").eval()
    images, labels = load_mnist("test")
    clean, corrupt = images[[18, 30]], images[[2, 5]]
    result = activation_patch(model, clean, corrupt, "logit_diff", labels=(labels[[18, 30]], labels[[2, 5]]),
                              hooks="layer4.post", per="unit")  # fmt: skip
    assert data == result.to_dict() and data["n"] == 2


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and "Traceback" not in err
    return err.strip()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--clean", "@99999"], "--clean names test image 99999, but MNIST's test set has 10000"),
        (["--clean", "@1,2", "--corrupt", "@3"], "--clean names 2 test images and --corrupt 1; patching pairs them"),
        (["--hooks", "layer1.pots"], "did you mean 'layer1.post'"),
        (["--attribution", "gradient", "--metric", "flip_rate"], "metric 'flip_rate' is a step function"),
    ],
)
def test_bad_input_is_one_line(capsys, extra, message) -> None:
    line = _error(capsys, ["patch", "--pairs", "5", *extra])
    assert line.startswith("hookedmlp patch: error: ") and message in line


@pytest.mark.parametrize(
    "value, message", [("12", "expected a digit 0-9 or test-image indices such as @42,57, got '12'"), ("@", "got '@'")]
)
def test_bad_image_flags_are_refused_by_the_parser(capsys, value, message) -> None:
    with pytest.raises(SystemExit) as info:
        main(["patch", "--clean", value])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_outputs_are_checked_before_computing(capsys, tmp_path, monkeypatch) -> None:
    import hookedmlp_cli.commands as commands

    monkeypatch.setattr(commands, "activation_patch", lambda *a, **k: pytest.fail("computed before checking"))
    (tmp_path / "file").write_text("x")
    line = _error(capsys, ["patch", "--out", str(tmp_path / "file" / "r.safetensors")])
    assert "is a file, not a directory" in line
