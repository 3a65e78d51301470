"""The shipped ``mnist-mlp``: its test loss on the full MNIST test set, its card, its checksum,
its architecture, and the errors for unknown names and tampered files."""

import hashlib
import json
import re
import shutil
from importlib import resources

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hookedmlp.files.checkpoint as ckpt_mod
from hookedmlp import CheckpointError, HookedMLP, MLPConfig
from hookedmlp.data import load_mnist
from hookedmlp.files.checkpoint import load_pretrained, pretrained_card

HOOKS = [f"layer{i}.{side}" for i in range(5) for side in ("pre", "post")]


def _shipped(name: str = "mnist-mlp"):
    root = resources.files("hookedmlp") / "pretrained"
    return root / f"{name}.pt", root / f"{name}.json"


@pytest.fixture(scope="module")
def card() -> dict:
    return pretrained_card("mnist-mlp")


@pytest.fixture(scope="module")
def test_logits(model):
    images, labels = load_mnist("test")
    assert images.shape == (10_000, 784)
    with torch.no_grad():
        return model(images), labels


# -- quality, and agreement with the card ------------------------------------------------------


def test_test_loss_is_at_most_0_09_and_matches_the_card(test_logits, card):
    logits, labels = test_logits
    loss = F.cross_entropy(logits, labels).item()
    assert loss <= 0.09
    assert loss == pytest.approx(card["test_loss"], abs=1e-6)


def test_accuracy_matches_the_card(test_logits, card):
    logits, labels = test_logits
    correct = int((logits.argmax(-1) == labels).sum())
    assert correct == round(card["test_accuracy"] * 10_000)
    assert correct / 10_000 == card["test_accuracy"]


# -- the card ----------------------------------------------------------------------------------


def test_card_records_how_the_model_was_made(card):
    assert card["name"] == "mnist-mlp"
    assert isinstance(card["settings"]["seed"], int)
    assert card["settings"]["epochs"] >= 1 and card["settings"]["lr"] > 0
    assert card["command"].startswith("hookedmlp train")
    assert re.fullmatch(r"[0-9a-f]{64}", card["sha256"])
    assert "784-512-512-10" in card["architecture"]


def test_card_sha256_matches_the_shipped_file(card):
    weights, _ = _shipped()
    with resources.as_file(weights) as path:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert ckpt_mod.sha256_file(path) == digest
    assert digest == card["sha256"]


def test_card_agrees_with_the_checkpoint_meta(model, card):
    meta = model.meta
    assert meta["settings"] == card["settings"]
    assert meta["command"] == card["command"]
    assert meta["test_loss"] == card["test_loss"]
    assert meta["test_accuracy"] == card["test_accuracy"]
    assert meta["history"][-1]["test_loss"] == card["test_loss"]
    assert len(meta["history"]) == card["settings"]["epochs"]


# -- architecture ------------------------------------------------------------------------------


def test_architecture_is_784_512_512_10_relu(model):
    layers = model.layout.layers
    assert [type(layer.module) for layer in layers] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert [(m.in_features, m.out_features) for m in model.to_sequential() if isinstance(m, nn.Linear)] == [
        (784, 512),
        (512, 512),
        (512, 10),
    ]
    assert model.config == MLPConfig(d_in=784, d_hidden=(512, 512), d_out=10, activation="relu")
    assert model.hook_names == HOOKS
    assert model.input_shape == (1, 28, 28)
    assert not model.training
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_from_pretrained_equals_loading_the_file(model):
    weights, _ = _shipped()
    with resources.as_file(weights) as path:
        again = HookedMLP.load(path)
    x = load_mnist("test")[0][:64]
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    assert load_pretrained("mnist-mlp") is not model  # a fresh model each time


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist_mlp", "mnist-mpl", "mnist", "mnist-mlp.pt"])
def test_unknown_name_suggests_the_right_one(name):
    with pytest.raises(CheckpointError, match="did you mean 'mnist-mlp'"):
        HookedMLP.from_pretrained(name)
    with pytest.raises(CheckpointError, match="available: mnist-mlp"):
        pretrained_card(name)


def _package(tmp_path, weights=None, card=None):
    """A copy of the shipped files in ``tmp_path``, optionally replaced, for ``_pretrained_root`` to point at."""
    w, c = _shipped()
    with resources.as_file(w) as path:
        shutil.copyfile(path, tmp_path / "mnist-mlp.pt")
    (tmp_path / "mnist-mlp.json").write_text(c.read_text())
    if weights is not None:
        (tmp_path / "mnist-mlp.pt").write_bytes(weights)
    if card is not None:
        (tmp_path / "mnist-mlp.json").write_text(json.dumps(card))
    return tmp_path


def test_a_tampered_weights_file_fails_the_checksum(tmp_path, monkeypatch):
    weights, _ = _shipped()
    with resources.as_file(weights) as path:
        data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit inside the weights: still a loadable file
    root = _package(tmp_path, weights=bytes(data))
    assert isinstance(HookedMLP.load(root / "mnist-mlp.pt"), HookedMLP)  # so only the checksum can catch it

    monkeypatch.setattr(ckpt_mod, "_pretrained_root", lambda: root)
    with pytest.raises(CheckpointError, match="fails its checksum") as info:
        HookedMLP.from_pretrained("mnist-mlp")
    assert "sha256" in str(info.value) and hashlib.sha256(bytes(data)).hexdigest() in str(info.value)


def test_a_tampered_card_fails_the_checksum(tmp_path, monkeypatch):
    _, card = _shipped()
    content = json.loads(card.read_text())
    content["sha256"] = "0" * 64
    root = _package(tmp_path, card=content)
    monkeypatch.setattr(ckpt_mod, "_pretrained_root", lambda: root)
    with pytest.raises(CheckpointError, match="fails its checksum: expected sha256 0{64}"):
        HookedMLP.from_pretrained("mnist-mlp")


def test_the_shipped_file_is_a_version_2_chain():
    weights, _ = _shipped()
    with resources.as_file(weights) as path:
        ckpt = torch.load(path, weights_only=True)
    assert (ckpt["format"], ckpt["version"], ckpt["architecture"]) == ("hookedmlp.checkpoint", 2, "chain")
    assert [layer["path"] for layer in ckpt["layers"]] == ["0", "1", "2", "3", "4"]
