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

import hookedmlp.checkpoint as ckpt_mod
from hookedmlp import CheckpointError, HookedMLP, MLPConfig
from hookedmlp.checkpoint import load_pretrained, pretrained_card
from hookedmlp.data import load_mnist

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
    assert model.specs == tuple(MLPConfig(d_in=784, d_hidden=(512, 512), d_out=10, activation="relu").layer_specs())
    assert [(s.kind, s.d_in, s.d_out) for s in model.specs] == [
        ("linear", 784, 512), ("relu", 512, 512), ("linear", 512, 512), ("relu", 512, 512), ("linear", 512, 10)]
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


def test_a_tampered_weights_file_fails_the_checksum(tmp_path, monkeypatch):
    weights, card = _shipped()
    bad = tmp_path / "mnist-mlp.pt"
    with resources.as_file(weights) as path:
        shutil.copyfile(path, bad)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit inside the weights: still a loadable file
    bad.write_bytes(bytes(data))
    assert isinstance(HookedMLP.load(bad), HookedMLP)  # so only the checksum can catch it

    with resources.as_file(card) as card_path:
        monkeypatch.setattr(ckpt_mod, "_pretrained_files", lambda name: (bad, card_path))
        with pytest.raises(CheckpointError, match="fails its checksum") as info:
            HookedMLP.from_pretrained("mnist-mlp")
    assert "sha256" in str(info.value) and hashlib.sha256(bytes(data)).hexdigest() in str(info.value)


def test_a_tampered_card_fails_the_checksum(tmp_path, monkeypatch):
    weights, card = _shipped()
    content = json.loads(card.read_text())
    content["sha256"] = "0" * 64
    bad_card = tmp_path / "mnist-mlp.json"
    bad_card.write_text(json.dumps(content))
    monkeypatch.setattr(ckpt_mod, "_pretrained_files", lambda name: (weights, bad_card))
    with pytest.raises(CheckpointError, match="fails its checksum: expected sha256 0{64}"):
        HookedMLP.from_pretrained("mnist-mlp")
