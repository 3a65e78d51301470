"""Checkpoints: round trips, atomic saving, refusing unsafe / corrupt / mismatched files,
and the shipped pretrained model."""

import os
import pickle
import re

import pytest
import torch
from torch import nn

import hookedmlp.checkpoint as ckpt_mod
from hookedmlp import CheckpointError, HookedMLP, LayerSpec, MLPConfig
from hookedmlp.checkpoint import load_checkpoint, pretrained_card, save_checkpoint, sha256_file


class _CreatesFile:
    """A pickle payload: unpickling it calls open(path, "w"), creating the file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _model(cfg=None, seed=0, **kw):
    torch.manual_seed(seed)
    return HookedMLP(cfg or MLPConfig(d_in=16, d_hidden=(8, 8), d_out=3), **kw)


def _files(d):
    return sorted(p.name for p in d.iterdir())


# -- round trips ---------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path, tiny_x):
    m = _model()
    path = tmp_path / "m.pt"
    m.save(path, meta={"note": "hello", "epoch": 3})
    loaded = HookedMLP.load(path)
    assert loaded is not m
    assert loaded.specs == m.specs
    assert loaded.input_shape == m.input_shape == (1, 4, 4)
    assert loaded.hook_names == m.hook_names
    assert loaded.meta == {"note": "hello", "epoch": 3}
    assert not loaded.training
    for (k1, v1), (k2, v2) in zip(m.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2) and v1.data_ptr() != v2.data_ptr()
    with torch.no_grad():
        assert torch.equal(loaded(tiny_x), m(tiny_x))
        assert torch.equal(loaded(tiny_x.reshape(5, 4, 4)), m(tiny_x))
    assert _files(tmp_path) == ["m.pt"]  # no temporary file left behind


def test_round_trip_other_architectures(tmp_path, tiny_x):
    cases = [
        _model(MLPConfig(d_in=16, d_hidden=(8,), d_out=3, activation="leaky_relu", dropout=0.3, bias=False)),
        _model(MLPConfig(d_in=16, d_hidden=(8, 4, 6), d_out=2, activation="gelu"), input_shape=(2, 8)),
        HookedMLP.from_sequential(nn.Sequential(nn.Linear(16, 5), nn.GELU(approximate="tanh"), nn.Linear(5, 4),
                                                nn.LeakyReLU(0.2), nn.Linear(4, 2))),
    ]
    for i, m in enumerate(cases):
        m.eval()
        path = tmp_path / f"{i}.pt"
        save_checkpoint(m, path)
        loaded = load_checkpoint(path)
        assert loaded.specs == m.specs
        assert loaded.input_shape == m.input_shape
        assert [type(mod) for mod in loaded.modules()] == [type(mod) for mod in m.modules()]
        with torch.no_grad():
            assert torch.equal(loaded(tiny_x), m(tiny_x))


def test_checkpoint_contents():
    m = _model()
    c = m.checkpoint({"a": 1})
    assert set(c) == {"format", "version", "specs", "config", "input_shape", "state_dict", "meta"}
    assert c["config"] == {"d_in": 16, "d_hidden": (8, 8), "d_out": 3, "activation": "relu", "dropout": 0.0, "bias": True}
    assert c["format"] == "hookedmlp.checkpoint" and c["version"] == 1
    assert c["specs"] == [s.to_dict() for s in m.specs]
    assert c["input_shape"] == [1, 4, 4] and c["meta"] == {"a": 1}
    assert all(not v.requires_grad for v in c["state_dict"].values())


def test_load_to_device(tmp_path, tiny_x):
    m = _model()
    m.save(tmp_path / "m.pt")
    loaded = HookedMLP.load(tmp_path / "m.pt", device="cpu")
    assert all(p.device == torch.device("cpu") for p in loaded.parameters())
    with torch.no_grad():
        assert torch.equal(loaded(tiny_x), m(tiny_x))


def test_save_overwrites(tmp_path, tiny_x):
    path = tmp_path / "m.pt"
    _model(seed=1).save(path)
    m2 = _model(seed=2)
    m2.save(path)
    with torch.no_grad():
        assert torch.equal(HookedMLP.load(path)(tiny_x), m2(tiny_x))


def test_save_creates_parent_directories(tmp_path):
    path = tmp_path / "a" / "b" / "m.pt"
    _model().save(path)
    assert path.is_file()


def test_save_to_a_directory_raises(tmp_path):
    with pytest.raises(IsADirectoryError, match=re.escape(f"cannot write {str(tmp_path)!r}: it is a directory; pass a file path")):
        _model().save(tmp_path)


def test_round_trip_keeps_dtype(tmp_path):
    m = _model().double()
    m.save(tmp_path / "m.pt")
    loaded = HookedMLP.load(tmp_path / "m.pt")
    assert loaded.layer0.module.weight.dtype == torch.float64
    x = torch.rand(2, 16, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(loaded(x), m(x))


# -- atomic writing ---------------------------------------------------------------------------

def test_failed_save_leaves_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    _model(seed=1).save(path)
    old = path.read_bytes()
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial bytes that are not a checkpoint")
        f.flush()
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="^disk full$"):
        _model(seed=2).save(path)
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == old
    assert _files(tmp_path) == ["m.pt"]
    HookedMLP.load(path)


def test_failed_first_save_creates_nothing(tmp_path, monkeypatch):
    def failing_save(obj, f, *args, **kwargs):
        f.write(b"x" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        _model().save(tmp_path / "new.pt")
    assert _files(tmp_path) == []


def test_saved_file_has_normal_permissions(tmp_path):
    path = tmp_path / "m.pt"
    _model().save(path)
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


# -- refusing bad files ---------------------------------------------------------------------------

def test_malicious_pickle_is_refused_without_running(tmp_path):
    # the payload is live: plain unpickling runs it
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_CreatesFile(probe))).close()
    assert probe.exists()

    target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "hookedmlp.checkpoint", "payload": _CreatesFile(target)}, path)
    with pytest.raises(CheckpointError, match=re.escape(
            f"checkpoint {str(path)!r} contains pickled objects other than tensors and plain containers")) as info:
        HookedMLP.load(path)
    assert "refusing to load it (it could run code)" in str(info.value)
    assert "torch.load(weights_only=False)" in str(info.value)
    assert not target.exists()


def test_truncated_file(tmp_path):
    good = tmp_path / "good.pt"
    _model().save(good)
    data = good.read_bytes()
    for n in (len(data) // 2, 10, 0):
        bad = tmp_path / f"trunc{n}.pt"
        bad.write_bytes(data[:n])
        with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {str(bad)!r} is truncated or corrupt (")) as info:
            HookedMLP.load(bad)
        assert str(info.value).endswith("; re-create it")


def test_garbage_file(tmp_path):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {str(bad)!r} is truncated or corrupt")):
        HookedMLP.load(bad)


def test_directory_path(tmp_path):
    with pytest.raises(CheckpointError, match=re.escape(
            f"checkpoint {str(tmp_path)!r} is a directory; expected a file written by hookedmlp")):
        HookedMLP.load(tmp_path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {str(path)!r} does not exist; check the path")):
        HookedMLP.load(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(str(path))


def _edited(tmp_path, edit):
    c = _model().checkpoint()
    edit(c)
    path = tmp_path / "edited.pt"
    torch.save(c, path)
    return path


@pytest.mark.parametrize("edit,message", [
    (lambda c: c["state_dict"].__setitem__("layer0.module.weight", torch.zeros(8, 15)),
     "does not match the architecture it describes (missing [], unexpected [], shape mismatches "
     "['layer0.module.weight: (8, 15) vs (8, 16)']); the file is corrupt or was edited"),
    (lambda c: c["state_dict"].pop("layer4.module.bias"),
     "(missing ['layer4.module.bias'], unexpected [], shape mismatches [])"),
    (lambda c: c["state_dict"].__setitem__("layer9.module.weight", torch.zeros(1)),
     "(missing [], unexpected ['layer9.module.weight'], shape mismatches [])"),
    (lambda c: c["specs"].pop(),
     "unexpected ['layer4.module.bias', 'layer4.module.weight']"),
])
def test_state_dict_not_matching_specs(tmp_path, edit, message):
    path = _edited(tmp_path, edit)
    with pytest.raises(CheckpointError, match=re.escape(message)) as info:
        HookedMLP.load(path)
    assert str(info.value).startswith(f"{str(path)!r} does not match the architecture it describes (")


def test_specs_whose_widths_do_not_chain(tmp_path):
    path = _edited(tmp_path, lambda c: c["specs"].__setitem__(2, {**c["specs"][2], "d_out": 5}))
    with pytest.raises(CheckpointError, match=re.escape(
            f"{str(path)!r} describes an impossible architecture: layer 3 (relu) reads 8 features but layer 2 writes 5")):
        HookedMLP.load(path)


@pytest.mark.parametrize("edit,exc,message", [
    (lambda c: c.__setitem__("version", 2), CheckpointError, "has checkpoint version 2; this hookedmlp reads version 1"),
    (lambda c: c["specs"][1].__setitem__("kind", "swish"), CheckpointError, "unknown layer kind 'swish'"),
    (lambda c: c["specs"][0].pop("d_in"), CheckpointError, "malformed layer spec"),
])
def test_bad_header(tmp_path, edit, exc, message):
    with pytest.raises(exc, match=re.escape(message)):
        HookedMLP.load(_edited(tmp_path, edit))


def test_plain_state_dict_is_not_a_checkpoint(tmp_path, tiny_seq):
    path = tmp_path / "model.pth"
    torch.save(tiny_seq.state_dict(), path)
    with pytest.raises(CheckpointError, match=re.escape(
            f"{str(path)!r} is not a hookedmlp checkpoint (got ['0.bias', '0.weight', '2.bias', '2.weight']); "
            "for a plain state dict use HookedMLP.from_state_dict(torch.load(path, weights_only=True))")):
        HookedMLP.load(path)
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match=re.escape("is not a hookedmlp checkpoint (got list)")):
        HookedMLP.load(path)


def test_checkpoint_missing_fields_raise_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="specs"):
        HookedMLP.load(_edited(tmp_path, lambda c: c.pop("specs")))


# -- pretrained -------------------------------------------------------------------------------------

def test_pretrained_loads_and_matches_card():
    card = pretrained_card()
    m = HookedMLP.from_pretrained()
    assert [s.kind for s in m.specs] == ["linear", "relu", "linear", "relu", "linear"]
    assert (m.d_in, m.d_out) == (784, 10)
    assert not m.training
    weights = ckpt_mod._pretrained_files("mnist-mlp")[0]
    assert sha256_file(weights) == card["sha256"]
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(m(x), m.to_sequential()(x))


def test_pretrained_unknown_name():
    with pytest.raises(CheckpointError, match=re.escape(
            "unknown pretrained model 'mnist_mlp'; did you mean 'mnist-mlp'? (available: mnist-mlp)")):
        HookedMLP.from_pretrained("mnist_mlp")
    with pytest.raises(CheckpointError, match=re.escape("unknown pretrained model 'cifar' (available: mnist-mlp)")):
        HookedMLP.from_pretrained("cifar")


def test_pretrained_checksum_mismatch(monkeypatch):
    card = dict(pretrained_card(), sha256="0" * 64)
    monkeypatch.setattr(ckpt_mod, "pretrained_card", lambda name="mnist-mlp": card)
    with pytest.raises(CheckpointError, match=re.escape(
            f"pretrained 'mnist-mlp' fails its checksum: expected sha256 {'0' * 64}, got ")):
        HookedMLP.from_pretrained()


def test_layer_spec_list_checkpoint_specs_are_layer_specs(tmp_path):
    m = _model()
    m.save(tmp_path / "m.pt")
    assert all(isinstance(s, LayerSpec) for s in HookedMLP.load(tmp_path / "m.pt").specs)


# -- the MLPConfig travels with the checkpoint ------------------------------------------------

@pytest.mark.parametrize("cfg", [MLPConfig(d_in=16, d_hidden=(8, 8), d_out=3),
                                 MLPConfig(d_in=16, d_hidden=(8,), d_out=3, activation="gelu", dropout=0.1)])
def test_config_round_trips(tmp_path, cfg):
    torch.manual_seed(0)
    HookedMLP(cfg).save(tmp_path / "m.pt")
    assert HookedMLP.load(tmp_path / "m.pt").config == cfg


def test_model_without_config_loads_without_one(tmp_path, tiny):
    tiny.save(tmp_path / "m.pt")  # from_sequential: described by its specs only
    assert tiny.config is None and HookedMLP.load(tmp_path / "m.pt").config is None


def test_shipped_model_has_its_config():
    assert HookedMLP.from_pretrained("mnist-mlp").config == MLPConfig()


def test_config_that_contradicts_the_specs_is_refused(tmp_path):
    HookedMLP(MLPConfig(d_in=16, d_hidden=(8, 8), d_out=3)).save(tmp_path / "m.pt")
    data = torch.load(tmp_path / "m.pt", weights_only=True)
    data["config"]["activation"] = "tanh"
    torch.save(data, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=re.escape("has a config that does not describe its layers")):
        HookedMLP.load(tmp_path / "m.pt")
    data["config"] = {"d_in": "x"}
    torch.save(data, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=re.escape("has an unreadable config {'d_in': 'x'}")):
        HookedMLP.load(tmp_path / "m.pt")
