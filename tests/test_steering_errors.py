"""Bad input to steering on the shipped model: each mistake raises one clear error (expected vs
got, and the fix) before anything is attached, and leaves the model as it was."""

import math
import re

import pytest
import torch

from hookedmlp import (
    ConfigError,
    HookNameError,
    InputDtypeError,
    ShapeError,
    SteeringError,
    SteeringVector,
    UsageError,
)
from hookedmlp.data import load_mnist


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return load_mnist("test")[0][:64].clone()


@pytest.fixture(scope="module")
def v1(model):
    return model.steering_vector(3, 1, "layer0.post")


def assert_untouched(model, x, base):
    assert model.attached_hooks() == []
    assert torch.equal(model(x), base)


@pytest.fixture
def base(model, x):
    return model(x)


@pytest.mark.parametrize(
    "bad, message",
    [
        (10, "must be from 0 to 9, got 10"),
        (-1, "must be from 0 to 9, got -1"),
        (True, r"must be an int from 0 to 9, got bool \(True\)"),
        (3.5, r"must be an int from 0 to 9, got float \(3.5\)"),
        ("3", r"must be an int from 0 to 9, got str \('3'\)"),
    ],
)
@pytest.mark.parametrize("where", ["a", "b"])
def test_bad_digit(model, x, base, bad, message, where):
    kwargs = {"a": 3, "b": 1, where: bad}
    expected = re.escape(f"{where} (a class of MNIST train, or input tensors) ") + message
    with pytest.raises(ConfigError, match=expected):
        model.steering_vector(kwargs["a"], kwargs["b"], "layer0.post")
    with pytest.raises(ConfigError, match=expected):
        model.steer(**kwargs, hook="layer0.post")
    assert_untouched(model, x, base)


@pytest.mark.parametrize("where", ["a", "b"])
def test_missing_side(model, x, base, where):
    kwargs = {"a": 3, "b": 1, where: None}
    with pytest.raises(
        UsageError, match=f"steer\\(\\) needs a SteeringVector or all of a=, b=, hook=; missing {where}$"
    ):
        model.steer(**kwargs, hook="layer0.post")
    assert_untouched(model, x, base)


@pytest.mark.parametrize("shape", [(5,), (27, 28), (2, 1, 27, 28), (783,), (2, 3, 28, 28)])
def test_bad_image_shape(model, x, base, shape):
    with pytest.raises(ShapeError, match=r"expected input of shape .*got " + re.escape(str(list(shape)))):
        model.steering_vector(torch.zeros(shape), 1, "layer0.post")
    with pytest.raises(ShapeError):
        model.steer(a=3, b=torch.zeros(shape), hook="layer0.post").__enter__()
    assert_untouched(model, x, base)


def test_bad_image_dtype(model, x, base):
    with pytest.raises(InputDtypeError, match="floating-point"):
        model.steering_vector(torch.zeros(784, dtype=torch.uint8), 1, "layer0.post")
    with pytest.raises(InputDtypeError, match="float64"):
        model.steering_vector(torch.zeros(784, dtype=torch.float64), 1, "layer0.post")
    assert_untouched(model, x, base)


@pytest.mark.parametrize("hook", ["layer0.pst", ["layer0.post", "layer0.pst"], "layer0.pst*"])
def test_unknown_hook(model, x, base, hook):
    with pytest.raises(HookNameError, match=r"did you mean 'layer0.post'"):
        model.steering_vector(3, 1, hook)
    with pytest.raises(HookNameError, match=r"did you mean 'layer0.post'"):
        model.steer(a=3, b=1, hook=hook).__enter__()
    assert_untouched(model, x, base)


def test_empty_hook_list(model, x, base):
    with pytest.raises((HookNameError, SteeringError), match="empty|no hook|at least one"):
        model.steering_vector(3, 1, [])
    with pytest.raises((HookNameError, SteeringError), match="empty|no hook|at least one"):
        model.steer(a=3, b=1, hook=[]).__enter__()
    assert_untouched(model, x, base)


@pytest.mark.parametrize("coeff", [math.nan, math.inf, -math.inf])
def test_non_finite_coeff(model, v1, x, base, coeff):
    with pytest.raises(SteeringError, match="coeff must be finite"):
        model.steering_vector(3, 1, "layer0.post", coeff=coeff)
    with pytest.raises(SteeringError, match="coeff must be finite"):
        model.steer(a=3, b=1, hook="layer0.post", coeff=coeff).__enter__()
    with pytest.raises(SteeringError, match="coeff must be finite"):
        model.steer(v1, coeff=coeff)
    with pytest.raises(SteeringError, match="coeff must be finite"):
        with v1.apply(model, coeff=coeff):
            pass
    assert_untouched(model, x, base)


def test_unknown_method_and_exemplar_mistakes(model, x, base):
    with pytest.raises(ConfigError, match="method must be one of 'first', 'mean', got 'median'; did you mean 'mean'"):
        model.steer(a=3, b=1, hook="layer0.post", method="median")
    with pytest.raises(ConfigError, match="exemplar must be >= 0, got -1"):
        model.steering_vector(3, 1, "layer0.post", exemplar=-1)
    with pytest.raises(UsageError, match="exemplar=2 picks one example per class, which method='mean' does not use"):
        model.steering_vector(3, 1, "layer0.post", method="mean", exemplar=2)
    with pytest.raises(UsageError, match="MNIST train has 6131 examples of class 3; exemplar 6131 does not exist"):
        model.steering_vector(3, 1, "layer0.post", exemplar=6131)
    assert_untouched(model, x, base)


def test_vector_of_wrong_width(model, x, base):
    v = SteeringVector({"layer0.post": torch.ones(100)})
    with pytest.raises(
        ShapeError,
        match=re.escape(
            "steering vector at 'layer0.post' has shape [100], but one example's activation there is [512] (a batch is "
            "[batch, 512]); expected a tensor of shape [512]"
        ),
    ):
        model.steer(v)
    w = SteeringVector({"layer0.post": torch.ones(512), "layer4.post": torch.ones(512)})  # second hook wrong
    with pytest.raises(ShapeError, match=r"'layer4.post' has shape \[512\].*expected a tensor of shape \[10\]"):
        w.apply(model)
    with pytest.raises(ShapeError, match=r"has shape \[1, 512\], but one example's activation there is \[512\]"):
        model.steer(SteeringVector({"layer0.post": torch.ones(1, 512)}))
    assert_untouched(model, x, base)


@pytest.mark.parametrize("hook", ["layer7.post", "layer0.pst", "blocks.0.hook_resid_pre"])
def test_vector_for_a_hook_the_model_lacks(model, x, base, hook):
    v = SteeringVector({"layer0.post": torch.ones(512), hook: torch.ones(512)})
    with pytest.raises(HookNameError, match=f"{re.escape(hook)}'?, which this model lacks"):
        with model.steer(v):
            pass
    assert_untouched(model, x, base)


def test_float64_vector_is_moved_to_model_dtype(model, v1, x, base):
    v64 = v1.to(dtype=torch.float64)
    with model.steer(v1):
        ref = model(x)
    with model.steer(v64):
        out = model(x)
    assert out.dtype == torch.float32
    assert torch.equal(out, ref)
    assert_untouched(model, x, base)


def test_steer_argument_mistakes(model, v1, x, base):
    # (the runtime type checks of the test run report the annotation first)
    with pytest.raises(TypeError, match="takes a SteeringVector|parameter 'vector'"):
        model.steer({"layer0.post": torch.ones(512)})
    with pytest.raises(UsageError, match="pass either a SteeringVector or a=, b=, hook=, not both"):
        model.steer(v1, a=3)
    with pytest.raises(UsageError, match="missing b, hook$"):
        model.steer(a=3)
    assert_untouched(model, x, base)


# -- numbers that overflow the model's dtype: refused up front, naming the cause -------------


def test_coeff_overflowing_float32_is_refused(model, v1, x, base):
    biggest = float(v1["layer0.post"].abs().max())
    expected = re.escape(
        f"coeff=1e+38 times the vector's largest entry {biggest:.4g} is {1e38 * biggest:.4g}, beyond "
        "torch.float32's range (largest finite 3.403e+38); use a smaller coeff or a wider dtype"
    )
    with pytest.raises(SteeringError, match=expected):
        model.steer(v1, coeff=1e38)
    with pytest.raises(SteeringError, match=expected):
        v1.apply(model, coeff=1e38)
    with pytest.raises(SteeringError, match=expected):
        1e38 * v1
    with pytest.raises(SteeringError, match=expected):
        model.steer(a=3, b=1, hook="layer0.post", coeff=1e38)
    assert_untouched(model, x, base)


def test_coeff_overflowing_float16_is_refused(model):
    half = type(model).from_pretrained("mnist-mlp").half()
    v1 = half.steering_vector(3, 1, "layer0.post")
    assert v1["layer0.post"].dtype == torch.float16
    with pytest.raises(
        SteeringError,
        match=r"coeff=100000 times the vector's largest entry .* beyond torch.float16's "
        r"range \(largest finite 6.55e\+04\)",
    ):
        half.steer(v1, coeff=1e5)
    assert half.attached_hooks() == []
    with half.steer(v1, coeff=10.0):  # fits: applied in float16
        out = half(load_mnist("test")[0][:4].half())
    assert out.dtype == torch.float16 and bool(torch.isfinite(out).all())
