"""Several networks of one architecture run as one: their parameters stacked along a leading seed dimension.

``StackedNet(nets)`` takes ``S`` networks that differ only in their weights (the seeds of one
recipe) and runs them together on inputs ``[S, batch, ...]``: seed ``s`` sees ``x[s]``. Each
Linear is one batched product for all seeds (``baddbmm`` forward, ``bmm`` backward), so the
per-op dispatch a small network pays on every step is paid once per batch of seeds instead of
once per seed. The network's own ``forward`` runs unchanged on a copy whose leaf modules are
replaced by stacked ones, so a chain and a residual network (its skip connections are plain
tensor additions) stack alike.

Every stacked module computes, for each seed, exactly the operations the module computes alone,
in the same order: a batched product's slice ``s`` is the same matrix product as the seed's own
at one thread (MKL, measured), the backward of a Linear forms its weight gradient as
``grad^T @ input`` as torch's own ``linear`` backward does, dropout draws each seed's mask from
that seed's own generator with the call ``F.dropout`` makes on the CPU, and the modules that have
no batched form here (LayerNorm, BatchNorm1d, Conv2d) run once per seed. Training a seed in a
stack therefore gives the bits training it alone gives, at one thread (``hookedmlp.train_seeds``).
A module of any other kind is refused: it would otherwise be silently different.
"""

import copy
from collections.abc import Sequence
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hookedmlp.errors import ConfigError
from hookedmlp.hooks.point import HookPoint
from hookedmlp.models.configs import ACTIVATIONS
from hookedmlp.models.residual import _MLP, ResidualBlock, ResidualMLP

__all__ = ["StackedNet", "stackable"]

# Modules without parameters that act on each entry alone. The exact ones run on [S, batch, ...] as they are; the
# others compute a vector's entries (torch's vectorised erf, exp...) and a tail's (the scalar ones) with other
# roundings, so they run on the whole stack only where each seed's slice holds whole vectors, as the lone one does.
_EXACT = (HookPoint, nn.Identity, nn.ReLU, nn.LeakyReLU)
_ELEMENTWISE = tuple({type(make()) for make in ACTIVATIONS.values()} - set(_EXACT))
_POOLS = (nn.MaxPool2d,)  # per example, comparisons only: seeds and examples merged into one batch
_PER_SEED = (nn.LayerNorm, nn.BatchNorm1d, nn.Conv2d)  # no batched form with the same bits: once per seed
_KNOWN = (*_EXACT, *_ELEMENTWISE, *_POOLS, *_PER_SEED, nn.Linear, nn.Dropout, nn.Flatten)
# Containers whose forward only calls their children and adds tensors: it runs as written on [S, batch, ...].
_CONTAINERS = (nn.Sequential, nn.ModuleList, ResidualMLP, ResidualBlock, _MLP)


def stackable(net: nn.Module) -> Optional[str]:
    """``None`` if ``StackedNet`` can run ``net``'s seeds together, else why not (the first module it cannot)."""
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
            return f"{name} pads with {module.padding_mode!r}; only zero padding is stacked"
        if type(module) not in (*_KNOWN, *_CONTAINERS):  # exactly these: a subclass may compute otherwise
            return f"{name or 'the network'} is a {type(module).__name__}, which has no stacked form here"
    return None


# torch's CPU bmm computes a product of fewer multiply-adds than this per matrix with its own loop, which rounds
# unlike the BLAS call a lone Linear makes.
_BMM_OWN_LOOP = 400
# torch's CPU allocator aligns every new tensor to 64 bytes, and MKL's results can depend on an operand's alignment
# (measured: a [7, 33] input at an offset of 28 bytes gave other bits): a seed's slice must be as aligned as the
# fresh tensor its lone run would use.
_ALIGN = 64
# torch's vectorised elementwise loops take two vectors per iteration (AVX512: 128 bytes) and finish with scalar
# code: a seed's slice must be whole blocks for the stacked loop to round each entry as the lone loop does.
_BLOCK = 256


def _in(t: Tensor, tensors: Sequence[Tensor]) -> bool:
    """Whether ``t`` is one of ``tensors`` (identity: ``in`` would compare values)."""
    return any(t is u for u in tensors)


def _aligned(t: Tensor) -> bool:
    return t.is_contiguous() and t.data_ptr() % _ALIGN == 0


def _own(t: Tensor) -> Tensor:
    """``t``, or an aligned copy of it: what the lone run would hold (the copy changes no value)."""
    return t if _aligned(t) else t.clone(memory_format=torch.contiguous_format)


def _batchable(x: Tensor, weight: Tensor, *more: Tensor) -> bool:
    """Whether one batched product gives every seed the bits of its own: a BLAS-sized matrix product (no vector
    operand), and every seed's slice of every operand and result starting on an aligned address."""
    batch, d_in, d_out = x.shape[1], x.shape[2], weight.shape[1]
    if min(batch, d_in, d_out) < 2 or batch * d_in * d_out < _BMM_OWN_LOOP:
        return False
    item = x.element_size()
    slices = (batch * d_in, batch * d_out, d_out * d_in)
    return all(n * item % _ALIGN == 0 for n in slices) and all(_aligned(t) for t in (x, weight, *more))


class _LinearFn(torch.autograd.Function):
    """``x @ W^T + b`` for every seed at once (``_batchable`` operands), the backward's products in the order
    torch's ``linear`` backward forms them (``grad^T @ x`` for the weight: ``x^T @ grad`` rounds apart)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        if bias is None:
            return torch.bmm(x, weight.transpose(1, 2))
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], Tensor, Optional[Tensor]]:
        x, weight = ctx.saved_tensors
        grad = _own(grad)
        grad_x = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
        return grad_x, torch.bmm(grad.transpose(1, 2), x), grad.sum(1) if ctx.has_bias else None


def _stacked(tensors: Sequence[Tensor], parameter: bool) -> Tensor:
    t = torch.stack([t.detach() for t in tensors])
    return nn.Parameter(t) if parameter else t


class _Stacked(nn.Module):
    """The parameters and buffers of one module of every seed, stacked; ``source`` is the seeds' modules."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        super().__init__()
        self.source = list(modules)  # a plain list: not registered, so their parameters are not ours
        first = modules[0]
        for name, p in first._parameters.items():  # with the ones that are None (Linear without bias)
            self.register_parameter(name, None if p is None else _stacked([getattr(m, name) for m in modules], True))
        for name, buf in first._buffers.items():
            self.register_buffer(name, None if buf is None else _stacked([getattr(m, name) for m in modules], False))

    def seed_tensors(self, name: str) -> tuple[Optional[Tensor], ...]:
        """One view per seed of a stacked parameter or buffer (``None`` stays ``None``)."""
        t = getattr(self, name)
        return (None,) * len(self.source) if t is None else t.unbind(0)

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy each seed's slice into that seed's own module."""
        for name, t in [*self.named_parameters(recurse=False), *self.named_buffers(recurse=False)]:
            for s, module in enumerate(self.source):
                getattr(module, name).copy_(t[s])


class _Linear(_Stacked):
    def forward(self, x: Tensor) -> Tensor:
        x = _own(x)
        if _batchable(x, self.weight):
            return _LinearFn.apply(x, self.weight, self.bias)
        # once per seed, through torch's own linear and its backward, on operands as aligned as the lone run's
        weights, biases = self.seed_tensors("weight"), self.seed_tensors("bias")
        return torch.stack([F.linear(_own(x[s]), _own(weights[s]), biases[s]) for s in range(len(x))])


class _Dropout(nn.Module):
    """Each seed's mask from its own generator, drawn as ``F.dropout`` draws it on the CPU (bernoulli, then scale)."""

    def __init__(self, p: float, generators: Sequence[torch.Generator]) -> None:
        super().__init__()
        self.p, self.generators = p, list(generators)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        noise = torch.empty_like(x)
        for s, gen in enumerate(self.generators):
            noise[s].bernoulli_(1 - self.p, generator=gen)
        return x * noise.div_(1 - self.p)


class _PerSeed(_Stacked):
    """A module with no batched form here, run once per seed on its slice with that seed's tensors."""

    def forward(self, x: Tensor) -> Tensor:
        m = self.source[0]
        views = {n: self.seed_tensors(n) for n in [*self._parameters, *self._buffers]}
        outs = []
        for s in range(len(self.source)):
            t, xs = {n: v[s] for n, v in views.items()}, _own(x[s])
            if isinstance(m, nn.LayerNorm):
                outs.append(F.layer_norm(xs, m.normalized_shape, t.get("weight"), t.get("bias"), m.eps))
            elif isinstance(m, nn.Conv2d):
                outs.append(F.conv2d(xs, _own(t["weight"]), t.get("bias"), m.stride, m.padding, m.dilation, m.groups))
            else:
                outs.append(self._batch_norm(m, xs, t))
        return torch.stack(outs)

    def _batch_norm(self, m: nn.BatchNorm1d, x: Tensor, t: dict[str, Tensor]) -> Tensor:
        """``nn.BatchNorm1d.forward``'s arithmetic with one seed's weights and running statistics."""
        momentum = 0.0 if m.momentum is None else m.momentum
        if self.training and m.track_running_stats and t.get("num_batches_tracked") is not None:
            t["num_batches_tracked"].add_(1)
            if m.momentum is None:
                momentum = 1.0 / float(t["num_batches_tracked"])
        use_batch = self.training or t.get("running_mean") is None
        return F.batch_norm(
            x,
            t.get("running_mean") if not self.training or m.track_running_stats else None,
            t.get("running_var") if not self.training or m.track_running_stats else None,
            t.get("weight"),
            t.get("bias"),
            use_batch,
            momentum,
            m.eps,
        )


class _Each(nn.Module):
    """An elementwise module on the whole stack where each seed's slice is whole vectors, else once per seed."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        if _aligned(x) and x[0].numel() * x.element_size() % _BLOCK == 0:
            return self.module(x)
        return torch.stack([self.module(_own(x[s])) for s in range(len(x))])


class _Merged(nn.Module):
    """A per-example module run on seeds and examples merged into one batch."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x.flatten(0, 1)).unflatten(0, x.shape[:2])


class _Flatten(nn.Module):
    def __init__(self, module: nn.Flatten) -> None:
        super().__init__()
        self.start = module.start_dim + 1 if module.start_dim >= 0 else module.start_dim
        self.end = module.end_dim + 1 if module.end_dim >= 0 else module.end_dim

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(self.start, self.end)


def _stack_module(modules: list[nn.Module], generators: Sequence[torch.Generator]) -> Optional[nn.Module]:
    """The stacked form of one module of every seed (``None``: keep the module as it is)."""
    first = modules[0]
    if isinstance(first, nn.Linear):
        return _Linear(modules)
    if isinstance(first, nn.Dropout):
        return _Dropout(first.p, generators)
    if isinstance(first, _PER_SEED):
        return _PerSeed(modules)
    if isinstance(first, _ELEMENTWISE):
        return _Each(first)
    if isinstance(first, _POOLS):
        return _Merged(copy.deepcopy(first))
    if isinstance(first, nn.Flatten):
        return _Flatten(first)
    return None


class StackedNet(nn.Module):
    """``S`` networks of one architecture run as one on ``[S, batch, ...]`` (see the module's docs).

    The stacked parameters are this module's own (``parameters()``); an optimiser steps their
    per-seed slices (``seed_parameters()``, after ``share_grads()``). Each seed's network keeps its
    own parameters, and ``write_back()`` copies the stacked values into them. Dropout draws seed
    ``s``'s masks from ``generators[s]``.
    """

    def __init__(self, nets: Sequence[nn.Module], generators: Sequence[torch.Generator]) -> None:
        super().__init__()
        if not nets:
            raise ConfigError("StackedNet needs at least one network, got none")
        why = stackable(nets[0])
        if why is not None:
            raise ConfigError(f"these networks cannot be stacked: {why}; train them one at a time")
        names = [n for n, _ in nets[0].named_modules()]
        for net in nets[1:]:
            if [n for n, _ in net.named_modules()] != names:
                raise ConfigError("StackedNet needs networks of one architecture; their modules differ")
        gens = list(generators)
        if len(gens) != len(nets):
            raise ConfigError(f"StackedNet needs one generator per network (for dropout): {len(nets)}, got {len(gens)}")
        self.n = len(nets)
        self.net = copy.deepcopy(nets[0])  # its forward, with stacked leaves swapped in below
        self._stacked: list[_Stacked] = []
        seeds = [dict(net.named_modules()) for net in nets]
        for name in names:
            if not name:
                continue
            replacement = _stack_module([m[name] for m in seeds], gens)
            if replacement is not None:
                parent, _, leaf = name.rpartition(".")
                setattr(self.net.get_submodule(parent), leaf, replacement)
                if isinstance(replacement, _Stacked):
                    self._stacked.append(replacement)

        # What the optimiser steps. A fused kernel splits each tensor into vector blocks and a scalar tail, which
        # round apart: a parameter whose every seed's slice is whole blocks is stepped whole (each entry takes the
        # vector path, as alone), any other as one tensor per seed sharing the stacked storage, so that its seams fall
        # where the lone seed's do. Fewer tensors: less of the optimiser's per-tensor dispatch on every step.
        self._whole = [p for p in self.parameters() if p[0].numel() * p.element_size() % _BLOCK == 0]
        self._slices = [(p, list(p.detach().unbind(0))) for p in self.parameters() if not _in(p, self._whole)]

    def seed_parameters(self) -> list[Tensor]:
        """What to give an optimiser: each stacked parameter whole, or as one tensor per seed (see ``__init__``)."""
        return [*self._whole, *(t for _, slices in self._slices for t in slices)]

    def share_grads(self) -> None:
        """Give each per-seed tensor of ``seed_parameters`` its gradient: its part of the stacked parameter's."""
        for p, slices in self._slices:
            for t, g in zip(slices, [None] * len(slices) if p.grad is None else p.grad.unbind(0)):
                t.grad = g

    def forward(self, x: Tensor) -> Tensor:
        """Seed ``s``'s output for ``x[s]``: ``[S, batch, ...]`` in, ``[S, batch, ...]`` out."""
        return self.net.forward(x)  # forward, not __call__: a hooked model's input check expects one batch

    def write_back(self) -> None:
        """Copy every seed's stacked parameters and buffers into that seed's own network."""
        for module in self._stacked:
            module.write_back()
