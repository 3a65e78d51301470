"""SteeringVector on its own: arithmetic, overflow, files, and metadata checked at load."""

import json
import math
import pickle

import pytest
import torch

from hookedmlp import (
    CheckpointError,
    HookNameError,
    ShapeError,
    SteeringError,
    SteeringVector,
)
from hookedmlp.data import load_mnist
from hookedmlp.steering import model_fingerprint


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return load_mnist("test")[0][:200].clone()


@pytest.fixture(scope="module")
def v1(model):
    return model.steering_vector(3, 1, "layer0.post")


@pytest.fixture(scope="module")
def v2(model):
    return model.steering_vector(4, 9, ["layer0.post", "layer2.pre"])


def test_add_unites_hooks_and_sums_shared(v1, v2, model):
    s = v1 + v2
    assert list(s) == ["layer0.post", "layer2.pre"]
    assert torch.equal(s["layer0.post"], v1["layer0.post"] + v2["layer0.post"])
    assert torch.equal(s["layer2.pre"], v2["layer2.pre"])
    assert s.label == "(3 - 1) + (4 - 9)"
    assert s.meta["model"] == model_fingerprint(model)
    assert torch.equal(
        v1["layer0.post"], model.steering_vector(3, 1, "layer0.post")["layer0.post"]
    )  # operands unchanged


def test_sub(v1, v2):
    d = v1 - v2
    assert list(d) == ["layer0.post", "layer2.pre"]
    assert torch.equal(d["layer0.post"], v1["layer0.post"] - v2["layer0.post"])
    assert torch.equal(d["layer2.pre"], -v2["layer2.pre"])
    z = v1 - v1
    assert torch.equal(z["layer0.post"], torch.zeros(512))


def test_scalar_multiplication_and_negation(v2):
    for w in (2.5 * v2, v2 * 2.5):
        assert list(w) == list(v2)
        for hook in v2:
            assert torch.equal(w[hook], 2.5 * v2[hook])
        assert w.meta["coeff"] == 2.5
        assert w.label == "2.5*(4 - 9)"
    n = -v2
    for hook in v2:
        assert torch.equal(n[hook], -v2[hook])
    assert torch.equal((2 * v2)["layer0.post"], 2 * v2["layer0.post"])
    with pytest.raises(SteeringError, match="finite"):
        v2 * math.nan
    with pytest.raises(TypeError):
        v2 + 1.0
    with pytest.raises(SteeringError, match="coeff must be a real number"):
        v2 * "2"


def test_combining_different_widths_at_one_hook_fails():
    a = SteeringVector({"layer0.post": torch.ones(3)})
    b = SteeringVector({"layer0.post": torch.ones(4)})
    with pytest.raises(ShapeError, match=r"\[3\] and \[4\]"):
        a + b


def test_to_dtype_and_device(v2):
    d = v2.to(dtype=torch.float64)
    for hook in v2:
        assert d[hook].dtype == torch.float64
        assert torch.equal(d[hook], v2[hook].double())
        assert v2[hook].dtype == torch.float32
    for dev in ("cpu", torch.device("cpu")):
        c = v2.to(dev)
        assert all(c[h].device.type == "cpu" and torch.equal(c[h], v2[h]) for h in v2)
    assert d.label == v2.label and d.meta["model"] == v2.meta["model"]


def test_constructor_checks():
    with pytest.raises(SteeringError, match="at least one hook"):
        SteeringVector({})
    for bad, desc in (
        (torch.tensor(1.0), r"shape \[\], dtype torch.float32"),
        (torch.ones(3, dtype=torch.int64), r"shape \[3\], dtype torch.int64"),
        ([1.0, 2.0], "list"),
    ):
        with pytest.raises(
            ShapeError,
            match=r"'layer0.post' must be a floating-point tensor shaped like one example's "
            r"activation \(e.g. \[512\] or \[C, H, W\]\), got " + desc,
        ):
            SteeringVector({"layer0.post": bad})
    with pytest.raises(SteeringError, match="NaN or infinite"):
        SteeringVector({"layer0.post": torch.tensor([1.0, math.inf])})
    with pytest.raises(HookNameError, match="did you mean 'layer0.post'"):
        SteeringVector({"layer0.post": torch.ones(3)})["layer0.pst"]
    fmap = SteeringVector({"layer0.post": torch.ones(4, 6, 6)})  # any shape: a CNN's [C, H, W]
    assert (2 * fmap)["layer0.post"].shape == (4, 6, 6) and fmap.meta["norm"]["layer0.post"] == 12.0


def test_overflow_names_the_coefficient_and_the_range():
    v = SteeringVector({"layer0.post": torch.tensor([4.0, -2.0])})
    with pytest.raises(
        SteeringError,
        match=r"^coeff=1e\+38 times the vector's largest entry 4 is 4e\+38, beyond "
        r"torch.float32's range \(largest finite 3.403e\+38\)",
    ):
        1e38 * v
    with pytest.raises(SteeringError, match=r"coeff=1e\+38 .*torch.float32's range"):
        v * 1e38
    assert (1e37 * v)["layer0.post"].tolist() == pytest.approx([4e37, -2e37])
    big = SteeringVector({"layer0.post": torch.tensor([3e38])})
    with pytest.raises(SteeringError, match=r"\(3e\+38\) \+ \(3e\+38\) overflows torch.float32 at 'layer0.post'"):
        SteeringVector({"layer0.post": torch.tensor([3e38])}, {"label": "3e+38"}) + SteeringVector(
            {"layer0.post": torch.tensor([3e38])}, {"label": "3e+38"}
        )
    with pytest.raises(
        SteeringError, match=r"largest entry 3e\+38 .*torch.float16's range \(largest finite 6.55e\+04\)"
    ):
        big.to(torch.float16)


def test_sums_of_many_vectors_keep_flat_provenance_and_load(tmp_path):
    total = SteeringVector({"layer0.post": torch.ones(2)}, {"label": "v0"})
    for i in range(1, 40):  # deeper than the metadata nesting a file may have, if terms nested
        total = total + SteeringVector({"layer0.post": torch.ones(2)}, {"label": f"v{i}"})
    assert [t["label"] for t in total.meta["terms"]] == [f"v{i}" for i in range(40)]
    total.save(tmp_path / "sum.pt")
    loaded = SteeringVector.load(tmp_path / "sum.pt")
    assert loaded.meta == total.meta and loaded["layer0.post"].tolist() == [40.0, 40.0]


# -- files ----------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path, v1, v2, model, images):
    for v in (v1, 2.5 * v1 + v2, v2.to(dtype=torch.float64)):
        path = tmp_path / "vec.pt"
        v.save(path)
        w = SteeringVector.load(path)
        assert list(w) == list(v)
        for hook in v:
            assert w[hook].dtype == v[hook].dtype
            assert torch.equal(w[hook], v[hook])
        assert w.meta == v.meta
        assert repr(w) == repr(v)
    w = SteeringVector.load(path, device="cpu")
    assert all(w[h].device.type == "cpu" for h in w)
    with model.steer(v1 + v2):
        expected = model(images)
    v = v1 + v2
    v.save(tmp_path / "sum.pt")
    with model.steer(SteeringVector.load(tmp_path / "sum.pt")):
        assert torch.equal(model(images), expected)


class _Payload:
    """Unpickling this calls open(marker, "w"), i.e. creates the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_load_refuses_pickled_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save(
        {
            "format": "hookedmlp.steering_vector",
            "version": 1,
            "vectors": {"layer0.post": _Payload(str(marker))},
            "meta": "{}",
        },
        evil,
    )
    with pytest.raises(CheckpointError, match="refusing to load"):
        SteeringVector.load(evil)
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(_Payload(str(marker)), protocol=2))
    with pytest.raises(CheckpointError):
        SteeringVector.load(raw)
    assert not marker.exists()
    # the payload is live: an unsafe load does create the marker
    control = tmp_path / "control"
    torch.save(_Payload(str(control)), tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False).close()
    assert control.exists()


def test_load_truncated_or_foreign_files(tmp_path, v2):
    good = tmp_path / "good.pt"
    v2.save(good)
    data = good.read_bytes()
    for n in (len(data) // 2, 100, 0):
        bad = tmp_path / f"cut{n}.pt"
        bad.write_bytes(data[:n])
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            SteeringVector.load(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(3)}, other)
    with pytest.raises(CheckpointError, match="not a hookedmlp steering vector"):
        SteeringVector.load(other)
    with pytest.raises(CheckpointError, match="does not exist"):
        SteeringVector.load(tmp_path / "missing.pt")


@pytest.mark.parametrize(
    "payload",
    [
        {"meta": "{}"},
        {"meta": "[1, 2]", "vectors": {"layer0.post": torch.ones(3)}},
        {"meta": "{}", "vectors": [torch.ones(3)]},
    ],
    ids=["no-vectors", "meta-not-a-dict", "vectors-not-a-dict"],
)
def test_load_malformed_vector_file(tmp_path, payload):
    path = tmp_path / "malformed.pt"
    torch.save({"format": "hookedmlp.steering_vector", "version": 1, **payload}, path)
    with pytest.raises(CheckpointError, match="malformed.pt"):
        SteeringVector.load(path)


def _write(path, meta, vectors=None):
    torch.save(
        {
            "format": "hookedmlp.steering_vector",
            "version": 1,
            "vectors": vectors or {"layer0.post": torch.ones(3)},
            "meta": meta,
        },
        path,
    )
    return path


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("coeff", "abc", "coeff='abc'; expected int or float"),
        ("coeff", None, "coeff=None; expected int or float"),
        ("coeff", [1, 2], r"coeff=\[1, 2\]; expected int or float"),
        ("coeff", True, "coeff=True; expected int or float"),
        ("coeff", math.nan, "coeff=nan; expected a finite number"),
        ("label", 3, "label=3; expected str"),
        ("exemplar", -1, "exemplar=-1; expected an int >= 0"),
        ("n_examples", ["x"], r"n_examples=\['x'\]; expected a list of ints"),
        ("terms", [{"coeff": "abc"}], "coeff='abc'; expected int or float"),
        ("terms", ["abc"], "metadata of type str; expected a JSON object"),
    ],
)
def test_tampered_metadata_is_refused_at_load(tmp_path, key, value, expected):
    path = _write(tmp_path / "tampered.pt", json.dumps({"label": "x", key: value}))
    with pytest.raises(CheckpointError, match=r"'.*tampered.pt' has (metadata )?" + expected):
        SteeringVector.load(path)


@pytest.mark.parametrize("depth", [17, 100, 5000])
def test_deeply_nested_metadata_is_refused_at_load(tmp_path, depth):
    nested = "[" * depth + "]" * depth
    path = _write(tmp_path / "deep.pt", '{"label": "x", "extra": ' + nested + "}")
    with pytest.raises(
        CheckpointError, match="deep.pt' has (metadata nested deeper than 16 levels|unreadable metadata)"
    ):
        SteeringVector.load(path)
    deep_terms = '{"label": "x", "terms": [' * 20 + '{"label": "y"}' + "]}" * 20
    with pytest.raises(CheckpointError, match="nested deeper than 16 levels"):
        SteeringVector.load(_write(tmp_path / "terms.pt", deep_terms))


def test_metadata_that_is_not_json_is_refused_at_save(tmp_path):
    v = SteeringVector({"layer0.post": torch.ones(3)}, {"label": "x", "when": torch.ones(1)})
    with pytest.raises(SteeringError, match="metadata must be JSON"):
        v.save(tmp_path / "v.pt")
    assert not (tmp_path / "v.pt").exists()
