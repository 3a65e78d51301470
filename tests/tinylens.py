"""TinyLens: a small network written the TransformerLens way, with HookedTransformer's hook names and layout.

It stands in for the transformers of TransformerLens' own tests (tests/test_tl_ported.py): an
embedding, ``n_layers`` residual blocks (``ln1``, ``attn``, ``ln2``, ``mlp``) and a final norm
and unembedding, with a HookPoint wherever HookedTransformer has one of the same name. It reads
one vector per example (no positions), so attention becomes per-head linear maps of the
residual stream: ``blocks.{l}.attn.hook_k`` is ``[batch, n_heads, d_head]`` where
TransformerLens' is ``[batch, pos, n_heads, d_head]``. Like HookedTransformer, the optional
points (``attn.hook_result``, ``hook_q_input``, ``hook_mlp_in``, ``hook_attn_in``) run only when
their ``cfg`` flag is set, and ``check_hooks_to_add`` refuses a hook on one that is off.
"""

from types import SimpleNamespace

import torch
from torch import nn

from hookedmlp import HookedRoot, HookPoint


class LayerNormPre(nn.Module):
    """Centre and scale (no weights), with TransformerLens' ``hook_scale`` and ``hook_normalized``."""

    def __init__(self) -> None:
        super().__init__()
        self.hook_scale = HookPoint()  # [batch, 1] ([batch, n_heads, 1] in ln1)
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt())
        return self.hook_normalized(x / scale)


class Heads(nn.Module):
    """Attention without positions: each head maps the residual stream to ``k``, then ``z = relu(k)``, then out."""

    def __init__(self, cfg: SimpleNamespace) -> None:
        super().__init__()
        self.cfg = cfg
        self.W_K = nn.Parameter(torch.randn(cfg.n_heads, cfg.d_model, cfg.d_head) / cfg.d_model**0.5)
        self.W_O = nn.Parameter(torch.randn(cfg.n_heads, cfg.d_head, cfg.d_model) / cfg.d_head**0.5)
        self.b_O = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_k = HookPoint()  # [batch, n_heads, d_head]
        self.hook_z = HookPoint()  # [batch, n_heads, d_head]
        self.hook_result = HookPoint()  # [batch, n_heads, d_model], only with cfg.use_attn_result

    def forward(self, per_head: torch.Tensor) -> torch.Tensor:
        z = self.hook_z(torch.relu(self.hook_k(torch.einsum("bhm,hmd->bhd", per_head, self.W_K))))
        if self.cfg.use_attn_result:
            return self.hook_result(torch.einsum("bhd,hdm->bhm", z, self.W_O)).sum(-2) + self.b_O
        return torch.einsum("bhd,hdm->bm", z, self.W_O) + self.b_O


class MLP(nn.Module):
    def __init__(self, cfg: SimpleNamespace) -> None:
        super().__init__()
        self.W_in, self.W_out = nn.Linear(cfg.d_model, cfg.d_mlp), nn.Linear(cfg.d_mlp, cfg.d_model)
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.W_out(self.hook_post(torch.relu(self.hook_pre(self.W_in(x)))))


class Block(nn.Module):
    def __init__(self, cfg: SimpleNamespace) -> None:
        super().__init__()
        self.cfg = cfg
        self.ln1, self.attn, self.ln2, self.mlp = LayerNormPre(), Heads(cfg), LayerNormPre(), MLP(cfg)
        self.hook_attn_in = HookPoint()  # [batch, n_heads, d_model], only with cfg.use_attn_in
        self.hook_q_input = HookPoint()  # [batch, n_heads, d_model], only with cfg.use_split_qkv_input
        self.hook_mlp_in = HookPoint()  # [batch, d_model], only with cfg.use_hook_mlp_in
        self.hook_resid_pre = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, resid: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        resid_pre = self.hook_resid_pre(resid)
        per_head = resid_pre.unsqueeze(-2).expand(-1, cfg.n_heads, -1)
        if cfg.use_attn_in:
            per_head = self.hook_attn_in(per_head.clone())
        elif cfg.use_split_qkv_input:
            per_head = self.hook_q_input(per_head.clone())
        attn_out = self.hook_attn_out(self.attn(self.ln1(per_head)))  # ln1 on every head's copy
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_in = self.hook_mlp_in(resid_mid.clone()) if cfg.use_hook_mlp_in else resid_mid
        return self.hook_resid_post(resid_mid + self.hook_mlp_out(self.mlp(self.ln2(mlp_in))))


class TinyLens(HookedRoot):
    """HookedTransformer's hook names on a small residual network over vectors (see the module)."""

    def __init__(self, n_layers: int = 2, d_in: int = 6, d_model: int = 8, n_heads: int = 2, d_out: int = 5) -> None:
        super().__init__()
        self.cfg = SimpleNamespace(
            n_layers=n_layers,
            d_in=d_in,
            d_model=d_model,
            n_heads=n_heads,
            d_head=4,
            d_mlp=12,
            d_out=d_out,
            use_attn_result=False,
            use_split_qkv_input=False,
            use_hook_mlp_in=False,
            use_attn_in=False,
        )
        self.embed = nn.Linear(d_in, d_model)
        self.hook_embed = HookPoint()
        self.blocks = nn.ModuleList(Block(self.cfg) for _ in range(n_layers))
        self.ln_final = LayerNormPre()
        self.unembed = nn.Module()
        self.unembed.W_U = nn.Parameter(torch.randn(d_model, d_out) / d_model**0.5)
        self.unembed.b_U = nn.Parameter(torch.randn(d_out))
        self.setup()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        resid = self.hook_embed(self.embed(x))
        for block in self.blocks:
            resid = block(resid)
        return self.ln_final(resid) @ self.unembed.W_U + self.unembed.b_U

    # HookedTransformer's switches for its optional hook points
    def set_use_attn_result(self, use: bool) -> None:
        self.cfg.use_attn_result = use

    def set_use_split_qkv_input(self, use: bool) -> None:
        self.cfg.use_split_qkv_input = use

    def set_use_hook_mlp_in(self, use: bool) -> None:
        self.cfg.use_hook_mlp_in = use

    def set_use_attn_in(self, use: bool) -> None:
        self.cfg.use_attn_in = use

    def check_hooks_to_add(self, hook_point, hook_point_name, hook, dir="fwd", is_permanent=False, prepend=False):
        """Refuse a hook on an optional hook point whose switch is off (HookedTransformer's rule)."""
        switches = {
            "attn.hook_result": "use_attn_result",
            "hook_q_input": "use_split_qkv_input",
            "hook_mlp_in": "use_hook_mlp_in",
            "hook_attn_in": "use_attn_in",
        }
        for suffix, flag in switches.items():
            if hook_point_name.endswith(suffix):
                assert getattr(self.cfg, flag), f"Cannot add hook {hook_point_name} if {flag} is False"
