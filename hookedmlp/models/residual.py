"""ResidualMLP: a network whose forward is not a chain, written the TransformerLens way.

``h = embed(x)``; each block adds ``W_out act(W_in norm(h))`` to ``h``; the logits are
``unembed(norm(h))``. The skip connection means no module-by-module chain computes it, so
``HookedMLP.from_module`` would refuse it: instead its ``HookPoint``s sit in ``forward``, with
TransformerLens' names (``hook_embed``, ``blocks.{i}.hook_resid_pre``, ``blocks.{i}.mlp.hook_pre``,
``blocks.{i}.mlp.hook_post``, ``blocks.{i}.hook_mlp_out``, ``blocks.{i}.hook_resid_post``,
``hook_logits``). It is the template for writing your own.
"""

from typing import Any, Optional

import torch
from torch import nn

from hookedmlp.errors import CheckpointError, ConfigError, HookNameError
from hookedmlp.files.checkpoint import check_state, register_architecture
from hookedmlp.hooks.point import HookPoint
from hookedmlp.models.api import HookedModel
from hookedmlp.models.configs import ResidualConfig, activation_module, config_from_dict, config_to_dict
from hookedmlp.models.facts import shape_variants

__all__ = ["ResidualMLP", "ResidualBlock"]

_BLOCK_NAMES = {
    "resid_pre": "hook_resid_pre",
    "resid_post": "hook_resid_post",
    "mlp_out": "hook_mlp_out",
    "pre": "mlp.hook_pre",
    "post": "mlp.hook_post",
}


class _MLP(nn.Module):
    def __init__(self, cfg: ResidualConfig) -> None:
        super().__init__()
        self.W_in = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.hook_pre = HookPoint()
        self.act = activation_module(cfg.activation)
        self.hook_post = HookPoint()
        self.W_out = nn.Linear(cfg.d_mlp, cfg.d_model)

    def forward(self, x: Any) -> Any:  # (Any: torch.fx traces it with a proxy for x)
        return self.W_out(self.hook_post(self.act(self.hook_pre(self.W_in(x)))))


class ResidualBlock(nn.Module):
    """``h + mlp(norm(h))`` with hook points on the residual stream and inside the MLP."""

    def __init__(self, cfg: ResidualConfig) -> None:
        super().__init__()
        self.hook_resid_pre = HookPoint()
        self.ln = nn.LayerNorm(cfg.d_model) if cfg.norm == "layernorm" else nn.Identity()
        self.mlp = _MLP(cfg)
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, h: Any) -> Any:  # (Any: torch.fx traces it with a proxy for h)
        h = self.hook_resid_pre(h)
        return self.hook_resid_post(h + self.hook_mlp_out(self.mlp(self.ln(h))))


@register_architecture("residual_mlp")
class ResidualMLP(HookedModel):
    """A residual MLP (see the module's docs), hooked.

    Examples:
        >>> res = ResidualMLP(ResidualConfig(d_in=16, d_model=8, d_mlp=8, n_blocks=2, d_out=3))
        >>> res.hook_names[:3]
        ['hook_embed', 'blocks.0.hook_resid_pre', 'blocks.0.mlp.hook_pre']
        >>> res(torch.rand(5, 16)).shape
        torch.Size([5, 3])
    """

    def __init__(self, config: Optional[ResidualConfig] = None) -> None:
        super().__init__()
        cfg = ResidualConfig() if config is None else config
        if not isinstance(cfg, ResidualConfig):
            raise ConfigError(f"ResidualMLP builds a ResidualConfig, got {type(cfg).__name__}")
        self.config = cfg
        self.input_shape = cfg.input_shape
        self.n_layers = cfg.n_blocks
        self.embed = nn.Linear(cfg.d_in, cfg.d_model)
        self.hook_embed = HookPoint()
        self.blocks = nn.ModuleList(ResidualBlock(cfg) for _ in range(cfg.n_blocks))
        self.ln_final = nn.LayerNorm(cfg.d_model) if cfg.norm == "layernorm" else nn.Identity()
        self.unembed = nn.Linear(cfg.d_model, cfg.d_out)
        self.hook_logits = HookPoint()
        self.setup()

    def accepted_input_shapes(self) -> list[tuple[int, ...]]:
        return list(dict.fromkeys([(self.config.d_in,), *shape_variants(self.input_shape)]))

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        # the input is checked here, not in forward: forward stays a pure computation torch.fx can capture
        return super().__call__(self.prepare_input(x), *args, **kwargs)

    def forward(self, x: Any) -> Any:  # (Any: torch.fx traces it with a proxy for x)
        h = self.hook_embed(self.embed(x))
        for block in self.blocks:
            h = block(h)
        return self.hook_logits(self.unembed(self.ln_final(h)))

    def act_name(self, name: str, layer: Optional[int] = None, *rest: Any) -> str:
        """TL names: ``("resid_post", 0)`` -> ``"blocks.0.hook_resid_post"``, ``("embed",)`` -> ``"hook_embed"``."""
        if layer is None and name in ("embed", "logits") and not rest:
            return f"hook_{name}"
        if name not in _BLOCK_NAMES or layer is None or rest:
            raise HookNameError(
                f"tuple keys of a ResidualMLP are ('embed',), ('logits',) or (name, layer) with name one "
                f"of {', '.join(_BLOCK_NAMES)}; got {(name, layer, *rest)!r}"
            )
        return f"blocks.{layer + self.n_layers if layer < 0 else layer}.{_BLOCK_NAMES[name]}"

    def to_checkpoint(self) -> dict[str, Any]:
        return {
            "config": config_to_dict(self.config),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], source: str) -> "ResidualMLP":
        try:
            config = config_from_dict(ckpt.get("config"), f"{source} config")
        except ConfigError as e:
            raise CheckpointError(f"{e}; the file is corrupt or was edited") from None
        if not isinstance(config, ResidualConfig):
            raise CheckpointError(f"{source} lacks a residual MLP config; the file is corrupt or was edited")
        with torch.device("meta"):
            model = cls(config)
        check_state(model, ckpt["state_dict"], source)
        model.load_state_dict(ckpt["state_dict"], assign=True)
        return model
