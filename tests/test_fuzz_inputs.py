"""Fuzzing the entry points issue 21 hardened: ``train_model``'s data and the study's cache.

* Random data tuples (arity, sizes, dtypes, shapes, label values, NaN and infinity, containers) either train,
  exactly when a plain oracle written here says they are valid, or raise a ``HookedMLPError`` before a single
  training step, never a raw torch error.
* Random damage to a cached result (truncation, flipped bytes anywhere, numbers included, any JSON value) and
  to a cached model (truncation) is a cache miss: the study returns the same numbers as from a whole cache,
  and says so in at most one line per damaged file.
"""

import json
import shutil
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hookedmlp import HookedMLPError, MLPConfig
from hookedmlp.data import load_mnist
from hookedmlp.train import TrainSettings, train_model
from hookedmlp_analysis.family import Variant, study_model
from hookedmlp_analysis.spread import stratified_subset

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = MLPConfig(d_in=16, d_hidden=(4,), d_out=3)
ACCEPTED_SHAPES = [(16,), (4, 4), (1, 4, 4)]

FAULTS = {  # each makes the data invalid on its own
    "arity": {"arity": st.sampled_from([3, 5])},
    "no training examples": {"n_train": st.just(0)},
    "no test examples": {"n_test": st.just(0)},
    "lengths": {"mismatch": st.sampled_from([1, -1])},
    "label dtype": {"label_dtype": st.sampled_from(["float32", "bool"])},
    "one-hot labels": {"label_rank": st.just(2)},
    "label values": {"label_values": st.sampled_from(["negative", "-100", "too big"])},
    "image dtype": {"image_dtype": st.sampled_from(["float64", "float16", "int64"])},
    "image shape": {"image_shape": st.sampled_from([(15,), (2, 8, 1)])},
    "poison": {"poison": st.sampled_from(["nan", "inf"])},
}
VALID = {  # every combination of these is valid
    "arity": st.just(4),
    "n_train": st.sampled_from([1, 5, 9]),
    "n_test": st.sampled_from([1, 4]),
    "mismatch": st.just(0),
    "label_dtype": st.sampled_from(["int64", "int32", "uint8"]),
    "label_rank": st.just(1),
    "label_values": st.just("valid"),
    "image_dtype": st.just("float32"),
    "image_shape": st.sampled_from(ACCEPTED_SHAPES),
    "poison": st.none(),
    "container": st.sampled_from(["tensors", "numpy", "lists"]),
    "seed": st.integers(0, 1000),
}


@st.composite
def data_specs(draw):
    """A valid spec with none, one or two faults applied (about a third of the examples are valid)."""
    faults = draw(st.lists(st.sampled_from(sorted(FAULTS)), max_size=2, unique=True))
    spec = {k: draw(v) for k, v in VALID.items()}
    for fault in faults:
        spec.update({k: draw(v) for k, v in FAULTS[fault].items()})
    return spec


def _make(spec):
    g = torch.Generator().manual_seed(spec["seed"])
    dtype = getattr(torch, spec["image_dtype"])

    def images(n):
        x = torch.rand(n, *spec["image_shape"], generator=g)
        if spec["poison"] and n:
            x.view(n, -1)[n // 2, 0] = float(spec["poison"])
        return x.to(dtype) if dtype.is_floating_point else (x * 5).to(dtype)

    def labels(n):
        y = torch.randint(0, 3, (n + spec["mismatch"] if n else n,), generator=g)
        if len(y):
            y[0] = {"valid": y[0], "negative": -1, "-100": -100, "too big": 3}[spec["label_values"]]
        if spec["label_rank"] == 2:
            y = F.one_hot(y.clamp(0, 2), 3)
        return y.to(getattr(torch, spec["label_dtype"]))

    parts = [images(spec["n_train"]), labels(spec["n_train"]), images(spec["n_test"]), labels(spec["n_test"])]
    if spec["container"] == "numpy":
        parts = [p.numpy() if p.dtype != torch.float16 else p for p in parts]
    elif spec["container"] == "lists":
        parts = [list(parts[0]), parts[1].tolist(), list(parts[2]), parts[3].tolist()]
    return tuple((parts + [parts[0]])[: spec["arity"]])


def _valid(spec):
    """The oracle: what train_model must accept."""
    return (
        spec["arity"] == 4
        and spec["n_train"] > 0
        and spec["n_test"] > 0
        and spec["mismatch"] == 0
        and spec["label_dtype"] in ("int64", "int32", "uint8")
        and spec["label_rank"] == 1
        and spec["label_values"] == "valid"
        and spec["image_dtype"] == "float32"
        and spec["image_shape"] in ACCEPTED_SHAPES
        and spec["poison"] is None
    )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=data_specs())
def test_any_data_trains_or_is_refused_before_a_single_step(spec):
    data = _make(spec)
    steps = []
    real = F.cross_entropy

    def counting(*args, **kwargs):
        steps.append(1)
        return real(*args, **kwargs)

    with mock.patch.object(F, "cross_entropy", counting):
        try:
            result = train_model(CFG, TrainSettings(epochs=1, batch_size=4), data=data, progress=False)
        except HookedMLPError as e:
            assert not _valid(spec), f"valid data refused: {e}"
            assert steps == [], f"refused only after {len(steps)} steps: {e}"
            assert str(e) and "\n" not in str(e)
            return
    assert _valid(spec), f"invalid data trained: {spec}"
    assert np.isfinite(result.test_loss) and len(result.history) == 1


# -- the study's cache ----------------------------------------------------------------------------------------

TINY = Variant("tiny", "a tiny net", MLPConfig(d_hidden=(16,)))
SETTINGS = TrainSettings(epochs=1, batch_size=32)


@pytest.fixture(scope="module")
def study_inputs():
    train_x, train_y = load_mnist("train")
    test_x, test_y = load_mnist("test")
    mnist = train_x[:64], train_y[:64], test_x[:64], test_y[:64]
    return mnist, stratified_subset(mnist[2], mnist[3], 3)


@pytest.fixture(scope="module")
def whole_cache(tmp_path_factory, study_inputs):
    mnist, test = study_inputs
    cache = tmp_path_factory.mktemp("whole")
    return cache, study_model(TINY, 0, cache, test, (0.5, 1.0), mnist, SETTINGS, [(3, 1)], log=print)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
damages = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 0.99)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 0.999), st.integers(0, 255)), min_size=1, max_size=4)),
    st.tuples(st.just("json"), json_values),
    st.tuples(st.just("none"), st.none()),
)


def _damage(path: Path, how, arg) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: int(len(data) * arg)])
    elif how == "flip":
        raw = bytearray(data)
        for where, value in arg:
            raw[int(where * len(raw))] = value
        path.write_bytes(bytes(raw))
    elif how == "json":
        path.write_text(json.dumps(arg))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(result_damage=damages, model_cut=st.one_of(st.none(), st.floats(0, 0.99)))
def test_a_damaged_cache_is_a_miss_never_a_crash(whole_cache, study_inputs, result_damage, model_cut):
    mnist, test = study_inputs
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        shutil.copytree(whole_cache[0], cache)
        (model,) = cache.glob("*.pt")
        (entry,) = cache.glob("*.json")
        _damage(entry, *result_damage)
        if model_cut is not None:
            _damage(model, "truncate", model_cut)
        lines = []
        result = study_model(TINY, 0, cache, test, (0.5, 1.0), mnist, SETTINGS, [(3, 1)], log=lines.append)
    whole = whole_cache[1]
    assert (result.test_loss, result.hooks, result.at_one, result.share) == (
        whole.test_loss,
        whole.hooks,
        whole.at_one,
        whole.share,
    )
    assert len(lines) <= 2 and all(line.startswith("  cache: ") for line in lines)
    if model_cut is not None:
        assert result.train_seconds > 0  # a truncated model is retrained (seeded: the same weights)
