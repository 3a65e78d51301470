"""The command line's promises under stress (issue 21, items 8 and 11): huge sizes, contradictory outputs,
memory errors, warnings and Ctrl-C each give one line and an exit status, never a traceback."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import hookedmlp.train
import hookedmlp_cli.commands as commands
from hookedmlp import HookedMLP, MLPConfig
from hookedmlp.data.labelled import DataWarning
from hookedmlp.errors import warn
from hookedmlp_cli.commands import main


@pytest.fixture
def no_data(monkeypatch):
    """Fail if the command gets as far as loading MNIST: every check must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("MNIST was loaded before the check")

    monkeypatch.setattr(hookedmlp.train, "load_mnist", refuse)


@pytest.mark.parametrize(
    "flags, start",
    [
        (["--hidden", "100000000"], "a 784-100000000-10 MLP, relu needs 297.7 GiB (319,600,003,216 bytes)"),
        (["--arch", "residual", "--d-model", "100000000"], "a residual MLP, d_model 100000000, 2 blocks of d_mlp 512"),
        (["--arch", "residual", "--blocks", "100000"], "a residual MLP, d_model 256, 100000 blocks of d_mlp 512"),
        (["--arch", "lenet", "--channels", "100000", "100000"], "a LeNet-5-style CNN, channels 100000-100000, relu"),
    ],
)
def test_huge_sizes_are_one_line_before_anything_is_allocated(tmp_path, capsys, monkeypatch, no_data, flags, start):
    monkeypatch.setenv("HOOKEDMLP_MAX_BYTES", "4G")
    assert main(["train", "--out", str(tmp_path / "m.pt"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hookedmlp train: error: {start}") and err.count("\n") == 1
    assert "above hookedmlp's memory budget of 4.0 GiB (HOOKEDMLP_MAX_BYTES=4G); use smaller widths" in err
    assert os.listdir(tmp_path) == []


def test_a_training_run_over_the_budget_is_refused_naming_the_batch(tmp_path, capsys, monkeypatch, no_data):
    monkeypatch.setenv("HOOKEDMLP_MAX_BYTES", "20M")  # the default MLP fits; training it in batches of 4096 does not
    assert main(["train", "--out", str(tmp_path / "m.pt"), "--batch-size", "4096"]) == 2
    assert capsys.readouterr().err.startswith(
        "hookedmlp train: error: training a 784-512-512-10 MLP, relu in batches of 4096 needs 163.0 MiB (170,950,816 "
        "bytes)"
    )


def test_a_card_for_stdout_is_refused_before_training(capsys, no_data):
    """Before: a full epoch trained, the checkpoint went to stdout, and only then did the card fail."""
    assert main(["train", "--out", "-", "--card"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "hookedmlp train: error: a card records the sha256 of the checkpoint file, which a stream ('-') cannot give "
        "back; write the checkpoint to a file, or drop the card\n"
    )


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
            "allocate 313600000000 bytes. Error code 12 (Cannot allocate memory)"
        ),
    ],
    ids=["MemoryError", "allocator"],
)
def test_an_out_of_memory_error_that_gets_through_is_one_line(capsys, monkeypatch, error):
    def command(args):
        raise error

    monkeypatch.setitem(commands._COMMANDS, "hooks", command)
    assert main(["hooks"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hookedmlp hooks: error: out of memory (") and err.count("\n") == 1
    assert err.endswith(
        "); use smaller sizes, or lower HOOKEDMLP_MAX_BYTES so that hookedmlp refuses such sizes before allocating\n"
    )


def test_other_runtime_errors_are_not_disguised(monkeypatch):
    def command(args):
        raise RuntimeError("a bug")

    monkeypatch.setitem(commands._COMMANDS, "hooks", command)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["hooks"])


def test_a_warning_is_one_line_without_its_source_line(capsys, monkeypatch):
    def command(args):
        warn("class labels are resolved through MNIST's train images", DataWarning)
        return 0

    monkeypatch.setitem(commands._COMMANDS, "hooks", command)
    assert main(["hooks"]) == 0
    assert (
        capsys.readouterr().err == "hookedmlp hooks: warning: class labels are resolved through MNIST's train images\n"
    )


def test_a_real_data_warning_from_grid_is_one_line(tmp_path, capsys):
    torch.manual_seed(0)
    HookedMLP(MLPConfig(d_hidden=(8,))).save(tmp_path / "m.pt")  # meta does not say MNIST
    assert main(["grid", "--checkpoint", str(tmp_path / "m.pt"), "--hook", "layer1.post", "--json", "-"]) == 0
    status, warning = capsys.readouterr().err.splitlines()  # what it scores, then the warning: one line each
    assert status.startswith("hookedmlp grid: scoring 90 a - b vectors at layer1.post")
    assert warning.startswith("hookedmlp grid: warning: class labels are resolved through MNIST's train images")
    assert "return run(args, argv)" not in warning


def test_grid_blames_the_hook_the_user_asked_for(capsys):
    """Before: the vector added at layer3.post was reported at layer4.post, where the engine had folded it."""
    assert main(["grid", "--hook", "layer3.post", "--coeff", "1e37"]) == 2
    status, err = capsys.readouterr().err.splitlines()  # what it scores, then the error: one line each
    assert status.startswith("hookedmlp grid: scoring") and err.startswith("hookedmlp grid: error: the vector for ")
    assert "added at layer3.post with coeff 1e+37 makes the logits overflow torch.float32 (inf or NaN)" in err
    assert "layer4" not in err


def _torch_loaded(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc to see the import under way")
def test_ctrl_c_during_the_torch_import_exits_130_in_one_line():
    """Before: a raw KeyboardInterrupt traceback and exit -2. The signal is sent once torch's libraries are mapped,
    that is, in the middle of the import. (The console script, as a user runs it: ``python -m hookedmlp`` imports
    the hookedmlp package, and so torch, before any of the command's code runs.)"""
    for _ in range(3):  # on a loaded machine this process may not run again before the command has finished
        proc = subprocess.Popen(
            [sys.executable, "-m", "hookedmlp_cli.main", "hooks"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # as at a terminal: a shell's background job (a CI runner's, say) starts with SIGINT ignored, and
            # an ignored signal stays ignored across exec, so Python would never raise KeyboardInterrupt
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        deadline = time.monotonic() + 60
        while not _torch_loaded(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if proc.poll() is None:
            break
        proc.communicate(timeout=60)  # finished before the signal could be sent: nothing was tested; again
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.count("\n") == 1
    assert err in (
        "hookedmlp hooks: interrupted before it started; nothing was written\n",
        "hookedmlp hooks: interrupted; no file was left half-written\n",  # a fast machine: the import had finished
    )
