"""safetensors files (steering vectors, activation caches, patching results): bit-exact round trips, files the
safetensors library reads and writes, old .pt vectors, and hostile headers refused before anything is allocated."""

import json
import re
import struct

import pytest
import safetensors.torch
import torch

from hookedmlp import ActivationCache, CheckpointError, HookedMLP, SizeError, SteeringVector, UsageError
from hookedmlp.files import safetensors_file
from hookedmlp.files.safetensors_file import read_header, write_safetensors
from hookedmlp.patching import activation_patch
from hookedmlp.patching.result import PatchResult
from hookedmlp.sizes import memory_budget

pytestmark = pytest.mark.usefixtures("one_thread")

VECTOR_META = {"format": "hookedmlp.steering_vector", "version": "1", "meta": json.dumps({"label": "v"})}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_a_steering_vector_round_trips_bit_exactly(tmp_path, dtype) -> None:
    g = torch.Generator().manual_seed(0)
    v = SteeringVector({"layer0.post": torch.randn(8, generator=g).to(dtype), "x": torch.randn(2, 3, 3, generator=g)})
    v.meta["model"] = "abc123def456"
    v.save(tmp_path / "v.safetensors")
    w = SteeringVector.load(tmp_path / "v.safetensors")
    assert all(w[k].dtype == v[k].dtype and torch.equal(w[k], v[k]) for k in v) and list(w) == list(v)
    assert w.meta == v.meta


def test_the_library_reads_our_files_and_we_read_its_files(tmp_path) -> None:
    ones = SteeringVector({"layer0.post": torch.arange(6.0)}, {"label": "ramp"})
    ones.save(tmp_path / "ours.safetensors")
    read = safetensors.torch.load_file(tmp_path / "ours.safetensors")
    assert torch.equal(read["layer0.post"], torch.arange(6.0))
    with safetensors.safe_open(tmp_path / "ours.safetensors", "pt") as f:
        assert f.metadata()["format"] == "hookedmlp.steering_vector"
    theirs = tmp_path / "theirs.safetensors"
    safetensors.torch.save_file({"b": torch.ones(2, 2), "a": torch.arange(3.0)}, theirs, metadata=VECTOR_META)
    loaded = SteeringVector.load(theirs)
    assert torch.equal(loaded["a"], torch.arange(3.0)) and torch.equal(loaded["b"], torch.ones(2, 2))


def test_an_old_pt_vector_file_still_loads(tmp_path) -> None:
    path = tmp_path / "old.pt"
    v = {"layer0.post": torch.linspace(-1, 1, 5)}
    meta = json.dumps({"label": "3 - 1", "a": 3, "b": 1})
    torch.save({"format": "hookedmlp.steering_vector", "version": 1, "vectors": v, "meta": meta}, path)
    loaded = SteeringVector.load(path)
    assert torch.equal(loaded["layer0.post"], v["layer0.post"]) and loaded.label == "3 - 1"


def test_an_activation_cache_round_trips_with_its_shared_tensors(tmp_path) -> None:
    model = HookedMLP.from_pretrained("mnist-mlp")
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    _, cache = model.run_with_cache(x, incl_bwd=True)
    cache.save(tmp_path / "c.safetensors", meta={"note": "three images"})
    loaded = ActivationCache.load(tmp_path / "c.safetensors", model)
    assert list(loaded) == list(cache) and all(torch.equal(loaded[k], cache[k]) for k in cache)
    assert loaded["layer1.post"] is loaded["layer2.pre"]  # one tensor in the cache, stored once, shared again
    assert loaded.file_meta["meta"] == {"note": "three images"} and loaded.has_batch_dim
    assert len(safetensors.torch.load_file(tmp_path / "c.safetensors")) < len(cache)
    with pytest.warns(UserWarning, match="was recorded on model e3c3eab6e043, loaded for model"):
        ActivationCache.load(tmp_path / "c.safetensors", HookedMLP.from_pretrained("mnist-mlp-seed1"))
    one = model.run_with_cache(x[:1], remove_batch_dim=True)[1]
    one.save(tmp_path / "one.safetensors")
    assert not ActivationCache.load(tmp_path / "one.safetensors").has_batch_dim


def test_a_patching_result_round_trips(tmp_path, tiny, tiny_x) -> None:
    result = activation_patch(tiny, tiny_x, tiny_x.flip(0), "logit_diff", labels=(0, 1), per="unit")
    result.save(tmp_path / "r.safetensors")
    loaded = PatchResult.load(tmp_path / "r.safetensors")
    assert torch.equal(loaded.values, result.values) and loaded.to_dict() == result.to_dict()


def _file(path, header, data=b"") -> str:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return str(path)


def _f32(shape, start=0, end=None):
    return {"dtype": "F32", "shape": shape, "data_offsets": [start, end if end is not None else start + 4]}


HOSTILE = {
    "length-past-the-end": (None, "the header declares 1,000,000 bytes but the file has"),
    "not-json": (b"{not json", "the header is not JSON"),
    "10-to-the-12-elements": ({"v": _f32([10**12])}, r"declares 4,000,000,000,000 bytes at \[0, 4\) but the file"),
    "negative-shape": ({"v": _f32([-1])}, r"has shape \[-1\]; expected a list of integers >= 0"),
    "unknown-dtype": ({"v": {"dtype": "F128", "shape": [1], "data_offsets": [0, 4]}}, "has dtype 'F128'"),
    "extra-field": ({"v": {**_f32([1]), "x": 1}}, "needs exactly dtype, shape and data_offsets"),
    "overlapping": ({"a": _f32([1]), "b": _f32([1])}, "overlap or leave a gap"),
    "trailing-bytes": ({"a": _f32([1])}, "the tensors declare 4 bytes of data but the file holds 8"),
    "metadata-not-strings": ({"__metadata__": {"format": 1}, "a": _f32([1])}, "__metadata__ is not an object"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_hostile_headers_are_refused_before_any_tensor_is_read(tmp_path, monkeypatch, case) -> None:
    header, message = HOSTILE[case]
    path = tmp_path / "v.safetensors"
    if header is None:
        path.write_bytes(struct.pack("<Q", 10**6) + b"{}")
    elif isinstance(header, bytes):
        path.write_bytes(struct.pack("<Q", len(header)) + header)
    else:
        _file(path, header, b"\0" * (8 if case == "trailing-bytes" else 4))
    monkeypatch.setattr(safetensors_file, "safe_open", None)  # reading a tensor would fail with a TypeError
    with pytest.raises(CheckpointError, match=message):
        SteeringVector.load(path)


@pytest.mark.parametrize(
    "meta, message",
    [
        ({}, "is a safetensors file with no hookedmlp metadata, not a hookedmlp.steering_vector file"),
        ({**VECTOR_META, "format": "hookedmlp.activation_cache"}, "with format 'hookedmlp.activation_cache', not"),
        ({**VECTOR_META, "version": "2"}, r"not a hookedmlp.steering_vector file \(version 1\)"),
        ({**VECTOR_META, "meta": "[1]"}, "its metadata is a JSON list, not an object"),
        ({**VECTOR_META, "meta": "{"}, r"its metadata is not JSON \(JSONDecodeError\)"),
        ({**VECTOR_META, "meta": json.dumps({"coeff": "x"})}, "has metadata coeff='x'; expected int or float"),
        ({**VECTOR_META, "meta": "[" * 100 + "]" * 100}, "its metadata is a JSON list"),
    ],
    ids=["missing", "another-format", "another-version", "not-an-object", "not-json", "wrong-type", "nested"],
)
def test_missing_or_wrong_metadata_is_refused(tmp_path, meta, message) -> None:
    path = tmp_path / "v.safetensors"
    safetensors.torch.save_file({"layer0.post": torch.ones(3)}, path, metadata=meta)
    with pytest.raises(CheckpointError, match=message):
        SteeringVector.load(path)


def test_deeply_nested_vector_metadata_is_refused(tmp_path) -> None:
    path = tmp_path / "v.safetensors"
    deep = {"label": "x", "terms": [{"terms": [{"terms": [{"a": [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}]}]}]}
    safetensors.torch.save_file({"a": torch.ones(1)}, path, metadata={**VECTOR_META, "meta": json.dumps(deep)})
    with pytest.raises(CheckpointError, match="metadata nested deeper than 16 levels"):
        SteeringVector.load(path)


def test_a_file_above_the_size_budget_is_refused_before_it_is_read(tmp_path, monkeypatch) -> None:
    path = tmp_path / "v.safetensors"
    SteeringVector({"layer0.post": torch.ones(1000)}).save(path)
    monkeypatch.setattr(safetensors_file, "safe_open", None)
    with memory_budget(3999), pytest.raises(SizeError, match=re.escape("needs 3.9 KiB (4,000 bytes), above")):
        SteeringVector.load(path)


def test_other_files_are_told_apart(tmp_path) -> None:
    cache_path, vector_path = tmp_path / "c.safetensors", tmp_path / "v.safetensors"
    ActivationCache({"a": torch.ones(2)}).save(cache_path)
    SteeringVector({"a": torch.ones(2)}).save(vector_path)
    with pytest.raises(CheckpointError, match="with format 'hookedmlp.activation_cache', not a hookedmlp.steering"):
        SteeringVector.load(cache_path)
    with pytest.raises(CheckpointError, match="with format 'hookedmlp.steering_vector', not a hookedmlp.activation"):
        ActivationCache.load(vector_path)
    with pytest.raises(CheckpointError, match="with format 'hookedmlp.steering_vector', not a hookedmlp.patch_result"):
        PatchResult.load(vector_path)
    assert read_header(vector_path)[0]["a"] == {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    listed = _file(tmp_path / "list.safetensors", [1, 2])  # (starts with "[": not taken for a safetensors file)
    with pytest.raises(CheckpointError, match="the header is a JSON list, not an object"):
        read_header(listed)


def test_the_header_key_is_not_a_tensor_name(tmp_path) -> None:
    with pytest.raises(UsageError, match="'__metadata__' is the safetensors header's own key"):
        write_safetensors({"__metadata__": torch.ones(1)}, {}, tmp_path / "x.safetensors")
    with pytest.raises(UsageError, match="has dtype torch.complex64, which hookedmlp's safetensors files do not"):
        write_safetensors({"z": torch.ones(1, dtype=torch.complex64)}, {}, tmp_path / "x.safetensors")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(per="neuron"), "has metadata per='neuron', which a patch result never has"),
        (lambda m: m.pop("hooks"), "has metadata hooks='missing'"),
        (lambda m: m.update(grids=[[3]]), r"needs values \[3\], got \[9\] values"),
        (lambda m: m.update(base=float("inf")), "has metadata base=inf"),
    ],
    ids=["per", "no-hooks", "grids", "base"],
)
def test_an_edited_patching_result_is_refused(tmp_path, tiny, tiny_x, edit, message) -> None:
    result = activation_patch(
        tiny, tiny_x, tiny_x.flip(0), "logit_diff", labels=(0, 1), hooks="layer1.post", per="unit"
    )
    result.values = torch.cat([result.values, torch.zeros(1, dtype=torch.float64)])  # 9 values for 8 + 1 units
    result.grids = [(9,)]
    result.save(tmp_path / "r.safetensors")
    tensors, meta = safetensors.torch.load_file(tmp_path / "r.safetensors"), None
    with safetensors.safe_open(tmp_path / "r.safetensors", "pt") as f:
        meta = f.metadata()
    fields = json.loads(meta["meta"])
    edit(fields)
    safetensors.torch.save_file(tensors, tmp_path / "e.safetensors", metadata={**meta, "meta": json.dumps(fields)})
    with pytest.raises(CheckpointError, match=message):
        PatchResult.load(tmp_path / "e.safetensors")
