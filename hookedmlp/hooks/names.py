"""Hook names: which hook points a name, a glob or a filter selects (with the closest valid names when none does),
TransformerLens' shorthand names, and the error for a hook point that never ran."""

import fnmatch
import re
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

from hookedmlp.errors import ArgumentTypeError, HookNameError, did_you_mean

__all__ = ["NamesFilter", "select", "select_one", "get_act_name", "layer_count", "not_run_error"]

NamesFilter = Union[None, str, Sequence[str], Callable[[str], bool]]


def select(names: Sequence[str], names_filter: NamesFilter) -> list[str]:
    """The hook names (of ``names``, in order) ``names_filter`` selects (see ``HookedRoot.resolve_names``)."""
    if names_filter is None:
        return list(names)
    if callable(names_filter) and not isinstance(names_filter, str):
        selected = [n for n in names if names_filter(n)]
        if not selected:
            label = getattr(names_filter, "__name__", repr(names_filter))
            raise HookNameError(f"names filter {label!r} matched no hook point; hook names are: {', '.join(names)}")
        return selected
    patterns = [names_filter] if isinstance(names_filter, str) else list(names_filter)
    if not patterns:
        raise HookNameError(
            f"names filter is an empty list; pass None for all hook points or some of: {', '.join(names)}"
        )
    known = set(names)
    chosen: set[str] = set()
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ArgumentTypeError(f"names filter entries must be str, got {type(pattern).__name__} ({pattern!r})")
        if pattern in known:
            chosen.add(pattern)
        elif any(c in pattern for c in "*?["):
            matched = fnmatch.filter(names, pattern)
            if not matched:
                raise HookNameError(f"pattern {pattern!r} matched no hook point{did_you_mean(pattern, list(names))}")
            chosen.update(matched)
        else:
            raise HookNameError(f"unknown hook {pattern!r}{did_you_mean(pattern, list(names))}")
    return [n for n in names if n in chosen]


def select_one(names: Sequence[str], name: object) -> str:
    """``name`` if it names exactly one hook point of ``names`` (no pattern), else ``HookNameError``."""
    if not isinstance(name, str):
        raise ArgumentTypeError(f"expected one hook name (str), got {type(name).__name__}")
    selected = select(names, name)
    if selected != [name]:
        raise HookNameError(
            f"expected one hook name, got the pattern {name!r} matching {len(selected)} hook points; "
            f"pick one, e.g. {selected[0]!r}"
        )
    return name


# TransformerLens' shorthands: short activation names, and the sublayer each one lives in
_ACT_ALIASES = {
    "attn": "pattern",
    "attn_logits": "attn_scores",
    "key": "k",
    "query": "q",
    "value": "v",
    "mlp_pre": "pre",
    "mlp_mid": "mid",
    "mlp_post": "post",
}
_LAYER_TYPE_ALIASES = {"a": "attn", "m": "mlp", "b": "", "block": "", "blocks": "", "attention": "attn"}
_ATTN_NAMES = ("k", "v", "q", "z", "rot_k", "rot_q", "result", "pattern", "attn_scores")
_MLP_NAMES = ("pre", "post", "mid", "pre_linear")


def get_act_name(name: str, layer: Optional[int] = None, layer_type: Optional[str] = None) -> str:
    """TransformerLens' ``get_act_name``: the hook name a shorthand stands for, in HookedTransformer's layout.

    A full name (with a dot, or starting ``hook_``) is returned as it is; ``"k6"`` is ``("k", 6)``
    and ``"scale4ln1"`` is ``("scale", 4, "ln1")``; attention names go under ``attn.``, MLP names
    under ``mlp.``, a norm's ``scale``/``normalized`` without a layer under ``ln_final.``.

    Examples:
        >>> get_act_name("k", 6, "a"), get_act_name("pre", 2), get_act_name("embed")
        ('blocks.6.attn.hook_k', 'blocks.2.mlp.hook_pre', 'hook_embed')
        >>> get_act_name("scale4ln1"), get_act_name("resid_post", 0)
        ('blocks.4.ln1.hook_scale', 'blocks.0.hook_resid_post')
    """
    if ("." in name or name.startswith("hook_")) and layer is None and layer_type is None:
        return name
    short = re.match(r"([a-z]+)(\d+)([a-z]?.*)", name)
    if short is not None:
        name, layer_digits, layer_type = short.groups()
        layer = int(layer_digits)
    name = _ACT_ALIASES.get(name, name)
    if name in _ATTN_NAMES:
        layer_type = "attn"
    elif name in _MLP_NAMES:
        layer_type = "mlp"
    elif layer_type in _LAYER_TYPE_ALIASES:
        layer_type = _LAYER_TYPE_ALIASES[layer_type]
    full = (f"blocks.{layer}." if layer is not None else "") + (f"{layer_type}." if layer_type else "") + f"hook_{name}"
    return f"ln_final.{full}" if name in ("scale", "normalized") and layer is None else full


def not_run_error(model: Any, missing: Sequence[str], ran: Sequence[str]) -> HookNameError:
    """The error for hook points of ``model`` that did not run in a forward pass; ``ran`` are those that did."""
    points = "hook point" if len(missing) == 1 else "hook points"
    listed = ", ".join(map(repr, missing[:4])) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
    calls = " or ".join(f"self.{n}" for n in missing[:2])
    if ran:
        fix = f"call it in forward, or pick a hook point that ran: {', '.join(ran[:6])}{' ...' if len(ran) > 6 else ''}"
    else:
        fix = "call it in forward"
    return HookNameError(
        f"{points} {listed} of {type(model).__name__} did not run in the forward pass: forward never calls "
        f"{calls} on this input, or returns before it (e.g. stop_at_layer); {fix}"
    )


def layer_count(model: Any) -> Optional[int]:
    """``model.n_layers``, else ``model.cfg.n_layers`` (TransformerLens' place), else None."""
    n = getattr(model, "n_layers", None)
    return n if n is not None else getattr(getattr(model, "cfg", None), "n_layers", None)
