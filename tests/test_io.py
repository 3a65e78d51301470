"""io.atomic_write / atomic_save / safe_load, and the shared error helpers."""

import os
import pickle
import re

import pytest
import torch

from hookedmlp import errors
from hookedmlp.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    FileWriteError,
    HookedMLPError,
    HookNameError,
    InputDtypeError,
    ShapeError,
    SteeringError,
    UsageError,
    closest,
    did_you_mean,
)
from hookedmlp.files.atomic import atomic_save, atomic_write
from hookedmlp.files.safe_load import safe_load

# -- atomic_write -------------------------------------------------------------------------------


def test_atomic_write_text_and_binary(tmp_path):
    t = tmp_path / "a.txt"
    with atomic_write(t, "w") as f:
        f.write("hello\n")
        assert not t.exists()  # nothing visible until the block ends
    assert t.read_text() == "hello\n"
    b = tmp_path / "b.bin"
    with atomic_write(str(b)) as f:
        f.write(b"\x00\x01")
    assert b.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin"]


def test_atomic_write_replaces_existing(tmp_path):
    t = tmp_path / "a.txt"
    t.write_text("old")
    with atomic_write(t, "w") as f:
        f.write("new")
        assert t.read_text() == "old"
    assert t.read_text() == "new"


def test_atomic_write_exception_leaves_target_untouched(tmp_path):
    t = tmp_path / "a.txt"
    t.write_text("old")
    with pytest.raises(RuntimeError, match="^stop$"):
        with atomic_write(t, "w") as f:
            f.write("half")
            raise RuntimeError("stop")
    assert t.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(tmp_path / "new.txt", "w") as f:
            f.write("half")
            raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_write_temp_file_is_beside_target(tmp_path):
    t = tmp_path / "sub" / "a.txt"
    with atomic_write(t, "w") as f:
        f.write("x")
        (tmp_name,) = [p.name for p in t.parent.iterdir()]  # the parent was created; only the temp file is there
        assert tmp_name.startswith(".a.txt.") and tmp_name.endswith(".tmp")
    assert [p.name for p in t.parent.iterdir()] == ["a.txt"]
    assert t.read_text() == "x"


def test_atomic_write_bad_mode_and_directory(tmp_path):
    with pytest.raises(ConfigError, match=re.escape("atomic_write mode must be 'w' or 'wb', got 'a'")):
        with atomic_write(tmp_path / "x", "a"):
            pass
    with pytest.raises(
        FileWriteError, match=re.escape(f"cannot write {str(tmp_path)!r}: it is a directory; pass a file path")
    ):
        with atomic_write(tmp_path, "w"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_permissions(tmp_path):
    mask = os.umask(0o027)
    try:
        with atomic_write(tmp_path / "a", "w") as f:
            f.write("x")
    finally:
        os.umask(mask)
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o640


def test_atomic_save_and_safe_load(tmp_path):
    obj = {
        "t": torch.arange(4.0),
        "l": [1, "two", 3.0, None, True],
        "nested": {"x": (torch.zeros(2, dtype=torch.long),)},
    }
    path = tmp_path / "obj.pt"
    atomic_save(obj, path)
    back = safe_load(path)
    assert torch.equal(back["t"], obj["t"])
    assert back["l"] == [1, "two", 3.0, None, True]
    assert torch.equal(back["nested"]["x"][0], obj["nested"]["x"][0])


def test_safe_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(CheckpointError, match=re.escape(f"state dict {str(missing)!r} does not exist; check the path")):
        safe_load(missing, what="state dict")
    with pytest.raises(CheckpointError, match=re.escape(f"file {str(tmp_path)!r} is a directory")):
        safe_load(tmp_path)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"")
    with pytest.raises(
        CheckpointError, match=re.escape(f"file {str(bad)!r} is truncated or corrupt (the file is empty); re-create it")
    ):
        safe_load(bad)


class _Obj:
    pass


def test_safe_load_refuses_other_objects(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save({"x": _Obj()}, path)
    with pytest.raises(
        CheckpointError,
        match=re.escape(
            f"file {str(path)!r} contains pickled objects other than tensors and plain containers (test_io._Obj)"
        ),
    ):
        safe_load(path)


# -- errors ----------------------------------------------------------------------------------------


def test_error_hierarchy():
    assert issubclass(HookNameError, HookedMLPError) and issubclass(HookNameError, KeyError)
    assert issubclass(ShapeError, ValueError) and issubclass(CheckpointError, ValueError)
    assert issubclass(InputDtypeError, TypeError) and issubclass(DataError, RuntimeError)
    assert issubclass(SteeringError, ValueError)
    for cls in (ShapeError, InputDtypeError, CheckpointError, DataError, SteeringError):
        assert issubclass(cls, HookedMLPError)


def test_hook_name_error_str_has_no_extra_quotes():
    e = HookNameError("unknown hook 'x'")
    assert str(e) == "unknown hook 'x'"
    assert str(KeyError("unknown hook 'x'")) == "\"unknown hook 'x'\""  # what KeyError alone would give
    assert str(HookNameError()) == ""
    with pytest.raises(KeyError, match=r"^unknown hook 'x'$"):
        raise HookNameError("unknown hook 'x'")


def test_did_you_mean():
    assert (
        did_you_mean("layer0.pst", ["layer0.pre", "layer0.post"])
        == "; did you mean 'layer0.post'? (valid: layer0.pre, layer0.post)"
    )
    assert did_you_mean("zzz", ["a", "b"]) == " (valid: a, b)"
    names = [f"n{i}" for i in range(13)]
    assert did_you_mean("qqq", names) == " (valid: n0, n1, n2 ... n12)"
    assert did_you_mean("qqq", names[:12]) == " (valid: " + ", ".join(names[:12]) + ")"
    assert did_you_mean("x", []) == " (valid: )"


def test_closest():
    assert closest("layer1.post", ["layer0.post", "layer1.pre", "layer1.post", "zzz"]) == [
        "layer1.post",
        "layer0.post",
        "layer1.pre",
    ]
    assert closest("layer1.post", ["layer1.post", "layer1.pre"], n=1) == ["layer1.post"]
    assert closest("qqq", ["layer0.pre"]) == []
    assert set(errors.__all__) >= {"closest", "did_you_mean", "HookNameError"}


# -- safe_load: why a file is refused, for every pickle protocol (issue 11, item 9) -----------------


class _Marker:
    """Unpickling this would create the file named in its state: proof that no payload ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_a_pickle_of_objects_is_refused_at_every_protocol(tmp_path, protocol):
    path, marker = tmp_path / "evil.pt", tmp_path / "ran"
    with open(path, "wb") as f:
        pickle.dump({"weights": [1.0], "payload": _Marker(str(marker))}, f, protocol=protocol)
    with pytest.raises(CheckpointError) as info:
        safe_load(path, what="checkpoint")
    message = str(info.value)
    assert message.startswith(
        f"checkpoint {str(path)!r} contains pickled objects other than tensors and plain containers ("
    )
    assert "open" in message and "refusing to load it (it could run code)" in message
    assert "weights_only=False" not in message and "truncated" not in message
    assert not marker.exists()


def test_torch_save_of_an_object_is_refused_naming_it(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save({"x": torch.zeros(2), "o": _Obj()}, path)
    with pytest.raises(CheckpointError, match=r"contains pickled objects .* \(test_io\._Obj\); refusing") as info:
        safe_load(path)
    assert "weights_only=False" not in str(info.value)


def test_a_plain_pickle_of_plain_data_is_not_called_corrupt(tmp_path):
    path = tmp_path / "plain.pkl"
    with open(path, "wb") as f:
        pickle.dump({"a": [1, 2]}, f, protocol=4)
    with pytest.raises(
        CheckpointError,
        match=re.escape(
            f"file {str(path)!r} is a plain Python pickle (protocol 4), not a file written by torch.save; refusing "
            "to unpickle it"
        ),
    ):
        safe_load(path)


def test_a_torch_file_with_another_pickle_protocol_says_so(tmp_path):
    path = tmp_path / "p4.pt"
    torch.save({"x": torch.ones(2)}, path, pickle_protocol=4)
    with pytest.raises(
        CheckpointError,
        match=re.escape(
            "was saved with pickle protocol 4, which the safe loader cannot read; re-save it with torch.save's "
            "default protocol (2)"
        ),
    ):
        safe_load(path)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "is truncated or corrupt (the file is empty); re-create it"),
        (b"PK\x03\x04 cut short", "is truncated or corrupt (an incomplete zip file); re-create it"),
        (
            b'{"name": "m"}',
            "is not a file written by torch.save (it starts with b'{\"name\":'); pass a .pt file written by hookedmlp",
        ),
    ],
)
def test_files_that_are_not_checkpoints_say_what_they_are(tmp_path, content, why):
    path = tmp_path / "f.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="^" + re.escape(f"file {str(path)!r} {why}") + "$"):
        safe_load(path)


def test_a_truncated_torch_file_is_corrupt(tmp_path):
    path = tmp_path / "cut.pt"
    torch.save({"x": torch.arange(1000)}, path)
    path.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(CheckpointError, match=r"is truncated or corrupt \(.*\); re-create it$") as info:
        safe_load(path)
    assert "weights_only" not in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_device_is_not_called_corruption(tmp_path):
    path = tmp_path / "v.pt"
    torch.save({"x": torch.ones(2)}, path)
    with pytest.raises(
        UsageError,
        match=re.escape(
            f"cannot load file {str(path)!r} onto 'cuda': this machine has no CUDA device (torch.cuda.is_available() "
            "is False); load it with device='cpu'"
        ),
    ):
        safe_load(path, map_location="cuda")


def test_memory_and_permission_errors_say_what_they_are(tmp_path, monkeypatch):
    import hookedmlp.files.safe_load

    path = tmp_path / "m.pt"
    torch.save({"x": torch.ones(2)}, path)

    def fail(exc):
        def call(*args, **kwargs):
            raise exc

        return call

    monkeypatch.setattr(torch, "load", fail(MemoryError()))
    with pytest.raises(MemoryError, match=re.escape(f"not enough memory to load file {str(path)!r} (")):
        safe_load(path)
    # a file the process may not read (root reads every file, so the refusal is simulated)
    monkeypatch.setattr(torch, "load", fail(PermissionError(13, "Permission denied")))
    monkeypatch.setattr(
        hookedmlp.files.safe_load, "open", fail(PermissionError(13, "Permission denied")), raising=False
    )
    with pytest.raises(
        CheckpointError, match=re.escape(f"cannot read file {str(path)!r}: Permission denied; check its permissions")
    ):
        safe_load(path)
