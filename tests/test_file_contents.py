"""What a .pt file may hold (issue 21, items 3, 8 and 9): every file the project reads (checkpoints, steering
vectors, the study's cached models) goes through ``safe_load``, which checks sizes before anything is
materialised; checkpoints' contents are checked by one rule on saving and on loading."""

import json
import os
import re
import resource
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

import hookedmlp
from hookedmlp import CheckpointError, HookedMLP, ResidualConfig, ResidualMLP, SizeError, SteeringVector
from hookedmlp.files.checkpoint import FORMAT, load_checkpoint
from hookedmlp.files.safe_load import safe_load
from hookedmlp.sizes import memory_budget
from hookedmlp.train import write_card
from hookedmlp_cli.commands import main

pytestmark = pytest.mark.usefixtures("one_thread")


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _contents(model, meta=None):
    """What save_checkpoint writes, to edit before torch.save."""
    return {
        "format": FORMAT,
        "version": 2,
        "architecture": model.architecture,
        **model.to_checkpoint(),
        "meta": meta or {},
    }


@pytest.fixture
def small(tiny_seq):
    return HookedMLP.from_sequential(tiny_seq).eval()


# -- sizes, for every file ----------------------------------------------------------------------------------


def test_a_vector_file_declaring_10_to_the_12_elements_is_refused_without_touching_them(tmp_path):
    """The probe: a few hundred bytes holding an expand()ed tensor; before, load() touched all 10**12 elements."""
    path = tmp_path / "v.pt"
    meta = json.dumps({"label": "hostile"})
    torch.save(
        {
            "format": "hookedmlp.steering_vector",
            "version": 1,
            "vectors": {"layer0.post": torch.zeros(1).expand(10**12)},
            "meta": meta,
        },
        path,
    )
    assert path.stat().st_size < 2000
    base = _peak_mb()
    with pytest.raises(CheckpointError) as info:
        SteeringVector.load(path)
    assert _peak_mb() < base + 50
    assert str(info.value) == (
        f"steering vector {str(path)!r}: tensor 'vectors/layer0.post' of shape [1000000000000] declares "
        "1,000,000,000,000 elements but the file stores only 4 bytes for it (a view such as expand()); the file is "
        "corrupt or was edited, re-save it with hookedmlp"
    )


def test_an_expanded_tensor_anywhere_in_a_checkpoint_is_refused(tmp_path, small):
    path = tmp_path / "m.pt"
    torch.save(_contents(small, meta={"extra": [1, {"t": torch.zeros(1).expand(10**6, 10**6)}]}), path)
    with pytest.raises(
        CheckpointError, match=re.escape("tensor 'meta/extra/1/t' of shape [1000000, 1000000] declares")
    ):
        hookedmlp.load(path)


def test_views_that_each_fit_their_storage_but_together_exceed_the_budget_are_refused(tmp_path):
    path = tmp_path / "v.pt"
    one = torch.zeros(1000)
    torch.save({f"v{i}": one[:] for i in range(100)}, path)  # one stored storage, a hundred views of all of it
    with memory_budget(100 * 4000 - 1), pytest.raises(SizeError) as info:
        safe_load(path)
    assert str(info.value).startswith(f"file {str(path)!r} needs 390.6 KiB (400,000 bytes), above hookedmlp's memory")
    with memory_budget(100 * 4000):
        assert len(safe_load(path)) == 100


def test_a_deflated_file_declaring_more_than_the_budget_is_refused_before_it_is_read(tmp_path, monkeypatch):
    plain, path = tmp_path / "plain.pt", tmp_path / "bomb.pt"
    torch.save({"a": torch.zeros(10**6)}, plain)
    with zipfile.ZipFile(plain) as z, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for info in z.infolist():
            out.writestr(info.filename, z.read(info.filename))
    assert path.stat().st_size < 10_000

    def never(*args, **kwargs):
        raise AssertionError("torch.load ran")

    monkeypatch.setattr(torch, "load", never)
    with memory_budget(10**6), pytest.raises(SizeError, match=re.escape(f"loading file {str(path)!r} needs 3.8 MiB")):
        safe_load(path)


def test_a_fifo_is_refused_without_reading_it(tmp_path):
    """What `hookedmlp hooks --checkpoint /dev/zero` met (it read the whole device): not a regular file."""
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)  # opening it for reading would block: it must not be opened
    with pytest.raises(CheckpointError) as info:
        hookedmlp.load(fifo)
    assert str(info.value) == (
        f"checkpoint {str(fifo)!r} is not a regular file (a device, FIFO or socket); pass a .pt file written by "
        "hookedmlp"
    )


def test_the_cli_refuses_a_fifo_checkpoint_in_one_line(tmp_path, capsys):
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    assert main(["hooks", "--checkpoint", str(fifo)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"hookedmlp hooks: error: checkpoint {str(fifo)!r} is not a regular file (a device, FIFO or socket); pass a "
        ".pt file written by hookedmlp\n"
    )


def test_torchs_legacy_format_is_refused_before_its_storages_are_allocated(tmp_path, small):
    path = tmp_path / "legacy.pt"
    torch.save(_contents(small), path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError) as info:
        hookedmlp.load(path)
    assert str(info.value) == (
        f"checkpoint {str(path)!r} was written in torch's legacy format (_use_new_zipfile_serialization=False), whose "
        "storage sizes cannot be checked before they are allocated; re-save it with torch.save's default"
    )


# -- a checkpoint's contents: one rule on loading --------------------------------------------------------


def _edited(tmp_path, model, edit):
    c = _contents(model)
    edit(c["state_dict"])
    path = tmp_path / "edited.pt"
    torch.save(c, path)
    return path


def test_integer_weights_are_refused(tmp_path, small):
    path = _edited(tmp_path, small, lambda s: s.update({"layer0.module.weight": s["layer0.module.weight"].long()}))
    with pytest.raises(CheckpointError) as info:
        hookedmlp.load(path)
    assert str(info.value) == (
        f"{str(path)!r} holds tensors of the wrong kind (['layer0.module.weight: torch.int64']): weights must be "
        "floating point and counters integers; the file is corrupt or was edited"
    )


def test_a_float64_layer_among_float32_layers_is_refused(tmp_path, small):
    path = _edited(tmp_path, small, lambda s: s.update({"layer2.module.bias": s["layer2.module.bias"].double()}))
    with pytest.raises(CheckpointError) as info:
        hookedmlp.load(path)
    assert str(info.value) == (
        f"{str(path)!r}: its weights mix floating dtypes (torch.float32: ['layer0.module.weight', "
        "'layer0.module.bias'] and 3 more; torch.float64: ['layer2.module.bias']); a model has one dtype, so no input "
        "could match every layer; the file is corrupt or was edited (or convert it with model.to(torch.float32))"
    )


def test_a_whole_float64_model_still_loads(tmp_path, small):
    small.double().save(tmp_path / "d.pt")
    assert hookedmlp.load(tmp_path / "d.pt").reference_tensor().dtype == torch.float64


def test_nan_weights_are_refused_as_nan_vectors_are(tmp_path, small):
    def poison(s):
        s["layer2.module.weight"][0, :3] = float("nan")

    path = _edited(tmp_path, small, poison)
    with pytest.raises(CheckpointError) as info:
        hookedmlp.load(path)
    assert str(info.value) == (
        f"{str(path)!r}: tensor 'layer2.module.weight' has 3 NaN or infinite entries of 64; the file is corrupt or "
        "was edited"
    )


def test_tensors_sharing_one_storage_are_refused(tmp_path, small):
    """Before, they loaded as aliased weights: editing layer0.weight changed layer2.weight."""
    shared = torch.zeros(8, 8)

    def alias(s):
        s["layer2.module.weight"] = shared
        s["layer4.module.weight"] = shared[:3]

    path = _edited(tmp_path, small, alias)
    with pytest.raises(CheckpointError) as info:
        hookedmlp.load(path)
    assert str(info.value) == (
        f"{str(path)!r}: tensors 'layer2.module.weight' and 'layer4.module.weight' share one storage (tied or aliased "
        "weights), so editing one would edit the other; a checkpoint holds each weight on its own; the file is "
        "corrupt or was edited"
    )


def test_a_module_that_cannot_run_on_its_input_is_refused_at_load(tmp_path):
    """Softmax(dim=7) passes the shape probe on the meta device; one real example shows it cannot run."""
    model = HookedMLP.from_sequential([nn.Linear(4, 3), nn.Softmax(dim=1)], input_shape=(4,))
    c = _contents(model)
    c["layers"][1]["args"]["dim"] = 7
    torch.save(c, tmp_path / "s.pt")
    with pytest.raises(CheckpointError) as info:
        hookedmlp.load(tmp_path / "s.pt")
    assert str(info.value) == (
        f"{str(tmp_path / 's.pt')!r} describes a network that fails on one example of shape [4] (IndexError: "
        "Dimension out of range (expected to be in range of [-2, 1], but got 7)); the file is corrupt or was edited"
    )


def test_a_long_mismatch_is_one_short_line(tmp_path):
    """An edited n_blocks=1000 used to give one line of 163,836 characters."""
    model = ResidualMLP(ResidualConfig(d_in=4, d_model=4, d_mlp=4, n_blocks=2, d_out=2))
    c = _contents(model)
    c["config"]["n_blocks"] = 1000
    torch.save(c, tmp_path / "r.pt")
    with pytest.raises(CheckpointError) as info:
        hookedmlp.load(tmp_path / "r.pt")
    message = str(info.value)
    assert len(message) < 400
    assert message == (
        f"{str(tmp_path / 'r.pt')!r} does not match the architecture it describes (missing ['blocks.10.ln.bias', "
        "'blocks.10.ln.weight', 'blocks.10.mlp.W_in.bias', 'blocks.10.mlp.W_in.weight'] and 5984 more, unexpected [], "
        "shape mismatches []); the file is corrupt or was edited"
    )


# -- the same rule on saving: a file is written only if it can be read back ---------------------------------


def test_saving_nan_weights_is_refused_and_keeps_the_old_file(tmp_path, small):
    path = tmp_path / "m.pt"
    small.save(path)
    before = path.read_bytes()
    with torch.no_grad():
        small.layer0.module.weight[0, 0] = float("inf")
    with pytest.raises(CheckpointError) as info:
        small.save(path)
    assert str(info.value) == (
        f"cannot save HookedMLP to {str(path)!r}: tensor 'layer0.module.weight' has 1 NaN or infinite entries of "
        "128; the model is not saved; fix or retrain it"
    )
    assert path.read_bytes() == before


def test_saving_tied_weights_is_refused(tmp_path):
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    b.weight = a.weight
    model = HookedMLP.from_sequential([a, nn.ReLU(), b], input_shape=(4,))
    with pytest.raises(CheckpointError, match="tensors 'layer0.module.weight' and 'layer2.module.weight' share one"):
        model.save(tmp_path / "t.pt")
    assert not (tmp_path / "t.pt").exists()


def test_a_meta_that_is_not_json_is_refused_on_saving(tmp_path, small):
    """Before, save accepted a tensor in meta, and write_card failed later with a raw TypeError."""
    with pytest.raises(CheckpointError) as info:
        small.save(tmp_path / "m.pt", meta={"score": torch.tensor(0.5)})
    assert str(info.value) == (
        "a checkpoint's meta must be JSON data (str, finite numbers, bools, None, lists, dicts): Object of type "
        "Tensor is not JSON serializable; convert tensors and arrays with .tolist() and numpy numbers with float() "
        "or int()"
    )
    assert not (tmp_path / "m.pt").exists()


def test_write_card_of_an_older_file_with_a_tensor_in_meta_says_what_is_wrong(tmp_path, small):
    torch.save(_contents(small, meta={"test_loss": torch.tensor(0.5)}), tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="a card must be JSON data .* Object of type Tensor is not JSON"):
        write_card(tmp_path / "old.pt", tmp_path / "old.json")
    assert not (tmp_path / "old.json").exists()


def test_a_checkpoint_that_passes_every_check_round_trips(tmp_path, small):
    small.save(tmp_path / "m.pt", meta={"note": "fine", "values": [1.0, 2]})
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.meta == {"note": "fine", "values": [1.0, 2]}
    x = torch.rand(3, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded(x), small(x))
    assert Path(tmp_path / "m.pt").stat().st_size > 0
