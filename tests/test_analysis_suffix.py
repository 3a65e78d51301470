"""analysis.suffix: the compiled suffix computes what running the modules in order computes, shortcuts included."""

import pytest
import torch
from torch import nn

from hookedmlp_analysis.suffix import compile_suffix, tiling_window


def reference(modules, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        for m in modules:
            x = m(x)
    return x


SUFFIXES = {
    "relu-maxpool2d (swapped)": ([nn.ReLU(), nn.MaxPool2d(2)], (3, 8, 8)),
    "relu-maxpool2d, odd sizes (partial windows dropped)": ([nn.ReLU(), nn.MaxPool2d((2, 3))], (2, 7, 11)),
    "maxpool1d, maxpool3d": (
        [nn.MaxPool1d(3), nn.Unflatten(2, (2, 2)), nn.Unflatten(1, (2, 2)), nn.MaxPool3d(2)],
        (4, 13),
    ),
    "non-tiling pools stay modules": (
        [nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)],
        (2, 9, 9),
    ),
    "lenet-like": (
        [
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(3, 4, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16, 5),
            nn.ReLU(),
            nn.Dropout(0.5).eval(),
            nn.Linear(5, 3),
        ],
        (3, 12, 12),
    ),
    "mlp": ([nn.ReLU(), nn.Linear(6, 6), nn.ReLU(inplace=True), nn.Identity(), nn.Linear(6, 2)], (6,)),
}


@pytest.mark.parametrize("case", list(SUFFIXES))
def test_compiled_suffix_equals_the_modules(case: str) -> None:
    torch.manual_seed(0)
    modules, shape = SUFFIXES[case]
    x = torch.randn(5, *shape)
    x[0].view(-1)[:3] = float("nan")  # max pools and ReLU propagate NaN alike
    expected = reference(modules, x.clone())
    with torch.no_grad():
        got = compile_suffix(modules)(x.clone())  # the compiled suffix may overwrite its input: the pass owns it
    torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize(
    "module, window",
    [
        (nn.MaxPool2d(2), (2, 2)),
        (nn.MaxPool2d((2, 3)), (2, 3)),
        (nn.MaxPool1d(4), (4,)),
        (nn.MaxPool3d(2, stride=2), (2, 2, 2)),
        (nn.MaxPool2d(2, stride=1), ()),
        (nn.MaxPool2d(2, padding=1), ()),
        (nn.MaxPool2d(2, dilation=2), ()),
        (nn.MaxPool2d(2, ceil_mode=True), ()),
        (nn.MaxPool2d(2, return_indices=True), ()),
        (nn.AvgPool2d(2), ()),
        (nn.ReLU(), ()),
    ],
)
def test_tiling_window(module: nn.Module, window: tuple) -> None:
    assert tiling_window(module) == window
