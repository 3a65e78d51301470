"""train_model's inputs and outputs (issue 21, items 1, 2, 4 and 12): the data are checked with the labelled API's
one check before anything trains; no file is replaced by a run that diverged, and no partial file is overwritten;
the weights do not depend on the caller's thread count."""

import math
import os
import re

import pytest
import torch
import torch.nn.functional as F

import hookedmlp.train
from hookedmlp import (
    ArgumentTypeError,
    HookedMLP,
    InputDtypeError,
    MLPConfig,
    ShapeError,
    UsageError,
)
from hookedmlp.train import TrainingDiverged, TrainSettings, platform, train_model

CFG = MLPConfig(d_in=16, d_hidden=(8,), d_out=3)
SETTINGS = TrainSettings(epochs=2, batch_size=32)

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n_train=96, n_test=48):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_test, 16, generator=g)
    y = x[:, :3].argmax(-1)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


@pytest.fixture
def no_training(monkeypatch):
    """Fail if a single training step runs: every check must come first."""

    def step(*args, **kwargs):
        raise AssertionError("a training step ran before the data were checked")

    monkeypatch.setattr(F, "cross_entropy", step)


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# -- the data, checked at the entry point --------------------------------------------------------------------

x, y, tx, ty = _data()
BAD_DATA = {
    "float labels": (
        (x, y.float(), tx, ty),
        ShapeError,
        "labels must be a 1-D integer tensor of class numbers, got dtype torch.float32, shape [96]; convert "
        "whole-number labels with labels.long()",
    ),
    "one-hot labels": (
        (x, F.one_hot(y, 3), tx, ty),
        ShapeError,
        "labels must be a 1-D integer tensor of class numbers, got dtype torch.int64, shape [96, 3]; for one-hot "
        "labels pass labels.argmax(1)",
    ),
    "labels >= d_out": (
        (x, torch.where(y == 2, 3, y), tx, ty),
        ShapeError,
        "training data: labels must be class numbers below 3 (the model's 3 outputs), got [3]",
    ),
    "negative labels (cross_entropy ignores -100)": (
        (x, torch.where(y == 2, -100, y), tx, ty),
        ShapeError,
        "labels must be class numbers >= 0, got [-100]",
    ),
    "mismatched lengths": (
        (x, y[:-1], tx, ty),
        ShapeError,
        "training data needs one label per example and at least one example; got 96 examples, 95 labels",
    ),
    "a 3-tuple": ((x, y, tx), ArgumentTypeError, "data must be (train_x, train_y, test_x, test_y), got a tuple of 3"),
    "not a tuple": (x, ArgumentTypeError, "data must be (train_x, train_y, test_x, test_y), got Tensor"),
    "an empty test set": (
        (x, y, tx[:0], ty[:0]),
        ShapeError,
        "test data needs one label per example and at least one example; got 0 examples, 0 labels",
    ),
    "a NaN training image": (
        (torch.where(torch.arange(96)[:, None] == 7, float("nan"), x), y, tx, ty),
        UsageError,
        "training images contain NaN or infinite values (in 1 of 96 examples, the first at row 7); drop or fix those "
        "rows",
    ),
    "integer images": (
        ((x * 100).long(), y, tx, ty),
        InputDtypeError,
        "training images have dtype torch.int64; expected floating point (pixels in [0, 1]): convert with "
        "images.float() / 255",
    ),
    "test images of another shape": (
        (x, y, tx[:, :15], ty),
        ShapeError,
        "test images: expected input of shape [batch, 16] or [batch, 1, 4, 4] or [batch, 4, 4], got [48, 15]",
    ),
    "float64 images for a float32 model": (
        (x.double(), y, tx.double(), ty),
        InputDtypeError,
        "training images: input dtype torch.float64 does not match the model's torch.float32",
    ),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_is_refused_before_training_and_writes_nothing(tmp_path, no_training, case):
    data, error, message = BAD_DATA[case]
    with pytest.raises(error) as info:
        train_model(CFG, SETTINGS, data=data, out=tmp_path / "m.pt", progress=False)
    assert str(info.value).startswith(message)
    assert os.listdir(tmp_path) == []


def test_numpy_arrays_and_lists_train_as_tensors_do():
    """The labelled API accepts arrays and lists of images; so does train_model, with the same result."""
    reference = train_model(CFG, SETTINGS, data=_data(), progress=False)
    arrays = train_model(CFG, SETTINGS, data=tuple(t.numpy() for t in _data()), progress=False)
    lists = train_model(CFG, SETTINGS, data=(list(x), y.tolist(), list(tx), ty.tolist()), progress=False)
    assert _same_weights(arrays.model, reference.model) and _same_weights(lists.model, reference.model)
    assert arrays.test_loss == lists.test_loss == reference.test_loss


# -- outputs: never overwrite a partial file, never replace a good file with a diverged run ---------------------


def test_an_existing_partial_file_is_refused_before_training(tmp_path, no_training):
    out, partial = tmp_path / "m.pt", tmp_path / "m.partial.pt"
    out.write_bytes(b"the previous run")
    partial.write_bytes(b"epoch 3 of an interrupted run")
    with pytest.raises(UsageError) as info:
        train_model(CFG, SETTINGS, data=_data(), out=out, progress=False)
    assert str(info.value) == (
        f"{partial} already exists (an earlier run's last finished epoch, or something else): this run would write "
        "its epochs there; move or delete it first, or choose another checkpoint path"
    )
    assert partial.read_bytes() == b"epoch 3 of an interrupted run" and out.read_bytes() == b"the previous run"


def test_a_directory_at_the_partial_path_is_refused_before_training(tmp_path, no_training):
    (tmp_path / "m.partial.pt").mkdir()
    with pytest.raises(UsageError, match="already exists"):
        train_model(CFG, SETTINGS, data=_data(), out=tmp_path / "m.pt", progress=False)


def test_a_card_for_a_stream_is_refused_before_training(tmp_path, no_training):
    with pytest.raises(UsageError) as info:
        train_model(CFG, SETTINGS, data=_data(), out="-", card=tmp_path / "m.json", progress=False)
    assert str(info.value) == (
        "a card records the sha256 of the checkpoint file, which a stream ('-') cannot give back; write the "
        "checkpoint to a file, or drop the card"
    )


def test_a_stream_gets_no_partial_file(tmp_path, monkeypatch, capsysbinary):
    monkeypatch.chdir(tmp_path)
    train_model(CFG, SETTINGS, data=_data(), out="-", progress=False)
    assert os.listdir(tmp_path) == []  # no "-.partial.pt" in the working directory
    assert capsysbinary.readouterr().out[:2] == b"PK"  # the checkpoint, on stdout


def test_a_run_that_diverges_in_its_first_epoch_replaces_nothing(tmp_path):
    """Finite inputs near float32's largest value overflow the first layer: inf - inf makes the weights NaN.
    Before, the run returned normally with test_loss=nan and replaced the checkpoint."""
    out = tmp_path / "m.pt"
    out.write_bytes(b"a good model")
    x, y, tx, ty = _data()
    with pytest.raises(TrainingDiverged) as info:
        train_model(
            CFG, TrainSettings(epochs=3, batch_size=32), data=(x.sign() * 3e38, y, tx, ty), out=out, progress=False
        )
    assert isinstance(info.value, FloatingPointError)
    message = str(info.value)
    assert re.fullmatch(
        rf"training diverged in epoch 1 of 3 \(test loss nan, \d+ weights NaN or infinite\): {re.escape(str(out))} "
        r"kept as it was; lower the learning rate \(lr=0\.001\) or check the data",
        message,
    ), message
    assert out.read_bytes() == b"a good model"
    assert sorted(os.listdir(tmp_path)) == ["m.pt"]
    result = info.value.result  # the diverged run, for inspection
    assert len(result.history) == 1 and math.isnan(result.test_loss)


def test_a_run_that_diverges_later_keeps_its_last_good_epoch(tmp_path, monkeypatch):
    """The loss goes NaN in epoch 2: out and the card are kept, epoch 1 stays in the partial file."""
    out, card = tmp_path / "m.pt", tmp_path / "m.json"
    train_model(CFG, SETTINGS, data=_data(), out=out, card=card, progress=False)
    kept = out.read_bytes(), card.read_bytes()
    real = hookedmlp.train.evaluate
    calls = []

    def nan_in_epoch_2(model, images, labels, batch_size=10_000):
        calls.append(1)
        loss, acc = real(model, images, labels, batch_size)
        return (float("nan"), acc) if len(calls) == 2 else (loss, acc)

    monkeypatch.setattr(hookedmlp.train, "evaluate", nan_in_epoch_2)
    with pytest.raises(TrainingDiverged) as info:
        train_model(CFG, TrainSettings(epochs=3, batch_size=32), data=_data(), out=out, card=card, progress=False)
    first = info.value.result.history[0]["test_loss"]
    assert str(info.value) == (
        f"training diverged in epoch 2 of 3 (test loss nan): {out} and {card} kept as they were; epoch 1 (test loss "
        f"{first:.4f}) is in {tmp_path / 'm.partial.pt'}; lower the learning rate (lr=0.001) or check the data"
    )
    assert (out.read_bytes(), card.read_bytes()) == kept
    assert len(HookedMLP.load(tmp_path / "m.partial.pt").meta["history"]) == 1


def test_the_cli_exits_2_on_a_diverged_run(tmp_path, capsys, monkeypatch):
    from hookedmlp.data import load_mnist
    from hookedmlp_cli.commands import main

    def first_64(split, root=None):
        images, labels = load_mnist(split)
        return images[:64], labels[:64]

    monkeypatch.setattr(hookedmlp.train, "load_mnist", first_64)
    monkeypatch.setattr(hookedmlp.train, "evaluate", lambda *a, **k: (float("nan"), 0.0))
    out = tmp_path / "m.pt"
    assert main(["train", "--out", str(out), "--epochs", "1", "--hidden", "8", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hookedmlp train: error: training diverged in epoch 1 of 1 (test loss nan)")
    assert err.count("\n") == 1 and not out.exists()


# -- reproducibility: the caller's thread count does not change a bit -----------------------------------------


def test_the_weights_do_not_depend_on_the_callers_thread_count():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = train_model(CFG, SETTINGS, data=_data(), progress=False)
        assert torch.get_num_threads() == 2  # restored after training
        torch.set_num_threads(1)
        one = train_model(CFG, SETTINGS, data=_data(), progress=False)
    finally:
        torch.set_num_threads(before)
    assert _same_weights(one.model, two.model) and one.test_loss == two.test_loss


def test_threads_and_the_platform_are_recorded(tmp_path):
    train_model(CFG, TrainSettings(epochs=1, threads=2), data=_data(), out=tmp_path / "m.pt", progress=False)
    meta = HookedMLP.load(tmp_path / "m.pt").meta
    assert meta["settings"]["threads"] == 2
    assert (
        meta["platform"]
        == platform()
        == {
            "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "blas": "mkl" if torch.backends.mkl.is_available() else "other",
        }
    )


def test_threads_must_be_a_positive_int():
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        TrainSettings(threads=0)
    assert TrainSettings(threads=3).threads == 3
