"""``hookedmlp train`` builds every variant of the network-properties study from flags (issue 12, point 3).

Each flag maps to a ``hookedmlp.models.configs`` recipe (or ``TrainSettings``), trains one step on
512 MNIST images, and is recorded in the checkpoint; combinations that describe no
network are refused before any data is loaded, with the valid choices.
"""

import pytest
import torch

import hookedmlp.train
from hookedmlp import LeNetConfig, MLPConfig, ResidualConfig, load
from hookedmlp.data import load_mnist
from hookedmlp.models.configs import config_to_dict
from hookedmlp_cli.commands import main, recipe_from_args
from hookedmlp_cli.parser import parse_args

pytestmark = pytest.mark.usefixtures("one_thread")

VARIANTS = [  # (flags, the recipe they describe)
    ([], MLPConfig()),
    (["--hidden", "256", "256"], MLPConfig(d_hidden=(256, 256))),
    (["--hidden", "512"], MLPConfig(d_hidden=(512,))),
    (["--hidden", "64", "64", "64", "64"], MLPConfig(d_hidden=(64, 64, 64, 64))),
    (["--activation", "gelu"], MLPConfig(activation="gelu")),
    (["--activation", "tanh", "--hidden", "64"], MLPConfig(d_hidden=(64,), activation="tanh")),
    (["--activation", "silu"], MLPConfig(activation="silu")),
    (["--dropout", "0.2"], MLPConfig(dropout=0.2)),
    (["--norm", "layernorm"], MLPConfig(norm="layernorm")),
    (["--norm", "batchnorm", "--hidden", "32"], MLPConfig(d_hidden=(32,), norm="batchnorm")),
    (["--residual"], ResidualConfig()),
    (
        [
            "--arch",
            "residual",
            "--d-model",
            "64",
            "--d-mlp",
            "128",
            "--blocks",
            "3",
            "--norm",
            "none",
            "--activation",
            "gelu",
        ],
        ResidualConfig(d_model=64, d_mlp=128, n_blocks=3, norm="none", activation="gelu"),
    ),
    (["--arch", "lenet"], LeNetConfig()),
    (
        ["--arch", "lenet", "--channels", "4", "8", "--hidden", "32", "16", "--activation", "tanh"],
        LeNetConfig(channels=(4, 8), d_hidden=(32, 16), activation="tanh"),
    ),
]
IDS = [" ".join(flags) or "defaults" for flags, _ in VARIANTS]


@pytest.mark.parametrize(("flags", "recipe"), VARIANTS, ids=IDS)
def test_flags_build_the_recipe(flags, recipe):
    assert recipe_from_args(parse_args(["train", *flags])) == recipe


@pytest.fixture
def tiny_mnist(monkeypatch):
    calls = []

    def load_cut(split="train", root=None, device=None):
        calls.append(split)
        images, labels = load_mnist(split)
        return images[:512], labels[:512]

    monkeypatch.setattr(hookedmlp.train, "load_mnist", load_cut)
    return calls


@pytest.mark.parametrize(("flags", "recipe"), VARIANTS[1:], ids=IDS[1:])
def test_each_variant_trains_one_step_and_records_its_recipe(flags, recipe, tmp_path, tiny_mnist, capsys):
    out = tmp_path / "m.pt"
    argv = [
        "train",
        *flags,
        "--epochs",
        "1",
        "--batch-size",
        "512",
        "--weight-decay",
        "0.01",
        "--seed",
        "3",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0, capsys.readouterr().err
    model = load(out)
    assert model.config == recipe
    assert model.meta["recipe"] == config_to_dict(recipe)
    assert model.meta["settings"] == {
        "epochs": 1,
        "batch_size": 512,
        "lr": 1e-3,
        "weight_decay": 0.01,
        "seed": 3,
        "threads": 1,
        "target_loss": None,
        "check_every": 50,
    }
    assert len(model.meta["history"]) == 1
    with torch.no_grad():
        assert model(load_mnist("test")[0][:4]).shape == (4, 10)


def test_the_same_flags_and_seed_give_the_same_checkpoint_bit_for_bit(tmp_path, tiny_mnist, capsys):
    flags = [
        "train",
        "--hidden",
        "32",
        "--dropout",
        "0.1",
        "--epochs",
        "2",
        "--batch-size",
        "128",
        "--seed",
        "9",
        "--quiet",
    ]
    assert main([*flags, "--out", str(tmp_path / "a.pt")]) == 0
    assert main([*flags, "--out", str(tmp_path / "b.pt")]) == 0
    a, b = load(tmp_path / "a.pt"), load(tmp_path / "b.pt")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert a.meta["history"] == b.meta["history"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--residual", "--arch", "lenet"],
            "--residual means --arch residual, but --arch is lenet; pick one architecture (valid --arch: mlp, lenet, "
            "residual)",
        ),
        (
            ["--arch", "lenet", "--dropout", "0.1"],
            "--dropout does not apply to --arch lenet; it is a flag of --arch mlp",
        ),
        (
            ["--arch", "lenet", "--norm", "layernorm"],
            "--norm does not apply to --arch lenet; it is a flag of --arch mlp or residual",
        ),
        (
            ["--residual", "--hidden", "64"],
            "--hidden does not apply to --arch residual; it is a flag of --arch mlp or lenet",
        ),
        (["--residual", "--dropout", "0.1"], "--dropout does not apply to --arch residual"),
        (["--channels", "4", "8"], "--channels does not apply to --arch mlp; it is a flag of --arch lenet"),
        (["--d-model", "64"], "--d-model does not apply to --arch mlp; it is a flag of --arch residual"),
        (["--blocks", "3", "--arch", "lenet"], "--blocks does not apply to --arch lenet"),
        (
            ["--arch", "lenet", "--hidden", "64"],
            "--arch lenet takes exactly two --hidden widths (its two Linear layers), got 1",
        ),
        (["--residual", "--norm", "batchnorm"], "norm must be one of 'none', 'layernorm', got 'batchnorm'"),
        (["--lr", "0.5", "--weight-decay", "4"], "lr * weight_decay must be below 1"),
    ],
)
def test_combinations_that_are_no_network_are_refused_before_loading_data(flags, message, tmp_path, tiny_mnist, capsys):
    assert main(["train", *flags, "--out", str(tmp_path / "m.pt"), "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"hookedmlp train: error: {message}") and len(err.splitlines()) == 1
    assert tiny_mnist == [] and list(tmp_path.iterdir()) == []
