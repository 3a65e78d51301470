"""Every real scalar is a coefficient (numpy's float32 and int64 too); non-finite tensors are one rule."""

import math

import numpy as np
import pytest
import torch

from hookedmlp import SteeringError, SteeringVector
from hookedmlp.checks import check_coeff, check_finite, check_number
from hookedmlp.errors import ConfigError


@pytest.mark.parametrize(
    "value",
    [
        2,
        2.0,
        np.float16(2),
        np.float32(2),
        np.float64(2),
        np.int8(2),
        np.int64(2),
        np.uint8(2),
        torch.tensor(2.0),
        torch.tensor([2]),
    ],
)
def test_every_real_scalar_is_a_coefficient(value):
    assert check_coeff(value) == 2.0 and isinstance(check_coeff(value), float)
    v = SteeringVector({"layer0.post": torch.arange(3.0)})
    assert torch.equal((v * value)["layer0.post"], torch.tensor([0.0, 2.0, 4.0]))


@pytest.mark.parametrize("value", [True, np.bool_(True), torch.tensor(True), "2", 2j, None, [2.0], torch.ones(2)])
def test_what_is_no_real_scalar_is_refused(value):
    with pytest.raises(SteeringError, match=r"^coeff must be a real number, got "):
        check_coeff(value)


@pytest.mark.parametrize("value", [np.float32(math.nan), np.float64(math.inf), -math.inf])
def test_non_finite_numpy_coefficients_are_refused(value):
    with pytest.raises(SteeringError, match=r"^coeff must be finite, got "):
        check_coeff(value)


def test_check_number_takes_numpy_scalars_too():
    assert check_number(np.float32(0.5), "dropout", 0.0, 1.0) == 0.5
    assert check_number(np.int64(3), "lr", 0.0, 10.0) == 3.0
    with pytest.raises(ConfigError, match=r"^dropout must be a number, got bool"):
        check_number(np.bool_(True), "dropout", 0.0, 1.0)


def test_check_finite_names_the_first_bad_value_and_the_count():
    assert check_finite(torch.ones(3), "x") is not None
    with pytest.raises(
        SteeringError, match=r"^patch activations must be finite, got inf \(2 of 4 entries are NaN or infinite\)$"
    ):
        check_finite(torch.tensor([1.0, math.inf, 2.0, -math.inf]), "patch activations")
    with pytest.raises(SteeringError, match=r"^clamp value must be finite, got nan$"):
        check_finite(torch.tensor(math.nan), "clamp value")
