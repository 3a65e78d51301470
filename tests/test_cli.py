"""The ``hookedmlp`` command line, called in-process through ``hookedmlp.cli.main`` (plus one
run of the installed console script). User mistakes must give exit status 2 and one line on
stderr, never a traceback."""

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hookedmlp.data
from hookedmlp import HookedMLP, MLPConfig
from hookedmlp.cli import main

HOOKS = [f"layer{i}.{side}" for i in range(5) for side in ("pre", "post")]
SHAPES = {"layer0.pre": "[1, 784]", "layer4.post": "[1, 10]", **{h: "[1, 512]" for h in HOOKS[1:-1]}}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny_mnist(monkeypatch):
    """``hookedmlp.data.load_mnist`` cut to 512 train / 256 test images, so ``train`` takes a second."""
    real = hookedmlp.data.load_mnist
    calls = []

    def load(split="train", root=None, device=None):
        calls.append(split)
        images, labels = real(split, root)
        n = 512 if split == "train" else 256
        return images[:n], labels[:n]

    monkeypatch.setattr(hookedmlp.data, "load_mnist", load)
    return calls


@pytest.fixture
def small_ckpt(tmp_path) -> Path:
    """A valid checkpoint of a 16-8-3 model (not the 784-input MNIST architecture)."""
    torch.manual_seed(0)
    path = tmp_path / "small.pt"
    HookedMLP(MLPConfig(d_in=16, d_hidden=(8,), d_out=3)).save(path)
    return path


def _user_error(capsys, argv, *needles) -> str:
    """Run ``main(argv)``; it must return 2 with one ``hookedmlp <cmd>: error:`` line naming ``needles``."""
    rc = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert rc == 2, (out, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"hookedmlp {argv[0]}: error: ")
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def _usage_error(capsys, argv, *needles) -> str:
    """Argument errors: argparse exits with status 2 and one line on stderr."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    assert info.value.code == 2
    assert "Traceback" not in err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("hookedmlp")
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


# -- hooks -------------------------------------------------------------------------------------

def test_hooks_lists_the_ten_hook_points_with_shapes(capsys):
    assert main(["hooks"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == 10
    assert [line.split()[0] for line in lines] == HOOKS
    for line, name in zip(lines, HOOKS):
        assert SHAPES[name] in line
        assert ("input of " if name.endswith(".pre") else "output of ") in line
    assert "Linear(in_features=784, out_features=512" in lines[0]
    assert "ReLU()" in lines[2]


def test_hooks_on_a_checkpoint_of_another_architecture_lists_its_hooks(capsys, small_ckpt):
    assert main(["hooks", "--checkpoint", str(small_ckpt)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [f"layer{i}.{s}" for i in range(3) for s in ("pre", "post")]
    assert "[1, 16]" in lines[0] and "[1, 3]" in lines[-1]


def test_console_script_is_installed():
    script = shutil.which("hookedmlp", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    assert script, "the hookedmlp console script is not installed"
    proc = subprocess.run([script, "hooks"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert [line.split()[0] for line in proc.stdout.splitlines()] == HOOKS


# -- argument errors -----------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "needle"), [
    (["train", "--epochs", "0"], "argument --epochs: expected a positive integer, got 0"),
    (["train", "--epochs", "-3"], "expected a positive integer, got -3"),
    (["train", "--epochs", "two"], "expected a positive integer, got 'two'"),
    (["train", "--batch-size", "0"], "argument --batch-size: expected a positive integer"),
    (["train", "--lr", "abc"], "argument --lr: expected a positive number, got 'abc'"),
    (["train", "--lr", "0"], "expected a positive finite number, got 0"),
    (["train", "--lr", "inf"], "expected a positive finite number"),
    (["train", "--lr", "nan"], "expected a positive finite number"),
    (["train", "--seed", "1.5"], "argument --seed: expected an integer seed, got '1.5'"),
    (["sweep", "--a", "12"], "argument --a: expected a digit 0-9, got '12'"),
    (["grid", "--coeff", "nan"], "argument --coeff: expected a finite number"),
    (["grid", "--metric", "mse"], "argument --metric: invalid choice: 'mse'"),
])
def test_bad_flags_exit_2_with_one_line(capsys, argv, needle):
    line = _usage_error(capsys, argv, needle)
    assert line.startswith(f"hookedmlp {argv[0]}: error: ")
    assert line.endswith(f"(see hookedmlp {argv[0]} --help)")


def test_unknown_flag_exits_2(capsys):
    _usage_error(capsys, ["train", "--bogus"], "unrecognized arguments: --bogus")


def test_unknown_command_exits_2(capsys):
    _usage_error(capsys, ["nonsense"], "invalid choice: 'nonsense'", "train", "hooks")


def test_no_command_exits_2(capsys):
    _usage_error(capsys, [], "required")


def test_help_exits_0_and_names_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "hooks", "reproduce", "grid", "sweep"):
        assert command in out


# -- checkpoint errors ---------------------------------------------------------------------------

def test_checkpoint_that_is_a_directory(capsys, tmp_path):
    _user_error(capsys, ["hooks", "--checkpoint", str(tmp_path)], "is a directory", str(tmp_path))


def test_checkpoint_that_does_not_exist(capsys, tmp_path):
    missing = tmp_path / "nope.pt"
    _user_error(capsys, ["hooks", "--checkpoint", str(missing)], "does not exist", str(missing))


def test_plain_state_dict_saved_with_torch_save(capsys, tmp_path):
    path = tmp_path / "plain.pt"
    torch.save(HookedMLP(MLPConfig(d_in=16, d_hidden=(8,), d_out=3)).to_sequential().state_dict(), path)
    _user_error(capsys, ["hooks", "--checkpoint", str(path)], "is not a hookedmlp checkpoint", "from_state_dict")


def test_truncated_checkpoint(capsys, tmp_path, small_ckpt):
    path = tmp_path / "cut.pt"
    path.write_bytes(small_ckpt.read_bytes()[:200])
    _user_error(capsys, ["hooks", "--checkpoint", str(path)], "truncated or corrupt", "re-create it")


def test_checkpoint_whose_weights_do_not_fit_its_architecture(capsys, tmp_path, small_ckpt):
    ckpt = torch.load(small_ckpt, weights_only=True)
    ckpt["specs"] = [s.to_dict() for s in MLPConfig().layer_specs()]  # claims 784-512-512-10
    ckpt["input_shape"] = [1, 28, 28]
    path = tmp_path / "edited.pt"
    torch.save(ckpt, path)
    _user_error(capsys, ["hooks", "--checkpoint", str(path)], "does not match the architecture", "shape mismatches")


def test_a_json_card_passed_as_checkpoint_is_not_called_unsafe(capsys, tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"name": "m", "sha256": "0" * 64}, indent=2))
    line = _user_error(capsys, ["hooks", "--checkpoint", str(path)], str(path))
    assert "could run code" not in line and "weights_only=False" not in line


@pytest.mark.parametrize("command", ["grid", "sweep"])
def test_grid_and_sweep_refuse_a_model_that_is_not_for_mnist(capsys, small_ckpt, command):
    _user_error(capsys, [command, "--checkpoint", str(small_ckpt)], "d_in=784", "has 16")


# -- contradicting flags ---------------------------------------------------------------------------

def test_sweep_with_a_equal_to_b(capsys):
    _user_error(capsys, ["sweep", "--a", "3", "--b", "3"], "--a and --b are both 3")


def test_reproduce_with_train_and_checkpoint(capsys, small_ckpt):
    _user_error(capsys, ["reproduce", "--train", "--checkpoint", str(small_ckpt)], "exclude each other")


def test_grid_with_an_unknown_hook(capsys):
    _user_error(capsys, ["grid", "--hook", "layer9.post"], "layer9.post", "did you mean 'layer4.post'")


# -- train ---------------------------------------------------------------------------------------

def test_train_writes_a_checkpoint_and_a_card(capsys, tmp_path, tiny_mnist, monkeypatch):
    out = tmp_path / "runs" / "m.pt"
    argv = ["train", "--epochs", "1", "--seed", "5", "--out", str(out), "--card", "--quiet"]
    monkeypatch.setattr(sys, "argv", ["hookedmlp", *argv])  # as the console script sees it
    assert main(argv) == 0
    stdout, stderr = capsys.readouterr()
    assert stderr == ""  # --quiet: no progress bar
    assert tiny_mnist == ["train", "test"]
    lines = stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("test loss ") and lines[0].endswith(f"-> {out}")

    assert sorted(os.listdir(out.parent)) == ["m.json", "m.pt"]
    card = json.loads(out.with_suffix(".json").read_text())
    assert set(card) == {"name", "architecture", "settings", "command", "test_loss", "test_accuracy", "sha256"}
    assert card["name"] == "m"
    assert "784-512-512-10" in card["architecture"]
    assert card["settings"] == {"epochs": 1, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.0, "seed": 5}
    assert card["command"] == "hookedmlp " + " ".join(argv)
    assert card["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()

    model = HookedMLP.load(out)
    assert [(s.kind, s.d_in, s.d_out) for s in model.specs if s.kind == "linear"] == [
        ("linear", 784, 512), ("linear", 512, 512), ("linear", 512, 10)]
    assert model.meta["test_loss"] == card["test_loss"]
    assert model.meta["test_accuracy"] == card["test_accuracy"]
    assert model.meta["settings"] == card["settings"]
    assert model.meta["command"] == shlex.join(["hookedmlp", *argv])
    assert f"test loss {card['test_loss']:.4f}, accuracy {card['test_accuracy']:.4f}" in lines[0]
    # the reported metrics are those of the 256 test images the (patched) loader gave
    images, labels = hookedmlp.data.load_mnist("test")
    with torch.no_grad():
        logits = model(images)
    assert card["test_accuracy"] == (logits.argmax(-1) == labels).float().mean().item()


def test_train_without_card_writes_only_the_checkpoint(capsys, tmp_path, tiny_mnist):
    out = tmp_path / "m.pt"
    assert main(["train", "--epochs", "1", "--batch-size", "256", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert os.listdir(tmp_path) == ["m.pt"]
    assert HookedMLP.load(out).meta["settings"]["batch_size"] == 256


def test_train_to_a_directory_is_a_user_error(capsys, tmp_path, tiny_mnist):
    _user_error(capsys, ["train", "--epochs", "1", "--out", str(tmp_path), "--quiet"], "is a directory")
    assert os.listdir(tmp_path) == []


def test_train_interrupted_exits_130(capsys, tmp_path, monkeypatch):
    import hookedmlp.train

    def interrupted(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hookedmlp.train, "train_mlp", interrupted)
    assert main(["train", "--out", str(tmp_path / "m.pt"), "--quiet"]) == 130
    out, err = capsys.readouterr()
    assert err == "hookedmlp train: interrupted\n"
    assert not (tmp_path / "m.pt").exists()


def test_train_out_under_a_regular_file_is_a_user_error(capsys, tmp_path, tiny_mnist):
    (tmp_path / "notes.txt").write_text("a file, not a directory")
    _user_error(capsys, ["train", "--epochs", "1", "--quiet", "--out", str(tmp_path / "notes.txt" / "m.pt")], "notes.txt")


def test_train_with_a_seed_out_of_range_is_a_user_error(capsys, tmp_path, tiny_mnist):
    argv = ["train", "--epochs", "1", "--quiet", "--seed", str(2**64), "--out", str(tmp_path / "m.pt")]
    try:
        rc = main(argv)
    except SystemExit as e:  # rejected by argparse: also fine
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1 and "seed" in err


def test_train_card_never_overwrites_the_checkpoint(capsys, tmp_path, tiny_mnist):
    out = tmp_path / "m.json"
    rc = main(["train", "--epochs", "1", "--quiet", "--card", "--out", str(out)])
    capsys.readouterr()
    if rc == 2:  # refusing the clash is an acceptable fix
        return
    assert isinstance(HookedMLP.load(out), HookedMLP)


def test_train_records_the_command_it_was_given(capsys, tmp_path, tiny_mnist, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest", "-q", "tests/test_cli.py"])
    out = tmp_path / "m.pt"
    argv = ["train", "--epochs", "1", "--seed", "5", "--out", str(out), "--card", "--quiet"]
    assert main(argv) == 0
    capsys.readouterr()
    assert json.loads(out.with_suffix(".json").read_text())["command"] == "hookedmlp " + " ".join(argv)
    assert HookedMLP.load(out).meta["command"] == shlex.join(["hookedmlp", *argv])
