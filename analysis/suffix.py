"""Running the modules after a hook point on batches the engine owns, with exact shortcuts.

The engine uses this only where nothing is attached after the hook point (no hook, no PyTorch
hook) and every module is torch.nn's, so the modules can run directly instead of through
``model(x, start_at=...)``. Each shortcut computes the same values as the module it replaces:

- ``ReLU`` runs in place: its input is always an intermediate of this pass (the first module
  gets ``activation + vector``, a fresh tensor), never the model's or the caller's tensor.
- ``ReLU`` then a max pool runs as the pool then ``ReLU`` (a max commutes with any
  non-decreasing function), so the ReLU touches a quarter of the entries after a 2 x 2 pool.
- A max pool whose windows tile the input (kernel == stride, no padding, dilation or ceil mode)
  is the elementwise maximum of its strided slices: several times faster on the CPU than
  PyTorch's kernel for small windows. Max is exact, so the values are the same.
"""

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["compile_suffix", "tiling_window"]

_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)


def tiling_window(module: nn.Module) -> tuple[int, ...]:
    """The window of a max pool whose windows tile its input, or ``()`` for any other module."""
    if not isinstance(module, _MAX_POOLS) or module.return_indices or module.ceil_mode:
        return ()
    dims = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3}[type(module)]
    expand = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v,) * dims  # noqa: E731
    kernel, stride = (
        expand(module.kernel_size),
        expand(module.stride if module.stride is not None else module.kernel_size),
    )
    if kernel != stride or any(expand(module.padding)) or any(d != 1 for d in expand(module.dilation)):
        return ()
    return kernel


def _tiled_max(window: tuple[int, ...]) -> Callable[[Tensor], Tensor]:
    def pool(x: Tensor) -> Tensor:
        lead = x.dim() - len(window)
        sizes = [x.shape[lead + i] // k * k for i, k in enumerate(window)]  # PyTorch drops a partial last window
        out = None
        for offsets in itertools.product(*(range(k) for k in window)):
            part = x[(Ellipsis, *(slice(o, s, k) for o, s, k in zip(offsets, sizes, window)))]
            out = part.clone() if out is None else torch.maximum(out, part, out=out)
        return out  # type: ignore[return-value]

    return pool


def _relu_(x: Tensor) -> Tensor:
    return x.relu_()


def compile_suffix(modules: Sequence[nn.Module]) -> Callable[[Tensor], Tensor]:
    """One function running ``modules`` in order on a batch this pass owns, with the shortcuts above."""
    steps: list[Callable[[Tensor], Tensor]] = []
    i = 0
    while i < len(modules):
        m = modules[i]
        relu = type(m) is nn.ReLU
        window = tiling_window(modules[i + 1]) if relu and i + 1 < len(modules) else ()
        if window:  # pool first, then the ReLU on the pooled entries
            steps += [_tiled_max(window), _relu_]
            i += 2
            continue
        window = tiling_window(m)
        steps.append(_relu_ if relu else _tiled_max(window) if window else m)
        i += 1

    def run(x: Tensor) -> Tensor:
        for step in steps:
            x = step(x)
        return x

    return run
