"""Rebuilding a Linear-activation stack from a plain state dict (the PyTorch quickstart's ``model.pth``)."""

import re
from collections.abc import Mapping
from typing import Optional

from torch import Tensor, nn

from hookedmlp.errors import CheckpointError, warn
from hookedmlp.models.configs import activation_module, check_activation

__all__ = ["sequential_from_state_dict"]

_KEY = re.compile(r"^(?P<prefix>(?:.*\.)?)(?P<index>\d+)\.(?P<param>weight|bias)$")
_FROM_MODULE = "build the network in PyTorch, load the state dict into it, and wrap it with HookedMLP.from_module"


def sequential_from_state_dict(state_dict: Mapping[str, Tensor], activation: Optional[str] = None) -> nn.Sequential:
    """An ``nn.Sequential`` of Linear layers with ``activation`` between them, holding ``state_dict``'s weights.

    Keys are ``<prefix>{i}.weight`` / ``<prefix>{i}.bias`` with one common prefix (e.g.
    ``linear_relu_stack.0.weight``), Linear layers at every other index; a first Linear at
    index 1 means a Flatten before it, as in the quickstart's stack.
    """
    if activation is not None:
        check_activation(activation)
    params: dict[int, dict[str, Tensor]] = {}
    prefixes = set()
    for key, value in state_dict.items():
        m = _KEY.match(key)
        if m is None:
            what = (
                "batch norm statistics"
                if re.search(r"running_(mean|var)|num_batches_tracked", key)
                else "a module other than Linear"
            )
            raise CheckpointError(
                f"unexpected key {key!r} ({what}); from_state_dict reads only Linear stacks with keys like "
                f"'linear_relu_stack.0.weight'. For other networks, {_FROM_MODULE}"
            )
        if not isinstance(value, Tensor):
            raise CheckpointError(
                f"{key!r} holds a {type(value).__name__}, not a tensor; pass a state dict "
                "(torch.load(path, weights_only=True))"
            )
        prefixes.add(m["prefix"])
        params.setdefault(int(m["index"]), {})[m["param"]] = value
    if not params:
        raise CheckpointError("the state dict is empty; expected the weights of a Sequential of Linear layers")
    if len(prefixes) > 1:
        raise CheckpointError(f"keys have several prefixes {sorted(prefixes)}; pass the state dict of one Sequential")
    indices = sorted(params)
    for idx in indices:  # what sits at each index, before how the indices are spaced: a norm's weight explains a gap
        w = params[idx].get("weight")
        if w is None:
            raise CheckpointError(
                f"index {idx} has {sorted(params[idx])} but no weight; a Linear layer has "
                f"'{idx}.weight'. For other networks, {_FROM_MODULE}"
            )
        if w.ndim != 2:
            kind = "a convolution's" if w.ndim > 2 else "a norm's or PReLU's"
            raise CheckpointError(
                f"index {idx} has a weight of shape {list(w.shape)}: a Linear layer's weight is 2-D, "
                f"this looks like {kind}; {_FROM_MODULE}"
            )
    if indices[0] > 1 or any(b - a != 2 for a, b in zip(indices, indices[1:])):
        raise CheckpointError(
            f"Linear layers at indices {indices}; expected them at every other index (0, 2, 4, ...: "
            f"Linear, activation, Linear, ...). For other stacks, {_FROM_MODULE}"
        )
    modules: list[nn.Module] = [nn.Flatten()] if indices[0] == 1 else []
    width = None
    for idx in indices:
        w, bias = params[idx]["weight"], params[idx].get("bias")
        if width is not None and w.shape[1] != width:
            raise CheckpointError(f"Linear at index {idx} takes {w.shape[1]} inputs but the previous one gives {width}")
        if bias is not None and tuple(bias.shape) != (w.shape[0],):
            raise CheckpointError(
                f"Linear at index {idx}: bias has shape {list(bias.shape)}, expected [{w.shape[0]}] "
                f"to match its weight {list(w.shape)}"
            )
        width = int(w.shape[0])
    if activation is None:  # only once the file is known to be a Linear stack
        warn(
            "from_state_dict: a state dict does not record the activation between the Linear layers; assuming "
            "ReLU (pass activation='relu' to confirm, or the right one)",
            UserWarning,
        )
        activation = "relu"
    for n, idx in enumerate(indices):
        w, bias = params[idx]["weight"], params[idx].get("bias")
        if n > 0:
            modules.append(activation_module(activation))
        linear = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None, device="meta")
        # copies, as load_state_dict makes: the model must not share storage with the network the dict came from
        linear.load_state_dict({k: v.detach().clone() for k, v in params[idx].items()}, assign=True)
        modules.append(linear)
    return nn.Sequential(*modules)
