"""train_seeds and StackedNet: each seed trained in a batch is the seed trained alone, bit for bit at one thread.

Every architecture of the study stacks: a chain with dropout, with LayerNorm and GELU, with
batch norm and no biases, a residual MLP, a LeNet; each on tiny synthetic data.
"""

import dataclasses

import pytest
import torch
from torch import nn

import hookedmlp
import hookedmlp.train as train_module
import hookedmlp.train_seeds as seeds_module
from hookedmlp import ConfigError, LeNetConfig, MLPConfig, ResidualConfig, SizeError
from hookedmlp.models.stacked import StackedNet, stackable
from hookedmlp.sizes import memory_budget
from hookedmlp.train import TrainSettings, build_model, train_model
from hookedmlp.train_seeds import SeedsInterrupted, train_seeds

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = TrainSettings(epochs=2, batch_size=30)  # batches of 30, 30, 20: a mean over a batch that is no power of two
MLP = MLPConfig(d_in=16, d_hidden=(12, 12), d_out=3, dropout=0.3)
RECIPES = {
    "mlp, dropout": MLP,
    "mlp, layernorm, gelu": MLPConfig(d_in=16, d_hidden=(12,), d_out=3, norm="layernorm", activation="gelu"),
    "mlp, batchnorm, no bias": MLPConfig(d_in=16, d_hidden=(12, 12), d_out=3, norm="batchnorm", bias=False),
    "residual": ResidualConfig(d_in=16, d_model=8, d_mlp=12, n_blocks=2, d_out=3),
    "lenet": LeNetConfig(channels=(2, 3), d_hidden=(8, 6), d_out=3),
}


def _data(d_in: int, n_train: int = 80, n_test: int = 40):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n_train + n_test, d_in, generator=g)
    y = (x[:, :3] * torch.tensor([1.0, 2.0, 3.0])).argmax(-1)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _inputs(recipe) -> int:
    return 784 if isinstance(recipe, LeNetConfig) else recipe.d_in


@pytest.mark.parametrize("name", list(RECIPES))
def test_each_seed_in_a_batch_has_the_weights_and_history_of_the_seed_trained_alone(name):
    recipe = RECIPES[name]
    data = _data(_inputs(recipe))
    together = train_seeds(recipe, SETTINGS, [0, 5], data=data, progress=False)
    for seed, got in zip([0, 5], together):
        alone = train_model(recipe, dataclasses.replace(SETTINGS, seed=seed), data=data, progress=False)
        a, b = alone.model.state_dict(), got.model.state_dict()
        assert a.keys() == b.keys()
        assert [k for k in a if not torch.equal(a[k], b[k])] == []  # bit for bit: the tolerance is zero
        assert got.history == alone.history
        assert got.model.meta["settings"] == alone.model.meta["settings"]
        assert got.model.meta["batched_seeds"] == [0, 5]
        assert not got.model.training


def test_each_seed_starts_from_its_own_weights_and_sees_its_own_batches(monkeypatch):
    data = _data(16)
    starts, batched = [], []

    class Recording(StackedNet):
        def __init__(self, nets, generators):
            super().__init__(nets, generators)
            starts.append([{k: v.clone() for k, v in net.state_dict().items()} for net in nets])

        def forward(self, x):
            batched.append(x.clone())
            return super().forward(x)

    monkeypatch.setattr(seeds_module, "StackedNet", Recording)
    train_seeds(MLP, SETTINGS, [3, 4], data=data, progress=False)
    plain = train_module._plain
    for s, seed in enumerate([3, 4]):
        torch.manual_seed(seed)
        fresh = plain(build_model(MLP)).state_dict()
        assert all(torch.equal(fresh[k], starts[0][s][k]) for k in fresh)
        alone = []

        class Recorder(nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, x):
                alone.append(x.clone())
                return self.net(x)

        monkeypatch.setattr(train_module, "_plain", lambda m: Recorder(plain(m)))
        train_model(MLP, dataclasses.replace(SETTINGS, seed=seed), data=data, progress=False)
        assert len(alone) == len(batched) == 6  # 2 epochs of 3 batches (30, 30, 20)
        assert all(torch.equal(a, b[s]) for a, b in zip(alone, batched))
    assert not torch.equal(batched[0][0], batched[0][1])  # two seeds, two orders


def test_checkpoints_are_written_per_seed_with_no_partial_file_left(tmp_path):
    outs = [tmp_path / "a.pt", tmp_path / "b.pt"]
    results = train_seeds(MLP, SETTINGS, [1, 2], outs=outs, data=_data(16), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.pt"]
    for out, r in zip(outs, results):
        saved = hookedmlp.load(out)
        assert all(torch.equal(saved.state_dict()[k], v) for k, v in r.model.state_dict().items())


def test_an_interrupt_says_what_each_seed_kept(tmp_path, monkeypatch):
    calls = []
    evaluate = train_module.evaluate

    def interrupt_second(*args, **kwargs):  # seed 1's end of epoch 1
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate", interrupt_second)
    outs = [tmp_path / "a.pt", tmp_path / "b.pt"]
    with pytest.raises(SeedsInterrupted) as e:
        train_seeds(MLP, SETTINGS, [0, 1], outs=outs, data=_data(16), progress=False)
    assert str(e.value) == (
        f"seed 0: interrupted after 1 of 2 epochs: {outs[0]} not written; epoch 1 is in {tmp_path / 'a.partial.pt'}; "
        f"seed 1: interrupted after 0 of 2 epochs: {outs[1]} not written"
    )
    assert isinstance(e.value, KeyboardInterrupt)


@pytest.mark.parametrize(
    "seeds, outs, message",
    [
        ([], None, "seeds must be a non-empty list of ints, got []"),
        ([1, 2, 1], None, "seeds repeat (1): each would be the same model; give each once"),
        ([1, -2], None, "seed must be in [0, 9223372036854775808), got -2"),
        ([1, 2], ["a.pt"], "outs needs one path (or None) per seed: 2 seeds, got 1 paths"),
        ([1, 2], ["a.pt", "a.pt"], "outs repeat a path: two seeds would write one checkpoint; give each seed its own"),
    ],
)
def test_bad_seeds_and_outs_are_refused_before_training(seeds, outs, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        train_seeds(MLP, SETTINGS, seeds, outs=outs, data=_data(16), progress=False)
    assert str(e.value) == message
    assert list(tmp_path.iterdir()) == []


def test_the_memory_of_every_seed_together_is_checked_first():
    with memory_budget(200_000), pytest.raises(SizeError) as e:
        train_seeds(MLPConfig(d_in=16, d_hidden=(64, 64), d_out=3), SETTINGS, range(8), data=_data(16))
    assert str(e.value).startswith("training 8 seeds of a 16-64-64-3 MLP, relu together in batches of 30 needs")


def test_a_module_without_a_stacked_form_is_refused_by_name():
    net = nn.Sequential(nn.Linear(4, 4), nn.Conv1d(1, 1, 1))
    assert stackable(net) == "1 is a Conv1d, which has no stacked form here"
    with pytest.raises(ConfigError, match=r"^these networks cannot be stacked: 1 is a Conv1d, .*one at a time$"):
        StackedNet([net, net], [torch.Generator()] * 2)
    assert stackable(build_model(RECIPES["residual"])) is None
