"""The ``hookedmlp`` command line, called in-process through ``hookedmlp_cli.commands.main`` (plus runs of the installed
console script and ``python -m hookedmlp``). User mistakes must give exit status 2 and one line on stderr, never a
traceback, and everything a command writes is checked before it computes."""

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
from _fs import full_dir, readonly_dir

import hookedmlp
import hookedmlp.train
import hookedmlp_cli.commands
from hookedmlp import HookedMLP, MLPConfig, load
from hookedmlp.data import load_mnist
from hookedmlp_cli.commands import figure_target, main

HOOKS = [f"layer{i}.{side}" for i in range(5) for side in ("pre", "post")]
SHAPES = {"layer0.pre": "[batch, 784]", "layer4.post": "[batch, 10]", **{h: "[batch, 512]" for h in HOOKS[1:-1]}}
REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny_mnist(monkeypatch):
    """``train``'s MNIST cut to 512 train / 256 test images, so ``train`` takes a second; records the calls."""
    calls = []

    def load(split="train", root=None, device=None):
        calls.append(split)
        images, labels = load_mnist(split)
        n = 512 if split == "train" else 256
        return images[:n], labels[:n]

    monkeypatch.setattr(hookedmlp.train, "load_mnist", load)
    return calls


@pytest.fixture
def small_ckpt(tmp_path) -> Path:
    """A valid checkpoint of a 16-8-3 model (not the 784-input MNIST architecture)."""
    torch.manual_seed(0)
    path = tmp_path / "small.pt"
    HookedMLP(MLPConfig(d_in=16, d_hidden=(8,), d_out=3)).save(path)
    return path


@pytest.fixture(scope="module")
def f64_ckpt(tmp_path_factory) -> Path:
    """A float64 checkpoint of a small model of the study's shape (784-16-16-10), recorded as MNIST-trained."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = HookedMLP(MLPConfig(d_hidden=(16, 16))).double()
    model.meta = {"dataset": "mnist"}
    path = tmp_path_factory.mktemp("f64") / "f64.pt"
    model.save(path)
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
        assert needle in lines[0], lines[0]
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
        assert needle in lines[0], lines[0]
    return lines[0]


# -- hooks -------------------------------------------------------------------------------------


def test_hooks_lists_the_ten_hook_points_with_shapes(capsys):
    assert main(["hooks"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
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
    assert "[batch, 16]" in lines[0] and "[batch, 3]" in lines[-1]


def test_python_m_runs_the_command():
    proc = subprocess.run(
        [sys.executable, "-m", "hookedmlp", "hooks"], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert [line.split()[0] for line in proc.stdout.splitlines()] == HOOKS


def test_the_console_script_exits_quietly_on_a_closed_pipe():
    """``hookedmlp hooks | head -1``: the reader is gone; no message, the shell's usual status for SIGPIPE."""
    script = shutil.which(
        "hookedmlp", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    )
    assert script, "the hookedmlp console script is not installed"
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.run([script, "hooks"], stdout=w, stderr=subprocess.PIPE, text=True, timeout=120, cwd=REPO)
    finally:
        os.close(w)
    assert (proc.returncode, proc.stderr) == (141, "")


# -- --help and --version ------------------------------------------------------------------------

FAST_HELP = """
import sys
from hookedmlp_cli.main import main
for argv in (["--help"], ["--version"], ["train", "--help"], ["grid", "--help"]):
    try:
        main(argv)
    except SystemExit as e:
        assert e.code == 0, (argv, e.code)
print("torch imported:", "torch" in sys.modules, "hookedmlp imported:", "hookedmlp" in sys.modules, file=sys.stderr)
"""


def test_help_and_version_answer_without_importing_torch():
    proc = subprocess.run([sys.executable, "-c", FAST_HELP], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[-1] == "torch imported: False hookedmlp imported: False"
    assert f"hookedmlp {hookedmlp.__version__}\n" in proc.stdout


def _console_script() -> str:
    script = shutil.which(
        "hookedmlp", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    )
    assert script, "the hookedmlp console script is not installed"
    return script


@pytest.mark.parametrize("entry", ["python -m hookedmlp", "hookedmlp"])
def test_both_entry_points_answer_help_without_importing_torch(entry, tmp_path):
    """``python -m hookedmlp`` imports the package ``hookedmlp`` first: its ``__init__`` must not import torch.

    ``-X importtime`` lists every module the real entry point imported (not a simulation of it).
    """
    argv = [sys.executable, "-m", "hookedmlp"] if entry.startswith("python") else [sys.executable, _console_script()]
    argv[1:1] = ["-X", "importtime"]
    proc = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: hookedmlp"), proc.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "hookedmlp_cli.parser" in imported
    assert not {
        m for m in imported if m.split(".")[0] in ("torch", "numpy", "plotly", "analysis", "hookedmlp_analysis")
    }


def test_the_package_imports_its_names_on_first_use():
    """``import hookedmlp`` is light; ``from hookedmlp import X``, ``__all__`` and ``dir`` still list every name."""
    code = (
        "import sys, hookedmlp; before = 'torch' in sys.modules; from hookedmlp import HookedMLP, load; "
        "print(before, HookedMLP.__module__, load.__name__, hookedmlp.data.load_mnist.__name__, "
        "set(hookedmlp.__all__) <= set(dir(hookedmlp)))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.stdout.split() == ["False", "hookedmlp.models.chain", "load_checkpoint", "load_mnist", "True"]
    assert [getattr(hookedmlp, name) for name in hookedmlp.__all__]  # every exported name resolves
    with pytest.raises(AttributeError, match="has no attribute 'HookedMPL'"):
        hookedmlp.HookedMPL


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"hookedmlp {hookedmlp.__version__}\n"


def _actions(parser):
    """Every (command, action) of the parser, subcommands included."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from ((name, a) for a in sub._actions if not isinstance(a, argparse._HelpAction))
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield "", action


def test_every_flag_has_help_text_showing_its_default():
    from hookedmlp_cli.parser import build_parser

    missing = [
        f"{command} {action.option_strings}"
        for command, action in _actions(build_parser())
        if action.option_strings and "(default: " not in (action.help or "")
    ]
    assert missing == []


def test_help_lists_every_command_and_explains_the_metrics(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "hooks", "reproduce", "grid", "sweep"):
        assert command in out
    with pytest.raises(SystemExit):
        main(["grid", "--help"])
    grid_help = " ".join(capsys.readouterr().out.split())
    assert "flip_rate: share of the test images of b classified as a" in grid_help


def test_the_parser_choices_mirror_the_library():
    from hookedmlp.models.configs import ACTIVATIONS, NORMS
    from hookedmlp_analysis.metrics import METRICS
    from hookedmlp_cli import parser

    assert parser.ACTIVATIONS == tuple(ACTIVATIONS)
    assert parser.NORMS == NORMS
    assert parser.METRICS == {name: m.title for name, m in METRICS.items()}
    from hookedmlp_analysis.family import VARIANTS

    assert parser.VARIANTS == tuple(v.slug for v in VARIANTS)


# -- argument errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["train", "--epochs", "0"], "argument --epochs: expected a positive integer, got 0"),
        (["train", "--epochs", "-3"], "expected a positive integer, got -3"),
        (["train", "--epochs", "two"], "expected a positive integer, got 'two'"),
        (["train", "--batch-size", "0"], "argument --batch-size: expected a positive integer"),
        (["train", "--lr", "abc"], "argument --lr: expected a positive number, got 'abc'"),
        (["train", "--lr", "0"], "expected a positive finite number, got 0"),
        (["train", "--lr", "inf"], "expected a positive finite number"),
        (["train", "--lr", "nan"], "expected a positive finite number"),
        (["train", "--seed", "1.5"], "argument --seed: expected an integer seed, got '1.5'"),
        (["train", "--dropout", "1"], "argument --dropout: expected a number in [0, 1), got 1"),
        (["train", "--weight-decay", "-1"], "argument --weight-decay: expected a finite number >= 0, got -1"),
        (["train", "--hidden"], "argument --hidden: expected at least one argument"),
        (["train", "--hidden", "0"], "argument --hidden: expected a positive integer, got 0"),
        (["train", "--arch", "cnn"], "argument --arch: invalid choice: 'cnn' (choose from 'mlp', 'lenet', 'residual')"),
        (
            ["train", "--activation", "swish"],
            "argument --activation: invalid choice: 'swish' (choose from 'relu', 'gelu'",
        ),
        (
            ["train", "--norm", "rms"],
            "argument --norm: invalid choice: 'rms' (choose from 'none', 'layernorm', 'batchnorm')",
        ),
        (["sweep", "--a", "12"], "argument --a: expected a digit 0-9, got '12'"),
        (["grid", "--coeff", "nan"], "argument --coeff: expected a finite number"),
        (["grid", "--metric", "mse"], "argument --metric: invalid choice: 'mse'"),
    ],
)
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
    ckpt["state_dict"]["layer0.module.weight"] = torch.zeros(8, 15)
    path = tmp_path / "edited.pt"
    torch.save(ckpt, path)
    _user_error(capsys, ["hooks", "--checkpoint", str(path)], "does not match the architecture", "shape mismatches")


def test_a_json_card_passed_as_checkpoint_is_not_called_unsafe(capsys, tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"name": "m", "sha256": "0" * 64}, indent=2))
    line = _user_error(capsys, ["hooks", "--checkpoint", str(path)], str(path), "is not a file written by torch.save")
    assert "could run code" not in line and "weights_only=False" not in line


@pytest.mark.parametrize("command", ["grid", "sweep"])
def test_grid_and_sweep_refuse_a_model_that_is_not_for_mnist(capsys, small_ckpt, command):
    _user_error(capsys, [command, "--checkpoint", str(small_ckpt)], "scores MNIST digits", "[1, 4, 4]", "d_in=784")


# -- float64 checkpoints: the CLI's inputs follow the model's dtype -------------------------------------


def test_a_float64_checkpoint_works_in_every_command(capsys, f64_ckpt, tmp_path):
    assert main(["hooks", "--checkpoint", str(f64_ckpt)]) == 0
    assert "[batch, 784]" in capsys.readouterr().out
    assert main(["sweep", "--checkpoint", str(f64_ckpt), "--json", str(tmp_path / "s.json")]) == 0
    assert "| layer0.post |" in capsys.readouterr().out
    assert main(["grid", "--checkpoint", str(f64_ckpt), "--metric", "flip_rate"]) == 0
    assert "GridResult(layer0.post" in capsys.readouterr().out
    assert (
        main(["reproduce", "--quick", "--no-figures", "--checkpoint", str(f64_ckpt), "--out", str(tmp_path / "r")]) == 0
    )
    assert (tmp_path / "r" / "reproduction.md").is_file()
    capsys.readouterr()
    model32 = HookedMLP.load(f64_ckpt).float()
    model32.meta = {"dataset": "mnist"}
    model32.save(tmp_path / "f32.pt")
    assert main(["sweep", "--checkpoint", str(tmp_path / "f32.pt"), "--json", str(tmp_path / "s32.json")]) == 0
    capsys.readouterr()
    got, want = (json.loads((tmp_path / n).read_text())["metrics"] for n in ("s.json", "s32.json"))
    for name in want:  # the same model in float32 and float64: the same numbers, to float32 rounding
        assert got[name] == pytest.approx(want[name], abs=2e-3), name


# -- numbers the model's dtype cannot hold ---------------------------------------------------------


def test_grid_refuses_a_coefficient_beyond_the_dtype_before_computing(capsys, monkeypatch):

    monkeypatch.setattr(hookedmlp_cli.commands, "steering_grid", lambda *a, **k: pytest.fail("the grid was computed"))
    _user_error(
        capsys,
        ["grid", "--coeff", "1e308"],
        "--coeff 1e+308 is beyond the model's torch.float32 range",
        "largest finite 3.403e+38",
        "use a smaller --coeff",
    )
    _user_error(capsys, ["sweep", "--coeff=-1e39"], "--coeff -1e+39 is beyond the model's torch.float32 range")


def test_train_refuses_a_learning_rate_out_of_range_before_loading_data(capsys, tmp_path, tiny_mnist):
    _user_error(
        capsys,
        ["train", "--lr", "1e300", "--out", str(tmp_path / "m.pt")],
        "lr must be finite and in (0, 10], got 1e+300",
    )
    assert tiny_mnist == [] and list(tmp_path.iterdir()) == []


# -- contradicting flags ---------------------------------------------------------------------------


def test_sweep_with_a_equal_to_b(capsys):
    _user_error(capsys, ["sweep", "--a", "3", "--b", "3"], "--a and --b are both 3")


def test_reproduce_with_train_and_checkpoint(capsys, small_ckpt):
    _user_error(capsys, ["reproduce", "--train", "--checkpoint", str(small_ckpt)], "exclude each other")


def test_grid_with_an_unknown_hook(capsys):
    _user_error(capsys, ["grid", "--hook", "layer9.post"], "layer9.post", "did you mean 'layer4.post'")


# -- outputs: checked before computing; --json -; --figure ------------------------------------------


def test_reproduce_into_a_read_only_directory_fails_before_computing(capsys, tmp_path, monkeypatch):

    monkeypatch.setattr(hookedmlp_cli.commands, "reproduce", lambda **k: pytest.fail("the study was run"))
    with readonly_dir(tmp_path / "ro") as ro:
        _user_error(capsys, ["reproduce", "--out", str(ro)], f"the directory '{ro}' is not writable")
        _user_error(capsys, ["reproduce", "--out", str(ro / "new")], f"the directory '{ro}' is not writable")


def test_train_into_a_read_only_directory_fails_before_loading_data(capsys, tmp_path, tiny_mnist):
    with readonly_dir(tmp_path / "ro") as ro:
        _user_error(capsys, ["train", "--epochs", "1", "--quiet", "--out", str(ro / "m.pt")], "is not writable")
    (tmp_path / "m.json").write_text("{}")
    (tmp_path / "m.json").chmod(0o444)  # the card's target too
    _user_error(
        capsys,
        ["train", "--epochs", "1", "--quiet", "--card", "--out", str(tmp_path / "m.pt")],
        f"cannot write '{tmp_path / 'm.json'}': the file is read-only",
    )
    assert tiny_mnist == []


def test_grid_and_sweep_outputs_are_checked_before_computing(capsys, tmp_path, monkeypatch):

    monkeypatch.setattr(hookedmlp_cli.commands, "layer_sweep", lambda *a, **k: pytest.fail("the sweep was computed"))
    (tmp_path / "notes.txt").write_text("a file")
    _user_error(
        capsys,
        ["sweep", "--json", str(tmp_path / "notes.txt" / "s.json")],
        "'" + str(tmp_path / "notes.txt") + "' is a file",
    )
    (tmp_path / "fig.png").write_text("old")
    (tmp_path / "fig.png").chmod(0o444)
    _user_error(capsys, ["sweep", "--figure", str(tmp_path / "fig")], "fig.png': the file is read-only")


def test_train_on_a_full_disk_says_no_space_and_keeps_the_old_file(capsys, tmp_path, tiny_mnist):
    with full_dir(tmp_path / "disk", size="256k", fill=False) as disk:
        out = disk / "m.pt"
        torch.manual_seed(0)
        HookedMLP(MLPConfig(d_in=784, d_hidden=(8,), d_out=10)).save(out)  # a small earlier run (~26 KB)
        before = out.read_bytes()
        line = _user_error(capsys, ["train", "--epochs", "1", "--batch-size", "512", "--quiet", "--out", str(out)])
        fix = "free some space or choose another path"
        assert line == f"hookedmlp train: error: no space left writing {out} (old file kept); {fix}"
        assert out.read_bytes() == before
        assert sorted(p.name for p in disk.iterdir()) == ["m.pt"]
    assert tiny_mnist == ["train", "test"]  # it trained, then the 2.7 MB checkpoint did not fit


def test_json_dash_prints_the_json_alone(capsys):
    assert main(["sweep", "--json", "-"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert data["a"] == 3 and data["b"] == 1 and len(data["hooks"]) == 10
    assert err == ""


@pytest.mark.parametrize(
    ("given", "stem", "formats"),
    [
        ("x.html", "x", ("html",)),
        ("x.png", "x", ("png",)),
        ("out/x.svg", "out/x", ("svg",)),
        ("x.HTML", "x", ("html",)),
        ("x", "x", ("html", "png")),
        ("grid_layer0.post", "grid_layer0.post", ("html", "png")),
        ("x.json", "x.json", ("html", "png")),
    ],
)
def test_figure_paths_with_a_known_extension_mean_that_format(given, stem, formats):
    assert figure_target(Path(given)) == (Path(stem), formats)


def test_grid_digits_and_n_test_choose_the_cells_and_the_scoring_set(capsys, tmp_path):
    argv = ["grid", "--digits", "3", "1", "7", "--n-test", "300", "--metric", "flip_rate"]
    assert main([*argv, "--json", str(tmp_path / "g.json")]) == 0
    out, err = capsys.readouterr()
    assert err == "hookedmlp grid: scoring 6 a - b vectors at layer0.post on 300 test images\n"
    lines = out.splitlines()
    assert lines[2] == "| a \\ b | 3 | 1 | 7 |" and lines[-2].startswith("Normal (the study's name): the unsteered")
    grid = json.loads((tmp_path / "g.json").read_text())
    assert (grid["digits"], grid["n_test"]) == ([3, 1, 7], 300)
    # cell (3, 1) in plain torch: the first Linear's output of the first training 3 minus the first 1's, added
    seq = HookedMLP.from_pretrained("mnist-mlp").to_sequential().eval()
    train_x, train_y = load_mnist("train")
    first = {d: train_x[int((train_y == d).nonzero()[0, 0])] for d in (3, 1)}
    images, labels = load_mnist("test")
    with torch.no_grad():
        linear, rest = seq[1], seq[2:]  # seq[0] flattens
        steered = rest(linear(images[:300]) + linear(first[3]) - linear(first[1]))
    ones = labels[:300] == 1
    expected = float((steered[ones].argmax(-1) == 3).float().mean())
    assert grid["metrics"]["flip_rate"][0][1] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--digits", "3", "3"], "--digits takes at least two different digits, each once; got 3 3"),
        (["--digits", "3"], "--digits takes at least two different digits, each once; got 3"),
        (["--n-test", "0"], "argument --n-test: expected a number of test images, 1 to 10000, got 0"),
        (["--n-test", "10001"], "argument --n-test: expected a number of test images, 1 to 10000, got 10001"),
    ],
)
def test_grid_refuses_bad_digits_and_n_test_in_one_line(capsys, argv, message):
    try:
        status = main(["grid", *argv])
    except SystemExit as e:  # argparse's own errors
        status = e.code
    assert status == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_figure_html_writes_that_file_only(capsys, tmp_path):
    assert main(["sweep", "--figure", str(tmp_path / "x.html")]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [
        f"wrote {tmp_path / 'plotly.min.js'}",
        f"wrote {tmp_path / 'x.html'}",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plotly.min.js", "x.html"]  # plotly.js once per folder


# -- train ---------------------------------------------------------------------------------------


def test_train_writes_a_checkpoint_and_a_card(capsys, tmp_path, tiny_mnist, monkeypatch):
    out = tmp_path / "runs" / "m.pt"
    argv = ["train", "--epochs", "1", "--seed", "5", "--out", str(out), "--card", "--quiet"]
    monkeypatch.setattr(sys, "argv", ["pytest", "-q"])  # the card records the command it was given, not sys.argv
    assert main(argv) == 0
    stdout, stderr = capsys.readouterr()
    assert stderr == ""  # --quiet: no progress bar
    assert tiny_mnist == ["train", "test"]
    lines = stdout.splitlines()
    card_path = out.with_suffix(".json")
    assert len(lines) == 1 and lines[0].startswith("test loss ") and lines[0].endswith(f"-> {out} and {card_path}")
    assert sorted(os.listdir(out.parent)) == ["m.json", "m.pt"]  # no partial file left
    card = json.loads(card_path.read_text())
    assert set(card) == {
        "name",
        "architecture",
        "recipe",
        "settings",
        "dataset",
        "command",
        "test_loss",
        "test_accuracy",
        "sha256",
    }
    assert card["name"] == "m" and card["dataset"] == "mnist" and card["architecture"] == "784-512-512-10 MLP, relu"
    assert card["recipe"] == {
        "kind": "mlp",
        "d_in": 784,
        "d_hidden": [512, 512],
        "d_out": 10,
        "activation": "relu",
        "dropout": 0.0,
        "norm": "none",
        "bias": True,
    }
    assert card["settings"] == {
        "epochs": 1,
        "batch_size": 128,
        "lr": 1e-3,
        "weight_decay": 0.0,
        "seed": 5,
        "threads": 1,
        "target_loss": None,
        "check_every": 50,
    }
    assert card["command"] == shlex.join(["hookedmlp", *argv])
    assert card["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    model = HookedMLP.load(out)
    assert [(m.in_features, m.out_features) for m in model.to_sequential() if isinstance(m, torch.nn.Linear)] == [
        (784, 512),
        (512, 512),
        (512, 10),
    ]
    assert (model.meta["test_loss"], model.meta["test_accuracy"]) == (card["test_loss"], card["test_accuracy"])
    assert f"test loss {card['test_loss']:.4f}, accuracy {card['test_accuracy']:.4f}" in lines[0]
    images, labels = load_mnist("test")
    with torch.no_grad():
        logits = model(images[:256])
    assert card["test_accuracy"] == (logits.argmax(-1) == labels[:256]).float().mean().item()


def test_train_without_card_writes_only_the_checkpoint(capsys, tmp_path, tiny_mnist):
    out = tmp_path / "m.pt"
    assert main(["train", "--epochs", "1", "--batch-size", "256", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert os.listdir(tmp_path) == ["m.pt"]
    assert HookedMLP.load(out).meta["settings"]["batch_size"] == 256


def test_train_to_a_directory_is_a_user_error(capsys, tmp_path, tiny_mnist):
    _user_error(capsys, ["train", "--epochs", "1", "--out", str(tmp_path), "--quiet"], "is a directory")
    assert os.listdir(tmp_path) == [] and tiny_mnist == []


def test_train_interrupted_before_training_exits_130(capsys, tmp_path, monkeypatch):
    import hookedmlp_cli.commands

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hookedmlp_cli.commands, "train_model", interrupted)
    assert main(["train", "--out", str(tmp_path / "m.pt"), "--quiet"]) == 130
    assert capsys.readouterr().err == "hookedmlp train: interrupted; no file was left half-written\n"
    assert not (tmp_path / "m.pt").exists()


def test_train_out_under_a_regular_file_is_a_user_error(capsys, tmp_path, tiny_mnist):
    (tmp_path / "notes.txt").write_text("a file, not a directory")
    _user_error(
        capsys,
        ["train", "--epochs", "1", "--quiet", "--out", str(tmp_path / "notes.txt" / "m.pt")],
        f"'{tmp_path / 'notes.txt'}' is a file, not a directory",
    )


def test_train_with_a_seed_out_of_range_is_a_usage_error(capsys, tmp_path):
    _usage_error(capsys, ["train", "--seed", str(2**64), "--out", str(tmp_path / "m.pt")], "a seed in [0, 2**63)")


def test_train_card_never_overwrites_the_checkpoint(capsys, tmp_path, tiny_mnist):
    _user_error(
        capsys,
        ["train", "--epochs", "1", "--quiet", "--card", "--out", str(tmp_path / "m.json")],
        "--card would write the card over the checkpoint",
    )
    assert tiny_mnist == []


def test_train_stops_at_a_target_loss(tmp_path, tiny_mnist):
    from hookedmlp_cli.commands import main

    out = tmp_path / "m.pt"
    argv = ["train", "--epochs", "20", "--target-loss", "100", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    model = load(out)
    # 512 images in batches of 128: 4 steps an epoch; the first check, at step 50, falls in epoch 13 and stops there
    assert len(model.meta["history"]) == 13 and model.meta["settings"]["target_loss"] == 100.0
    with pytest.raises(SystemExit) as info:
        main(["train", "--target-loss", "0", "--out", str(out)])
    assert info.value.code == 2
