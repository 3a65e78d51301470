"""train_mlp and evaluate: learning, seeded determinism, checkpoints written atomically
with their metadata, TrainSettings validation. Everything runs on tiny synthetic data."""

import dataclasses
import math
import os

import pytest
import torch
import torch.nn.functional as F

from hookedmlp import HookedMLP, MLPConfig
from hookedmlp.train import TrainResult, TrainSettings, evaluate, train_mlp

CFG = MLPConfig(d_in=16, d_hidden=(8,), d_out=3)


def _data(seed: int = 0, n_train: int = 192, n_test: int = 96):
    """A separable 3-class problem: the label is the argmax of the first 3 features."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, 16, generator=g)
    y = x[:, :3].argmax(-1)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return _data()


def _train(data, out=None, **settings):
    kw = dict(epochs=2, batch_size=32)
    kw.update(settings)
    return train_mlp(config=CFG, settings=TrainSettings(**kw), data=data, out=out, progress=False)


def _same_weights(a: HookedMLP, b: HookedMLP) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


# -- learning ---------------------------------------------------------------------------------

def test_loss_decreases_on_a_learnable_problem():
    data = _data(n_train=512)
    torch.manual_seed(0)  # train_mlp seeds the init the same way: this is its starting point
    untrained_loss, untrained_acc = evaluate(HookedMLP(CFG), data[2], data[3])
    result = _train(data, epochs=8, lr=3e-2)
    losses = [h["test_loss"] for h in result.history]
    assert isinstance(result, TrainResult)
    assert [h["epoch"] for h in result.history] == list(range(1, 9))
    assert losses[0] < untrained_loss
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses
    assert result.test_loss == losses[-1] < 0.25 * untrained_loss
    assert result.test_accuracy > 0.9 > 0.5 > untrained_acc
    assert result.history[-1]["test_accuracy"] == result.test_accuracy
    assert all(math.isfinite(h["train_loss_last_batch"]) for h in result.history)
    assert result.seconds > 0 and "test_loss=" in repr(result)
    assert not result.model.training  # returned ready for analysis


def test_returned_metrics_are_those_of_the_returned_model(data):
    result = _train(data)
    assert evaluate(result.model, data[2], data[3]) == (result.test_loss, result.test_accuracy)


# -- seeded determinism ------------------------------------------------------------------------

def test_same_seed_gives_bit_identical_weights(data):
    a = _train(data, seed=7)
    torch.manual_seed(12345)  # the global RNG state before the call must not matter
    torch.rand(10)
    b = _train(data, seed=7)
    assert _same_weights(a.model, b.model)
    assert a.history == b.history


def test_different_seed_gives_different_weights(data):
    a, b = _train(data, seed=0), _train(data, seed=1)
    assert not _same_weights(a.model, b.model)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(not torch.equal(sa[k], sb[k]) for k in sa)  # every tensor, not just one


# -- checkpoints -------------------------------------------------------------------------------

def test_checkpoint_is_written_with_its_metadata(data, tmp_path):
    path = tmp_path / "run" / "m.pt"  # missing parent directories are created
    result = _train(data, out=path, seed=3)
    assert path.is_file()
    assert sorted(os.listdir(path.parent)) == ["m.pt"]  # no temporary file left behind

    loaded = HookedMLP.load(path)
    assert _same_weights(loaded, result.model)
    x = data[2]
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model(x))

    meta = loaded.meta
    assert {"config", "settings", "command", "history", "test_loss", "test_accuracy"} <= meta.keys()
    assert meta["config"] == dataclasses.asdict(CFG)
    assert meta["settings"] == dataclasses.asdict(TrainSettings(epochs=2, batch_size=32, seed=3))
    assert isinstance(meta["command"], str) and meta["command"]
    assert meta["history"] == result.history and len(meta["history"]) == 2
    assert meta["test_loss"] == result.test_loss
    assert meta["test_accuracy"] == result.test_accuracy


def test_checkpoint_loads_with_plain_torch_load_weights_only(data, tmp_path):
    path = tmp_path / "m.pt"
    result = _train(data, out=path)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "hookedmlp.checkpoint" and raw["version"] == 1
    state = result.model.state_dict()
    assert raw["state_dict"].keys() == state.keys()
    assert all(torch.equal(raw["state_dict"][k], state[k]) for k in state)
    assert raw["meta"]["test_loss"] == result.test_loss


def test_interrupted_write_of_a_later_epoch_keeps_the_previous_checkpoint(data, tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    real_save = torch.save
    calls = {"n": 0, "before": None}

    def flaky_save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            return real_save(obj, f, *args, **kwargs)
        calls["before"] = path.read_bytes()  # the epoch-1 checkpoint, as it is when epoch 2 saves
        f.write(b"PK\x03\x04 half a checkpoint")
        f.flush()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", flaky_save)
    with pytest.raises(OSError, match="No space left"):
        _train(data, out=path, epochs=3)
    monkeypatch.undo()

    assert calls["n"] == 2  # training stopped at the failed save
    assert path.read_bytes() == calls["before"]  # the old file is intact, byte for byte
    assert os.listdir(tmp_path) == ["m.pt"]  # the partial temporary file was removed
    model = HookedMLP.load(path)
    assert [h["epoch"] for h in model.meta["history"]] == [1]
    assert model.meta["settings"]["epochs"] == 3
    # it is the epoch-1 state of the same seeded 3-epoch run, completed here without interruption
    full = _train(data, epochs=3)
    assert model.meta["history"][0] == full.history[0]
    assert evaluate(model, data[2], data[3]) == (full.history[0]["test_loss"], full.history[0]["test_accuracy"])


# -- TrainSettings validation ------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(epochs=0), "epochs must be a positive int, got 0"),
    (dict(epochs=-2), "epochs must be a positive int, got -2"),
    (dict(epochs=True), "epochs must be a positive int, got True"),
    (dict(batch_size=-1), "batch_size must be a positive int, got -1"),
    (dict(batch_size=0), "batch_size must be a positive int, got 0"),
    (dict(lr=0), "lr must be > 0"),
    (dict(lr=-1e-3), "lr must be > 0"),
    (dict(lr=float("nan")), "lr must be > 0"),
    (dict(weight_decay=-0.1), "weight_decay >= 0"),
])
def test_train_settings_validation(kwargs, message):
    with pytest.raises(ValueError) as info:
        TrainSettings(**kwargs)
    assert message in str(info.value)


def test_train_settings_defaults_are_the_study_recipe():
    assert dataclasses.asdict(TrainSettings()) == {"epochs": 6, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.0, "seed": 0}
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainSettings().epochs = 3


def test_train_settings_rejects_infinite_lr():
    with pytest.raises(ValueError, match="lr"):
        TrainSettings(lr=float("inf"))


@pytest.mark.parametrize("seed", [2**64, True])
def test_train_settings_rejects_a_seed_torch_cannot_use(seed):
    with pytest.raises(ValueError, match="seed"):
        TrainSettings(seed=seed)


# -- evaluate ----------------------------------------------------------------------------------

def _hand_metrics(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Cross-entropy and accuracy written out: -log softmax of the true class, averaged."""
    nll = [float(torch.logsumexp(row, 0) - row[y]) for row, y in zip(logits.double(), labels)]
    correct = sum(int(int(row.argmax()) == int(y)) for row, y in zip(logits, labels))
    return sum(nll) / len(nll), correct / len(labels)


@pytest.mark.parametrize("batch_size", [10_000, 3, 1])
def test_evaluate_matches_a_hand_computation(tiny, tiny_x, batch_size):
    x = torch.cat([tiny_x, tiny_x.flip(0)])  # 10 examples: batch_size 3 leaves a remainder
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 2, 1, 0, 0])
    with torch.no_grad():
        logits = tiny.to_sequential()(x)  # the plain modules, independent of evaluate
    want_loss, want_acc = _hand_metrics(logits, labels)
    assert 0 < want_acc < 1  # a non-trivial accuracy, so a counting error would show
    loss, acc = evaluate(tiny, x, labels, batch_size=batch_size)
    assert loss == pytest.approx(want_loss, rel=1e-6)
    assert acc == want_acc
    assert isinstance(loss, float) and isinstance(acc, float)


def test_evaluate_uses_eval_mode_and_restores_the_training_mode():
    torch.manual_seed(0)
    model = HookedMLP(MLPConfig(d_in=16, d_hidden=(32,), d_out=3, dropout=0.5))
    x, y = torch.randn(64, 16), torch.randint(0, 3, (64,))

    model.train()
    first = evaluate(model, x, y)
    assert model.training and all(m.training for m in model.modules())
    assert evaluate(model, x, y) == first  # dropout is off during evaluation: deterministic

    model.eval()
    assert evaluate(model, x, y) == first
    assert not model.training and not any(m.training for m in model.modules())


def test_evaluate_restores_the_training_mode_when_the_forward_fails():
    model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2)).train()
    with pytest.raises(ValueError):  # ShapeError: 5 features for a d_in=4 model
        evaluate(model, torch.rand(3, 5), torch.zeros(3, dtype=torch.long))
    assert model.training


def test_evaluate_on_an_empty_set_raises_a_clear_error():
    model = HookedMLP(MLPConfig(d_in=4, d_hidden=(3,), d_out=2))
    with pytest.raises(ValueError, match="empty"):
        evaluate(model, torch.rand(0, 4), torch.zeros(0, dtype=torch.long))
