"""Checkpoints for every supported network: round trips with architecture and buffers, weights-only and atomic;
files checked against their architecture before any tensor is allocated; version 1 files; edited and corrupt files."""

import copy
import os
import pickle
import re
import resource
from pathlib import Path

import pytest
import torch
from torch import nn

import hookedmlp
from hookedmlp import (
    CheckpointError,
    FileWriteError,
    HookedMLP,
    LeNetConfig,
    MLPConfig,
    ResidualConfig,
    ResidualMLP,
    SizeError,
    UnsupportedNetworkError,
)
from hookedmlp.files.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from hookedmlp.models.modules import describe
from hookedmlp.sizes import memory_budget
from hookedmlp_cli.commands import main

pytestmark = pytest.mark.usefixtures("one_thread")


class _CreatesFile:
    """A pickle payload: unpickling it calls open(path, "w"), creating the file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 2, 5, padding=2),
            nn.BatchNorm2d(2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2, 3, 5),
            nn.ReLU(),
            nn.AvgPool2d(2),
        )
        self.head = nn.Sequential(nn.Linear(75, 8), nn.ReLU(), nn.Linear(8, 10))

    def forward(self, x):
        return self.head(self.features(x).view(len(x), -1))


def _trained_stats(net, shape):
    """A few training-mode passes, so batch norm's running statistics are not their initial values."""
    net.train()
    with torch.no_grad():
        for seed in range(3):
            net(torch.rand(6, *shape, generator=torch.Generator().manual_seed(seed)))
    return net.eval()


def _mlp(cfg=None, seed=0, **kw):
    torch.manual_seed(seed)
    return HookedMLP(cfg or MLPConfig(d_in=16, d_hidden=(8, 8), d_out=3), **kw)


def _cnn():
    torch.manual_seed(0)
    return HookedMLP.from_module(_trained_stats(LeNet(), (1, 28, 28)))


def _residual():
    torch.manual_seed(0)
    return ResidualMLP(ResidualConfig(d_in=16, d_model=8, d_mlp=12, n_blocks=2, d_out=3)).eval()


MODELS = {
    "mlp": lambda: _mlp().eval(),
    "mlp_dropout_no_bias": lambda: _mlp(
        MLPConfig(d_in=16, d_hidden=(8,), d_out=3, activation="leaky_relu", dropout=0.3, bias=False)
    ).eval(),
    "mlp_custom_input_shape": lambda: _mlp(
        MLPConfig(d_in=16, d_hidden=(8, 4, 6), d_out=2, activation="gelu"), input_shape=(2, 8)
    ).eval(),
    "layernorm_mlp": lambda: _mlp(
        MLPConfig(d_in=16, d_hidden=(8, 8), d_out=3, norm="layernorm", activation="silu")
    ).eval(),
    "batchnorm_mlp": lambda: HookedMLP.from_module(
        _trained_stats(_mlp(MLPConfig(d_in=16, d_hidden=(8,), d_out=3, norm="batchnorm")).to_sequential(), (16,))
    ),
    "sequential": lambda: HookedMLP.from_sequential(
        nn.Sequential(
            nn.Linear(16, 5), nn.GELU(approximate="tanh"), nn.Linear(5, 4), nn.LeakyReLU(0.2), nn.Linear(4, 2)
        )
    ).eval(),
    "cnn_batchnorm2d": _cnn,
    "lenet_config": lambda: _mlp(LeNetConfig(channels=(2, 3), d_hidden=(8, 6))).eval(),
    "residual": _residual,
}


def _input(model, seed=1):
    return torch.rand(4, *model.input_shape, generator=torch.Generator().manual_seed(seed))


def _contents(model, meta=None):
    """What save_checkpoint writes."""
    return {
        "format": FORMAT,
        "version": 2,
        "architecture": model.architecture,
        **model.to_checkpoint(),
        "meta": dict(meta or {}),
    }


def _files(d):
    return sorted(p.name for p in Path(d).iterdir())


# -- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("key", MODELS)
def test_round_trip(tmp_path, key):
    m = MODELS[key]()
    path = tmp_path / "m.pt"
    m.save(path, meta={"note": "hello", "epoch": 3})
    loaded = hookedmlp.load(path)
    assert type(loaded) is type(m) and loaded is not m and not loaded.training
    assert loaded.meta == {"note": "hello", "epoch": 3}
    assert loaded.hook_names == m.hook_names and loaded.input_shape == m.input_shape
    assert loaded.config == m.config
    assert [type(x) for x in loaded.modules()] == [type(x) for x in m.modules()]
    if isinstance(m, HookedMLP):
        assert [(layer.path, describe(layer.module, "")) for layer in loaded.layout.layers] == [
            (layer.path, describe(layer.module, "")) for layer in m.layout.layers
        ]
    a, b = m.state_dict(), loaded.state_dict()
    assert list(a) == list(b)  # buffers (batch norm's running statistics) included
    for k in a:
        assert torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype and a[k].data_ptr() != b[k].data_ptr(), k
    x = _input(m)
    with torch.no_grad():
        assert torch.equal(loaded(x), m(x))
        _, ca = m.run_with_cache(x)
        _, cb = loaded.run_with_cache(x)
    assert all(torch.equal(ca[n], cb[n]) for n in m.hook_names)
    assert _files(tmp_path) == ["m.pt"]  # no temporary file left behind


def test_batch_norm_statistics_travel_with_the_file(tmp_path):
    m = _cnn()
    bn = m.layer1.module
    assert (
        isinstance(bn, nn.BatchNorm2d)
        and int(bn.num_batches_tracked) == 3
        and not torch.equal(bn.running_var, torch.ones(2))
    )
    m.save(tmp_path / "cnn.pt")
    loaded = HookedMLP.load(tmp_path / "cnn.pt")
    assert torch.equal(loaded.layer1.module.running_mean, bn.running_mean)
    assert torch.equal(loaded.layer1.module.running_var, bn.running_var)
    assert int(loaded.layer1.module.num_batches_tracked) == 3
    assert loaded.layer7.path == "<reshape in forward, before head.0>" and loaded.layer8.path == "head.0"


def test_checkpoint_contents():
    c = _contents(_mlp())
    assert set(c) == {
        "format",
        "version",
        "architecture",
        "layers",
        "input_shape",
        "first_shape",
        "config",
        "state_dict",
        "meta",
    }
    assert c["architecture"] == "chain" and c["input_shape"] == [1, 4, 4] and c["first_shape"] == [16]
    assert c["config"] == {
        "kind": "mlp",
        "d_in": 16,
        "d_hidden": (8, 8),
        "d_out": 3,
        "activation": "relu",
        "dropout": 0.0,
        "norm": "none",
        "bias": True,
    }
    assert c["layers"][0] == {
        "type": "Linear",
        "args": {"in_features": 16, "out_features": 8, "bias": True},
        "path": "0",
    }
    assert c["layers"][1] == {"type": "ReLU", "args": {"inplace": False}, "path": "1"}
    assert all(not v.requires_grad and v.device.type == "cpu" for v in c["state_dict"].values())
    r = _contents(_residual())
    assert set(r) == {"format", "version", "architecture", "config", "state_dict", "meta"}
    assert r["architecture"] == "residual_mlp" and r["config"]["kind"] == "residual"


def test_load_to_device_and_dtype(tmp_path):
    m = _mlp().double()
    m.save(tmp_path / "m.pt")
    loaded = HookedMLP.load(tmp_path / "m.pt", device="cpu")
    assert loaded.layer0.module.weight.dtype == torch.float64 and loaded.layer0.module.weight.device.type == "cpu"
    x = torch.rand(2, 16, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(loaded(x), m(x))


def test_load_checks_the_class(tmp_path):
    _residual().save(tmp_path / "r.pt")
    with pytest.raises(
        CheckpointError,
        match=re.escape(
            f"{str(tmp_path / 'r.pt')!r} holds a ResidualMLP, not a HookedMLP; load it with ResidualMLP.load or "
            "hookedmlp.load"
        ),
    ):
        HookedMLP.load(tmp_path / "r.pt")
    assert isinstance(ResidualMLP.load(tmp_path / "r.pt"), ResidualMLP)


def test_save_overwrites_and_creates_parents(tmp_path):
    path = tmp_path / "a" / "b" / "m.pt"
    _mlp(seed=1).save(path)
    m2 = _mlp(seed=2)
    m2.save(path)
    x = torch.rand(3, 16)
    with torch.no_grad():
        assert torch.equal(HookedMLP.load(path)(x), m2(x))


def test_save_to_a_directory_raises(tmp_path):
    with pytest.raises(
        FileWriteError, match=re.escape(f"cannot write {str(tmp_path)!r}: it is a directory; pass a file path")
    ):
        _mlp().save(tmp_path)


class Custom(nn.Module):
    def forward(self, x):
        return x * 2


def test_a_model_with_an_opaque_module_refuses_to_save(tmp_path):
    m = HookedMLP.from_module(nn.Sequential(nn.Linear(16, 8), Custom(), nn.Linear(8, 3)))
    with pytest.raises(
        UnsupportedNetworkError,
        match=re.escape(
            "cannot save layer1 (1) (Custom): hookedmlp can save only torch.nn's own modules; save your network's "
            "state_dict, and rebuild the network and wrap it with HookedMLP.from_module"
        ),
    ):
        m.save(tmp_path / "m.pt")
    assert _files(tmp_path) == []


# -- atomic writing -------------------------------------------------------------------------------


def test_failed_save_leaves_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    _mlp(seed=1).save(path)
    old = path.read_bytes()

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial bytes that are not a checkpoint")
        f.flush()
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(FileWriteError, match=re.escape(f"cannot write {str(path)!r}: disk full (old file kept)")):
        _mlp(seed=2).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == old and _files(tmp_path) == ["m.pt"]
    HookedMLP.load(path)


def test_failed_first_save_creates_nothing(tmp_path, monkeypatch):
    def failing_save(obj, f, *args, **kwargs):
        f.write(b"x" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        _cnn().save(tmp_path / "new.pt")
    assert _files(tmp_path) == []


def test_saved_file_has_normal_permissions(tmp_path):
    path = tmp_path / "m.pt"
    _mlp().save(path)
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


# -- weights only, and checked before anything is allocated ---------------------------------------


def test_malicious_pickle_is_refused_without_running(tmp_path):
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_CreatesFile(probe))).close()
    assert probe.exists()  # the payload is live: plain unpickling runs it

    target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "payload": _CreatesFile(target)}, path)
    with pytest.raises(
        CheckpointError,
        match=re.escape(f"checkpoint {str(path)!r} contains pickled objects other than tensors and plain containers"),
    ) as info:
        HookedMLP.load(path)
    assert "refusing to load it (it could run code)" in str(info.value)
    assert not target.exists()


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def _rss_mb():
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _load_bounded(path, margin_mb=200, error=CheckpointError):
    """Load ``path`` expecting ``error``, and check the process's peak memory grew by less than ``margin_mb``."""
    if not Path("/proc/self/statm").exists():
        pytest.skip("needs Linux's /proc to read the resident set size")
    base = max(_peak_mb(), _rss_mb())
    with pytest.raises(error) as info:
        hookedmlp.load(path)
    assert _peak_mb() < base + margin_mb
    return str(info.value)


def _huge_linear_file(tmp_path, weight, bias):
    """A tiny file whose layers describe Linear(10**6, 10**5): 400 GB of weights."""
    c = _contents(HookedMLP.from_sequential([nn.Linear(16, 8)]))
    c["layers"][0]["args"].update(in_features=10**6, out_features=10**5)
    c["input_shape"] = c["first_shape"] = [10**6]
    c["state_dict"] = {"layer0.module.weight": weight, "layer0.module.bias": bias}
    path = tmp_path / "huge.pt"
    torch.save(c, path)
    assert path.stat().st_size < 4000
    return path


def test_a_tiny_file_describing_a_huge_model_allocates_nothing(tmp_path):
    path = _huge_linear_file(tmp_path, torch.zeros(8, 16), torch.zeros(8))
    message = _load_bounded(path)
    assert message == (
        f"{str(path)!r} does not match the architecture it describes (missing [], unexpected [], shape "
        "mismatches ['layer0.module.weight: [8, 16] vs [100000, 1000000]', 'layer0.module.bias: [8] vs "
        "[100000]']); the file is corrupt or was edited"
    )


def test_a_tiny_file_with_expanded_tensors_of_the_huge_shape_is_refused(tmp_path):
    """expand() makes a view of the right shape over one stored number: the file stays tiny, the model would not."""
    path = _huge_linear_file(tmp_path, torch.zeros(1).expand(10**5, 10**6), torch.zeros(1).expand(10**5))
    message = _load_bounded(path)
    assert message == (
        f"checkpoint {str(path)!r}: tensor 'state_dict/layer0.module.weight' of shape [100000, 1000000] declares "
        "100,000,000,000 elements but the file stores only 4 bytes for it (a view such as expand()); the file is "
        "corrupt or was edited, re-save it with hookedmlp"
    )


def test_a_huge_residual_config_with_small_weights_is_refused(tmp_path):
    c = _contents(_residual())
    c["config"].update(d_model=10**5, d_mlp=10**5)
    torch.save(c, tmp_path / "r.pt")
    with memory_budget(2**30):
        message = _load_bounded(tmp_path / "r.pt", error=SizeError)
    assert message.startswith(
        "a residual MLP, d_model 100000, 2 blocks of d_mlp 100000, relu, layernorm needs 149.0 GiB (160,016,400,024 "
        "bytes), above hookedmlp's memory budget of 1.0 GiB (set by memory_budget()); use smaller widths"
    )


def test_a_parameterless_chain_of_huge_activations_is_refused_before_allocating(tmp_path):
    """No weights to declare, but one example's activations would take 149 GiB: refused on the estimate."""
    c = _contents(HookedMLP.from_sequential([nn.Unflatten(1, (2, 2)), nn.Flatten()], input_shape=(4,)))
    c["layers"][0]["args"]["unflattened_size"] = [10**5, 10**5]
    c["input_shape"] = c["first_shape"] = [10**10]
    torch.save(c, tmp_path / "p.pt")
    with memory_budget(2**30):
        message = _load_bounded(tmp_path / "p.pt", error=SizeError)
    assert message == (
        f"one example's activations in {str(tmp_path / 'p.pt')!r} needs 149.0 GiB (160,000,000,000 bytes), above "
        "hookedmlp's memory budget of 1.0 GiB (set by memory_budget()); the file is corrupt or describes too big a "
        "network, or pass a larger memory_budget()"
    )


# -- version 1 files (the first hookedmlp) ---------------------------------------------------------


def _v1(specs, state_dict, input_shape, config=None, in_meta=False):
    """A version 1 checkpoint as the first hookedmlp wrote it (its ``HookedMLP.checkpoint``)."""
    c = {
        "format": FORMAT,
        "version": 1,
        "specs": specs,
        "input_shape": input_shape,
        "state_dict": state_dict,
        "meta": {"note": "v1"},
    }
    if config is not None:
        if in_meta:  # the shipped model of that version kept it in meta
            c["meta"]["config"] = config
        else:
            c["config"] = config
    return c


def _spec(kind, d_in, d_out, bias=True, param=0.0):
    return {"kind": kind, "d_in": d_in, "d_out": d_out, "bias": bias, "param": param}


@pytest.mark.parametrize("in_meta", [False, True])
def test_version_1_files_still_load(tmp_path, in_meta):
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    sd = {f"layer{i}.module.{k}": v for i, m in enumerate(seq) for k, v in m.state_dict().items()}
    config = {"d_in": 16, "d_hidden": (8,), "d_out": 3, "activation": "relu", "dropout": 0.0, "bias": True}
    specs = [_spec("linear", 16, 8), _spec("relu", 8, 8), _spec("linear", 8, 3)]
    torch.save(_v1(specs, sd, [1, 4, 4], config, in_meta), tmp_path / "v1.pt")
    m = HookedMLP.load(tmp_path / "v1.pt")
    assert m.config == MLPConfig(d_in=16, d_hidden=(8,), d_out=3) and m.input_shape == (1, 4, 4)
    assert m.meta["note"] == "v1"
    x = torch.rand(3, 1, 4, 4)
    with torch.no_grad():
        assert torch.equal(m(x), seq(x.reshape(3, 16)))


def test_version_1_activation_kinds(tmp_path):
    torch.manual_seed(0)
    seq = nn.Sequential(
        nn.Linear(6, 5),
        nn.GELU(approximate="tanh"),
        nn.Linear(5, 5),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.3),
        nn.Linear(5, 4, bias=False),
        nn.Tanh(),
        nn.Linear(4, 4),
        nn.Sigmoid(),
        nn.Linear(4, 2),
    ).eval()
    specs = [
        _spec("linear", 6, 5),
        _spec("gelu", 5, 5, param=1.0),
        _spec("linear", 5, 5),
        _spec("leaky_relu", 5, 5, param=0.2),
        _spec("dropout", 5, 5, param=0.3),
        _spec("linear", 5, 4, bias=False),
        _spec("tanh", 4, 4),
        _spec("linear", 4, 4),
        _spec("sigmoid", 4, 4),
        _spec("linear", 4, 2),
    ]
    sd = {f"layer{i}.module.{k}": v for i, m in enumerate(seq) for k, v in m.state_dict().items()}
    torch.save(_v1(specs, sd, [6]), tmp_path / "v1.pt")
    m = HookedMLP.load(tmp_path / "v1.pt")
    assert m.config is None
    assert m.layer1.module.approximate == "tanh" and m.layer3.module.negative_slope == 0.2 and m.layer4.module.p == 0.3
    x = torch.rand(3, 6)
    with torch.no_grad():
        assert torch.equal(m(x), seq(x))


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda c: c.pop("specs"), "lacks a list 'specs'; the file is corrupt or was edited"),
        (lambda c: c["specs"][1].__setitem__("kind", "swish"), "unknown layer kind 'swish' in a version 1 file"),
        (lambda c: c["specs"][0].pop("d_in"), "malformed layer spec"),
        (
            lambda c: c["specs"][1].__setitem__("d_out", 5),
            "describes an impossible architecture: layer 1 (relu) reads 8 features and writes 5, after a layer "
            "writing 8",
        ),
        (
            lambda c: c["specs"][2].__setitem__("d_in", 7),
            "describes an impossible architecture: layer 2 (linear) reads 7 features and writes 3, after a layer "
            "writing 8",
        ),
        (
            lambda c: c["state_dict"].pop("layer2.module.bias"),
            "(missing ['layer2.module.bias'], unexpected [], shape mismatches [])",
        ),
    ],
)
def test_corrupt_version_1_files(tmp_path, edit, message):
    seq = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    sd = {f"layer{i}.module.{k}": v for i, m in enumerate(seq) for k, v in m.state_dict().items()}
    c = _v1([_spec("linear", 16, 8), _spec("relu", 8, 8), _spec("linear", 8, 3)], sd, [16])
    edit(c)
    torch.save(c, tmp_path / "v1.pt")
    with pytest.raises(CheckpointError, match=re.escape(message)):
        HookedMLP.load(tmp_path / "v1.pt")


# -- edited and corrupt files ------------------------------------------------------------------------


def _edited(tmp_path, edit, model=None):
    c = _contents(model if model is not None else _mlp())
    edit(c)
    path = tmp_path / "edited.pt"
    torch.save(c, path)
    return path


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            lambda c: c["state_dict"].__setitem__("layer0.module.weight", torch.zeros(8, 15)),
            "does not match the architecture it describes (missing [], unexpected [], shape mismatches "
            "['layer0.module.weight: [8, 15] vs [8, 16]']); the file is corrupt or was edited",
        ),
        (
            lambda c: c["state_dict"].pop("layer4.module.bias"),
            "(missing ['layer4.module.bias'], unexpected [], shape mismatches [])",
        ),
        (
            lambda c: c["state_dict"].__setitem__("layer9.module.weight", torch.zeros(1)),
            "(missing [], unexpected ['layer9.module.weight'], shape mismatches [])",
        ),
        (lambda c: c["layers"].pop(), "unexpected ['layer4.module.bias', 'layer4.module.weight']"),
    ],
)
def test_state_dict_not_matching_the_layers(tmp_path, edit, message):
    path = _edited(tmp_path, edit)
    with pytest.raises(CheckpointError, match=re.escape(message)) as info:
        HookedMLP.load(path)
    assert str(info.value).startswith(f"{str(path)!r} does not match the architecture it describes (")


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda c: c.__setitem__("version", 3), "has checkpoint version 3; this hookedmlp reads versions 1 and 2"),
        (
            lambda c: c.__setitem__("architecture", "transformer"),
            "holds architecture 'transformer'; this hookedmlp reads 'chain', 'residual_mlp'",
        ),
        (
            lambda c: c.pop("layers"),
            "lacks a list of layers and positive input and first shapes; the file is corrupt or was edited",
        ),
        (
            lambda c: c.__setitem__("input_shape", [1, -4, 4]),
            "lacks a list of layers and positive input and first shapes",
        ),
        (
            lambda c: c.__setitem__("first_shape", [15]),
            "describes an impossible architecture: first_shape [15] is neither input_shape [1, 4, 4] nor its "
            "flattening [16]",
        ),
        (
            lambda c: c["layers"][1].__setitem__("type", "Swish"),
            "layer 1: unknown module type 'Swish'; the file is corrupt or from a newer hookedmlp",
        ),
        (lambda c: c["layers"][1]["args"].__setitem__("negative_slope", 0.1), "layer 1: malformed arguments for ReLU"),
        (
            lambda c: c["layers"][2]["args"].__setitem__("in_features", 9),
            "describes an impossible architecture: layer2 (Linear) reads 9 features, but its input has shape [8] per "
            "example",
        ),
        (lambda c: c["state_dict"].__setitem__("layer0.module.bias", [0.0] * 8), "lacks a state_dict of tensors"),
        (lambda c: c.__setitem__("meta", [1]), "has meta of type list; expected a dict"),
        (lambda c: c["config"].__setitem__("activation", "tanh"), "has a config that does not describe its layers"),
        (lambda c: c["config"].__setitem__("d_in", "x"), "config: "),
    ],
)
def test_edited_headers(tmp_path, edit, message):
    with pytest.raises(CheckpointError, match=re.escape(message)):
        HookedMLP.load(_edited(tmp_path, edit))


def test_an_edited_residual_file(tmp_path):
    path = _edited(tmp_path, lambda c: c.__setitem__("config", None), _residual())
    with pytest.raises(
        CheckpointError, match=re.escape("lacks a residual MLP config; the file is corrupt or was edited")
    ):
        hookedmlp.load(path)


def test_truncated_and_garbage_files(tmp_path):
    good = tmp_path / "good.pt"
    _cnn().save(good)
    data = good.read_bytes()
    for n in (len(data) // 2, 10, 0):
        bad = tmp_path / f"trunc{n}.pt"
        bad.write_bytes(data[:n])
        with pytest.raises(
            CheckpointError, match=re.escape(f"checkpoint {str(bad)!r} is truncated or corrupt (")
        ) as info:
            HookedMLP.load(bad)
        assert str(info.value).endswith("; re-create it")
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(
        CheckpointError,
        match=re.escape(
            f"checkpoint {str(bad)!r} is not a file written by torch.save (it starts "
            "with b'this is '); pass a .pt file written by hookedmlp"
        ),
    ):
        HookedMLP.load(bad)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(
        CheckpointError,
        match=re.escape(f"checkpoint {str(tmp_path)!r} is a directory; expected a file written by hookedmlp"),
    ):
        HookedMLP.load(tmp_path)
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {str(path)!r} does not exist; check the path")):
        load_checkpoint(str(path))


def test_plain_state_dict_is_not_a_checkpoint(tmp_path, tiny_seq):
    path = tmp_path / "model.pth"
    torch.save(tiny_seq.state_dict(), path)
    with pytest.raises(
        CheckpointError,
        match=re.escape(
            f"{str(path)!r} is not a hookedmlp checkpoint (got ['0.bias', '0.weight', '2.bias', '2.weight']); "
            "for a plain state dict use HookedMLP.from_state_dict(torch.load(path, weights_only=True))"
        ),
    ):
        HookedMLP.load(path)
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match=re.escape("is not a hookedmlp checkpoint (got list)")):
        HookedMLP.load(path)


# -- configs, and the CLI ------------------------------------------------------------------------------


def test_model_without_config_loads_without_one(tmp_path, tiny):
    tiny.save(tmp_path / "m.pt")  # from_sequential: described by its layers only
    assert tiny.config is None and HookedMLP.load(tmp_path / "m.pt").config is None


def test_save_checkpoint_and_the_method_write_the_same(tmp_path):
    m = _mlp()
    save_checkpoint(m, tmp_path / "a.pt", meta={"k": 1})
    m.save(tmp_path / "b.pt", meta={"k": 1})
    a, b = (torch.load(tmp_path / n, weights_only=True) for n in ("a.pt", "b.pt"))
    assert a.keys() == b.keys() and all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert {k: v for k, v in a.items() if k != "state_dict"} == {k: v for k, v in b.items() if k != "state_dict"}


def test_meta_defaults_to_the_models_own(tmp_path):
    m = copy.deepcopy(_mlp())
    m.meta = {"trained": "yes"}
    m.save(tmp_path / "m.pt")
    assert HookedMLP.load(tmp_path / "m.pt").meta == {"trained": "yes"}


def test_the_cli_lists_the_hooks_of_any_checkpoint(tmp_path, capsys):
    _cnn().save(tmp_path / "cnn.pt")
    _residual().save(tmp_path / "res.pt")
    assert main(["hooks", "--checkpoint", str(tmp_path / "cnn.pt")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 * 11
    assert re.fullmatch(
        r"layer0\.post +\[batch, 2, 28, 28\] +output of Conv2d\(1, 2, kernel_size=\(5, 5\), stride=\(1, 1\), "
        r"padding=\(2, 2\)\)  \(from features\.0\)",
        lines[1],
    )
    assert re.fullmatch(
        r"layer7\.post +\[batch, 75\] +output of Reshape\(shape=\[75\]\)  \(from <reshape in forward, "
        r"before head\.0>\)",
        lines[15],
    )
    assert main(["hooks", "--checkpoint", str(tmp_path / "res.pt")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"blocks\.1\.mlp\.hook_post +\[batch, 12\] +hook point in forward", lines[8])
