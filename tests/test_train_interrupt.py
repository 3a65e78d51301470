"""Ctrl-C during training keeps the previous checkpoint and its card, and says what was kept (issue 11, item 2).

The main test sends SIGINT to a real ``hookedmlp train`` process (``python -m hookedmlp``,
this worktree's code) once it has finished an epoch; the others interrupt ``train_model``
in-process at chosen moments.
"""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import hookedmlp.train
from hookedmlp import HookedMLP, MLPConfig
from hookedmlp.train import TrainingInterrupted, TrainSettings, train_model
from hookedmlp_cli.commands import main

REPO = Path(__file__).resolve().parents[1]
SMALL = MLPConfig(d_in=784, d_hidden=(8,), d_out=10)


def _previous_run(tmp_path: Path) -> tuple[Path, Path, bytes, bytes]:
    """A finished earlier run: m.pt and its card m.json."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 784, generator=g), torch.arange(64) % 10
    out, card = tmp_path / "m.pt", tmp_path / "m.json"
    train_model(
        SMALL,
        TrainSettings(epochs=1, batch_size=64),
        out=out,
        card=card,
        data=(x, y, x, y),
        progress=False,
        command="an earlier run",
    )
    return out, card, out.read_bytes(), card.read_bytes()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
def test_sigint_to_a_real_train_process_keeps_the_previous_checkpoint_and_card(tmp_path):
    out, card, out_before, card_before = _previous_run(tmp_path)
    partial = tmp_path / "m.partial.pt"
    argv = [
        sys.executable,
        "-m",
        "hookedmlp",
        "train",
        "--hidden",
        "8",
        "--batch-size",
        "4096",
        "--epochs",
        "1000",
        "--out",
        str(out),
        "--card",
        "--quiet",
    ]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not partial.exists():  # the first epoch is done: training is under way
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no epoch finished in time"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert stdout == ""
    found = re.fullmatch(
        rf"hookedmlp train: interrupted after (\d+) of 1000 epochs: {re.escape(str(out))} and "
        rf"{re.escape(str(card))} kept as they were; epoch (\d+) is in {re.escape(str(partial))}\n",
        stderr,
    )
    assert found, stderr
    done, saved = int(found.group(1)), int(found.group(2))
    assert 1 <= saved <= done < 1000
    assert out.read_bytes() == out_before and card.read_bytes() == card_before  # byte for byte
    assert json.loads(card_before)["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()  # still agree
    progress = HookedMLP.load(partial)
    assert len(progress.meta["history"]) == saved and progress.meta["settings"]["epochs"] == 1000
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "m.json",
        "m.partial.pt",
        "m.pt",
    ]


def _interrupt_at(monkeypatch, calls: int) -> None:
    """Raise KeyboardInterrupt at the ``calls``-th evaluate (the end of an epoch)."""
    real = hookedmlp.train.evaluate
    seen = []

    def evaluate(*args, **kwargs):
        seen.append(1)
        if len(seen) == calls:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(hookedmlp.train, "evaluate", evaluate)


def _data():
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(32, 784, generator=g), torch.arange(32) % 10
    return x, y, x, y


def test_interrupt_in_the_first_epoch_writes_nothing(tmp_path, monkeypatch):
    _interrupt_at(monkeypatch, 1)
    with pytest.raises(TrainingInterrupted) as info:
        train_model(
            SMALL,
            TrainSettings(epochs=3, batch_size=16),
            out=tmp_path / "m.pt",
            card=tmp_path / "m.json",
            data=_data(),
            progress=False,
        )
    assert (
        str(info.value) == f"interrupted after 0 of 3 epochs: {tmp_path / 'm.pt'} and {tmp_path / 'm.json'} not written"
    )
    assert list(tmp_path.iterdir()) == []
    assert isinstance(info.value, KeyboardInterrupt)


def test_interrupt_later_names_the_kept_files_and_the_progress_file(tmp_path, monkeypatch):
    out, card, out_before, card_before = _previous_run(tmp_path)
    _interrupt_at(monkeypatch, 3)
    with pytest.raises(TrainingInterrupted) as info:
        train_model(SMALL, TrainSettings(epochs=5, batch_size=16), out=out, card=card, data=_data(), progress=False)
    assert str(info.value) == (
        f"interrupted after 2 of 5 epochs: {out} and {card} kept as they were; epoch 2 is in "
        f"{tmp_path / 'm.partial.pt'}"
    )
    assert out.read_bytes() == out_before and card.read_bytes() == card_before


def test_interrupt_without_out(monkeypatch):
    _interrupt_at(monkeypatch, 2)
    with pytest.raises(TrainingInterrupted, match=r"^interrupted after 1 of 2 epochs: nothing was written$"):
        train_model(SMALL, TrainSettings(epochs=2, batch_size=16), data=_data(), progress=False)


def test_the_cli_prints_what_was_kept_and_exits_130(tmp_path, monkeypatch, capsys):
    out, card, out_before, card_before = _previous_run(tmp_path)
    monkeypatch.setattr(hookedmlp.train, "load_mnist", lambda split, root=None: _data()[:2])
    _interrupt_at(monkeypatch, 2)
    assert main(["train", "--hidden", "8", "--batch-size", "16", "--out", str(out), "--card", "--quiet"]) == 130
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"hookedmlp train: interrupted after 1 of 6 epochs: {out} and {card} kept as they were; "
        f"epoch 1 is in {tmp_path / 'm.partial.pt'}\n"
    )
    assert out.read_bytes() == out_before and card.read_bytes() == card_before


def test_ctrl_c_while_the_files_are_replaced_is_held_until_both_are_written(tmp_path, monkeypatch):
    """The checkpoint and its card are replaced with SIGINT held, so they never describe different runs."""
    out, card = tmp_path / "m.pt", tmp_path / "m.json"
    real = hookedmlp.train.write_card

    def write_card(checkpoint, card_path):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C between the checkpoint and the card
        return real(checkpoint, card_path)

    monkeypatch.setattr(hookedmlp.train, "write_card", write_card)
    train_model(SMALL, TrainSettings(epochs=1, batch_size=16), out=out, card=card, data=_data(), progress=False)
    assert json.loads(card.read_text())["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
