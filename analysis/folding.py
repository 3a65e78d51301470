"""Where an added vector may go on a chain: folding it through affine modules, and whether stacking is safe.

*Folding.* Adding ``v`` before an affine module ``L`` (Linear, Conv, eval-mode BatchNorm,
Flatten, AvgPool...: ``hookedmlp.modules.is_affine``) equals adding ``L(v) - L(0)`` after it.
A vector is never carried past a hook point, or a module, with hooks attached: whatever is
attached there must see the steered activation.

*Batch dependence.* Several vectors may share one batch of the suffix only if nothing after
the hook can see the batch as a whole: a hook (e.g. one subtracting the batch mean, or a
``patch`` holding a batch), a training-mode batch norm, dropout or RReLU, or a module from
outside ``torch.nn`` (nothing is known about it).
"""

from typing import Optional

from torch import Tensor, nn

from hookedmlp import HookedMLP
from hookedmlp.models.modules import fold as fold_module

__all__ = ["fold", "hooked_positions", "batch_dependence"]


def _module_hooks(module: nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


def hooked_positions(model: HookedMLP) -> list[bool]:
    """For each hook position, whether a hook of any kind is attached there."""
    return [bool(p.fwd_hooks or p._forward_hooks or p._forward_pre_hooks) for p in model.hook_points()]


def fold(model: HookedMLP, hook: str, vectors: Tensor, hooked: Optional[list[bool]] = None) -> tuple[str, Tensor]:
    """Carry ``vectors`` ``[k, *shape]`` added at ``hook`` forward through the affine modules after it.

    Returns the last hook point reached and the equivalent vectors there; the result always
    equals adding the vectors at ``hook`` itself. ``hooked`` is ``hooked_positions(model)``, if known.

    Examples:
        >>> hook, v = fold(tiny, "layer1.post", torch.ones(1, 8))
        >>> hook, torch.allclose(v, torch.ones(1, 8) @ tiny.layer2.module.weight.T)
        ('layer2.post', True)
    """
    layout = model.layout
    hooked = hooked_positions(model) if hooked is None else hooked
    if not hooked[layout.site(model.resolve_name(hook)).position]:
        hook = layout.carrier(hook)
    nxt = layout.next_layer(hook)
    while nxt < model.n_layers:
        layer = layout.layers[nxt]
        if not layer.affine or hooked[2 * nxt] or hooked[2 * nxt + 1] or _module_hooks(layer.module):
            break
        vectors = fold_module(layer.module, vectors)
        hook, nxt = layout.post(nxt), nxt + 1
    return hook, vectors


def batch_dependence(model: HookedMLP, hook: str, hooked: list[bool]) -> Optional[str]:
    """Why the suffix after ``hook`` may depend on the batch (so vectors must not be stacked), or None."""
    layout = model.layout
    if any(hooked[layout.site(hook).position + 1 :]):
        return "hooks are attached after it"
    for layer in layout.layers[layout.next_layer(hook) :]:
        for m in layer.module.modules():
            if m._forward_hooks or m._forward_pre_hooks:
                return f"module {layer.path} has PyTorch hooks"
            if m.training and isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.RReLU)):
                return f"module {layer.path} ({type(m).__name__}) is in training mode"
            if not type(m).__module__.startswith(("torch.nn.", "hookedmlp.")):
                return f"module {layer.path} ({type(m).__name__}) is not torch.nn's and may mix examples"
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return "global PyTorch module hooks are registered"
    return None
