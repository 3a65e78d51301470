"""train_model and evaluate: learning, a plain-torch reference, every recipe, seeded bit-for-bit determinism,
checkpoints written only by a finished run, TrainSettings validation. Everything runs on tiny synthetic data."""

import dataclasses
import math
import os

import pytest
import torch
import torch.nn.functional as F

from hookedmlp import ConfigError, FileWriteError, HookedMLP, LeNetConfig, MLPConfig, ResidualConfig, ResidualMLP
from hookedmlp.models.configs import config_to_dict
from hookedmlp.train import TrainResult, TrainSettings, build_model, evaluate, train_model

CFG = MLPConfig(d_in=16, d_hidden=(8,), d_out=3)


def _data(seed: int = 0, n_train: int = 192, n_test: int = 96, d_in: int = 16):
    """A separable 3-class problem: the label is the argmax of the first 3 features."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, d_in, generator=g)
    y = x[:, :3].argmax(-1)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return _data()


def _train(data, out=None, recipe=CFG, **settings):
    kw = dict(epochs=2, batch_size=32)
    kw.update(settings)
    return train_model(recipe, TrainSettings(**kw), data=data, out=out, progress=False)


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


# -- learning ---------------------------------------------------------------------------------


def test_loss_decreases_on_a_learnable_problem():
    data = _data(n_train=512)
    torch.manual_seed(0)  # train_model seeds the init the same way: this is its starting point
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


def test_training_follows_a_plain_torch_reference(data):
    """The recipe written out: seeded init, seeded batch order, AdamW with cosine decay to 0 per step."""
    settings = TrainSettings(epochs=2, batch_size=50, lr=1e-2, weight_decay=0.1, seed=4)
    result = train_model(CFG, settings, data=data, progress=False)
    torch.manual_seed(4)
    ref = HookedMLP(CFG).to_sequential()  # the same initial weights, as plain modules
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.1, foreach=False)
    steps_per_epoch = math.ceil(192 / 50)  # the last batch of each epoch has 42 images
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=2 * steps_per_epoch)
    gen = torch.Generator().manual_seed(4)
    for _ in range(2):
        order = torch.randperm(192, generator=gen)
        for i in range(0, 192, 50):
            idx = order[i : i + 50]
            loss = F.cross_entropy(ref(data[0][idx]), data[1][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    got = result.model.to_sequential().state_dict()
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6)  # fused vs plain AdamW: rounding only


def test_a_target_loss_stops_at_the_first_check_that_reaches_it(data, tmp_path):
    full = _train(data, epochs=3, lr=3e-2, seed=1)  # 6 steps an epoch
    checks = [h["test_loss"] for h in full.history]
    target = (checks[0] + checks[1]) / 2  # reached in epoch 2, not in epoch 1
    stopped = _train(data, epochs=3, lr=3e-2, seed=1, target_loss=target, check_every=2, out=tmp_path / "m.pt")
    assert [h["epoch"] for h in stopped.history] == [1, 2] and stopped.test_loss <= target
    assert not list(tmp_path.glob("*partial*"))  # the run ended there: nothing left for a resume
    # a check at every step that never reaches the target trains every epoch, to the same bits as no check at all
    never = _train(data, epochs=3, lr=3e-2, seed=1, target_loss=1e-9, check_every=1)
    assert _same_weights(never.model, full.model) and len(never.history) == 3


def test_train_seeds_refuses_a_target_loss(data):
    from hookedmlp.train_seeds import train_seeds

    with pytest.raises(
        ConfigError, match="stops each seed at its own step, and train_seeds steps the seeds in lockstep"
    ):
        train_seeds(CFG, TrainSettings(epochs=1, batch_size=32, target_loss=0.5), [0, 1], data=data, progress=False)


# -- every recipe trains, seeded bit for bit ------------------------------------------------------

RECIPES = {
    "mlp-1-layer": MLPConfig(d_in=784, d_hidden=(12,)),
    "mlp-4-layers": MLPConfig(d_in=784, d_hidden=(8, 8, 8, 8)),
    "gelu": MLPConfig(d_in=784, d_hidden=(8, 8), activation="gelu"),
    "tanh": MLPConfig(d_in=784, d_hidden=(8, 8), activation="tanh"),
    "silu": MLPConfig(d_in=784, d_hidden=(8, 8), activation="silu"),
    "dropout": MLPConfig(d_in=784, d_hidden=(8, 8), dropout=0.3),
    "layernorm": MLPConfig(d_in=784, d_hidden=(8, 8), norm="layernorm"),
    "batchnorm": MLPConfig(d_in=784, d_hidden=(8, 8), norm="batchnorm"),
    "residual": ResidualConfig(d_model=8, d_mlp=12, n_blocks=2),
    "lenet": LeNetConfig(channels=(2, 3), d_hidden=(8, 8)),
}


@pytest.fixture(scope="module")
def mnist_shaped():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(48, 784, generator=g)
    y = torch.arange(48) % 10
    return x, y, x[:16], y[:16]


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_trains_one_step_reproducibly(name, mnist_shaped):
    recipe = RECIPES[name]
    settings = TrainSettings(epochs=1, batch_size=48, lr=1e-2, weight_decay=0.05, seed=11)  # one step
    a = train_model(recipe, settings, data=mnist_shaped, progress=False)
    torch.manual_seed(999)  # the global RNG state before the call must not matter
    b = train_model(recipe, settings, data=mnist_shaped, progress=False)
    assert isinstance(a.model, ResidualMLP if name == "residual" else HookedMLP)
    assert a.model.config == recipe
    assert _same_weights(a.model, b.model) and a.history == b.history
    torch.manual_seed(11)
    fresh = build_model(recipe)
    assert not _same_weights(a.model, fresh)  # the step moved the seeded initial weights
    other = train_model(recipe, dataclasses.replace(settings, seed=12), data=mnist_shaped, progress=False)
    assert not _same_weights(a.model, other.model)


def test_same_seed_gives_bit_identical_weights(data):
    a = _train(data, seed=7)
    torch.manual_seed(12345)
    torch.rand(10)
    b = _train(data, seed=7)
    assert _same_weights(a.model, b.model)
    assert a.history == b.history


def test_different_seed_gives_different_weights(data):
    a, b = _train(data, seed=0), _train(data, seed=1)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(not torch.equal(sa[k], sb[k]) for k in sa)  # every tensor, not just one


# -- checkpoints -------------------------------------------------------------------------------


def test_checkpoint_is_written_with_its_metadata(data, tmp_path):
    path = tmp_path / "run" / "m.pt"  # missing parent directories are created
    result = _train(data, out=path, seed=3)
    assert sorted(os.listdir(path.parent)) == ["m.pt"]  # no temporary or partial file left behind
    loaded = HookedMLP.load(path)
    assert _same_weights(loaded, result.model)
    with torch.no_grad():
        assert torch.equal(loaded(data[2]), result.model(data[2]))
    meta = loaded.meta
    assert meta["recipe"] == config_to_dict(CFG) and meta["dataset"] == "given tensors"
    assert meta["settings"] == dataclasses.asdict(TrainSettings(epochs=2, batch_size=32, seed=3))
    assert isinstance(meta["command"], str) and meta["command"]
    assert meta["history"] == result.history and len(meta["history"]) == 2
    assert (meta["test_loss"], meta["test_accuracy"]) == (result.test_loss, result.test_accuracy)


def test_checkpoint_loads_with_plain_torch_load_weights_only(data, tmp_path):
    path = tmp_path / "m.pt"
    result = _train(data, out=path)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "hookedmlp.checkpoint" and raw["version"] == 2
    state = result.model.state_dict()
    assert raw["state_dict"].keys() == state.keys()
    assert all(torch.equal(raw["state_dict"][k], state[k]) for k in state)
    assert raw["meta"]["test_loss"] == result.test_loss


def test_out_is_replaced_only_by_a_finished_run(data, tmp_path, monkeypatch):
    """Epochs go to m.partial.pt; m.pt (a previous run) is replaced only at the end, and a failed final
    save keeps it byte for byte, with the last finished epoch in the partial file."""
    path, partial = tmp_path / "m.pt", tmp_path / "m.partial.pt"
    previous = _train(data, out=path, seed=1)
    before = path.read_bytes()
    real_save = torch.save
    seen = []

    def save(obj, f, *args, **kwargs):
        seen.append((obj["meta"]["history"][-1]["epoch"], path.read_bytes() == before))
        if len(seen) == 3:  # the final save of out
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(FileWriteError, match=rf"^no space left writing {path} \(old file kept\)"):
        _train(data, out=path, epochs=3, seed=2)
    monkeypatch.undo()
    assert seen == [(1, True), (2, True), (3, True)]  # two epochs to the partial file, out untouched throughout
    assert path.read_bytes() == before and _same_weights(HookedMLP.load(path), previous.model)
    assert sorted(os.listdir(tmp_path)) == ["m.partial.pt", "m.pt"]
    part = HookedMLP.load(partial)
    assert [h["epoch"] for h in part.meta["history"]] == [1, 2] and part.meta["settings"]["epochs"] == 3
    full = _train(data, epochs=3, seed=2)
    assert part.meta["history"] == full.history[:2]  # the epoch-2 state of the same seeded run


def test_card_is_written_with_the_checkpoint(data, tmp_path):
    import json

    from hookedmlp.files.checkpoint import sha256_file

    result = train_model(
        CFG,
        TrainSettings(epochs=1, batch_size=64, seed=5),
        data=data,
        out=tmp_path / "m.pt",
        card=tmp_path / "m.json",
        progress=False,
        command="hookedmlp train --seed 5",
    )
    card = json.loads((tmp_path / "m.json").read_text())
    assert card == {
        "name": "m",
        "architecture": "16-8-3 MLP, relu",
        "recipe": json.loads(json.dumps(config_to_dict(CFG))),
        "settings": dataclasses.asdict(TrainSettings(epochs=1, batch_size=64, seed=5)),
        "dataset": "given tensors",
        "command": "hookedmlp train --seed 5",
        "test_loss": result.test_loss,
        "test_accuracy": result.test_accuracy,
        "sha256": sha256_file(tmp_path / "m.pt"),
    }


def test_out_and_card_are_checked_before_training(data, tmp_path):
    (tmp_path / "m.pt").write_text("old")
    (tmp_path / "m.pt").chmod(0o444)
    with pytest.raises(FileWriteError, match="read-only"):
        _train(data, out=tmp_path / "m.pt")
    with pytest.raises(ValueError, match="needs a checkpoint path"):
        train_model(CFG, TrainSettings(epochs=1), data=data, card=tmp_path / "c.json", progress=False)


# -- TrainSettings validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(epochs=0), "epochs must be >= 1, got 0"),
        (dict(epochs=-2), "epochs must be >= 1, got -2"),
        (dict(epochs=True), "epochs must be an int, got bool (True)"),
        (dict(batch_size=-1), "batch_size must be >= 1, got -1"),
        (dict(batch_size=0), "batch_size must be >= 1, got 0"),
        (dict(lr=0), "lr must be finite and in (0, 10], got 0"),
        (dict(lr=-1e-3), "lr must be finite and in (0, 10], got -0.001"),
        (dict(lr=float("nan")), "lr must be finite and in (0, 10], got nan"),
        (dict(lr=float("inf")), "lr must be finite and in (0, 10], got inf"),
        (dict(lr=1e300), "lr must be finite and in (0, 10], got 1e+300"),
        (dict(weight_decay=-0.1), "weight_decay must be finite and in [0, 10000], got -0.1"),
        (dict(lr=0.5, weight_decay=2.0), "lr * weight_decay must be below 1"),
        (dict(seed=2**64), "seed must be in [0, 9223372036854775808), got 18446744073709551616"),
        (dict(seed=True), "seed must be an int, got bool (True)"),
        (dict(target_loss=0.0), "target_loss must be finite and in (0, inf], got 0"),
        (dict(target_loss=float("nan")), "target_loss must be finite and in (0, inf], got nan"),
        (dict(check_every=0), "check_every must be >= 1, got 0"),
    ],
)
def test_train_settings_validation(kwargs, message):
    with pytest.raises(ValueError) as info:
        TrainSettings(**kwargs)
    assert message in str(info.value)


def test_train_settings_defaults_are_the_study_recipe():
    assert dataclasses.asdict(TrainSettings()) == {
        "epochs": 6,
        "batch_size": 128,
        "lr": 1e-3,
        "weight_decay": 0.0,
        "seed": 0,
        "threads": 1,
        "target_loss": None,
        "check_every": 50,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainSettings().epochs = 3


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
