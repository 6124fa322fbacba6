"""Caduceus backbone without token embedding: bidirectional Mamba blocks ("add" strategy).

Follows Caduceus' ``modeling_caduceus.py`` and mamba_ssm's ``mixer_seq_simple.py``:
parameter names ``layers.{i}.mixer.mamba_fwd.*``, ``layers.{i}.mixer.mamba_rev.*``,
``layers.{i}.norm.weight`` and ``norm_f.weight``. No reverse-complement equivariance.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn as nn

from prism.model.mamba import Mamba

__all__ = ["RMSNorm", "BiMambaMixer", "Block", "CaduceusBackbone", "init_mamba_weights"]


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """Half-precision inputs are computed in fp32; fp32 and fp64 in their own dtype (float64 works)."""
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dimension, computed in fp32 (fp64 for fp64 inputs)."""

    def __init__(self, d_model: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = _compute_dtype(x)
        xf = x.to(dt)
        xf = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (xf * self.weight.to(dt)).to(x.dtype)


class BiMambaMixer(nn.Module):
    """out = mamba_fwd(x) + flip(mamba_rev(flip(x))) along the sequence; (B, L, D) -> (B, L, D).

    mamba_rev shares in_proj and out_proj (the same modules) with mamba_fwd, as Caduceus'
    ``bidirectional_weight_tie``; its conv, x_proj, dt_proj, A_log and D are its own.
    """

    def __init__(self, d_model: int, **mamba_kwargs):
        super().__init__()
        self.mamba_fwd = Mamba(d_model, **mamba_kwargs)
        self.mamba_rev = Mamba(d_model, **mamba_kwargs)
        self.mamba_rev.in_proj = self.mamba_fwd.in_proj
        self.mamba_rev.out_proj = self.mamba_fwd.out_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.mamba_fwd(x)  # (B, L, D)
        out_rev = self.mamba_rev(x.flip(dims=(1,))).flip(dims=(1,))  # (B, L, D)
        return out + out_rev


class Block(nn.Module):
    """Pre-norm residual block: residual + mixer(norm(residual)).

    ``bidirectional=False`` makes the mixer one (causal) Mamba, as mamba_ssm's MixerModel: the "Mamba"
    baseline; its parameters are then ``mixer.*`` instead of ``mixer.mamba_fwd.*``.
    """

    def __init__(self, d_model: int, norm_eps: float = 1e-5, bidirectional: bool = True, **mamba_kwargs):
        super().__init__()
        self.mixer = BiMambaMixer(d_model, **mamba_kwargs) if bidirectional else Mamba(d_model, **mamba_kwargs)
        self.norm = RMSNorm(d_model, eps=norm_eps)

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        """residual: (B, L, D) -> (B, L, D); the sum takes the wider of the two dtypes (mamba_ssm's Block)."""
        hidden = self.mixer(self.norm(residual))  # (B, L, D)
        return residual + hidden


def init_mamba_weights(module: nn.Module, n_layer: int, rescale_prenorm_residual: bool = True,
                       n_residuals_per_layer: int = 1) -> None:
    """mamba_ssm's ``_init_weights``, applied with ``backbone.apply``.

    Zero Linear biases (except those marked ``_no_reinit``: dt_proj), and re-draw every
    ``out_proj.weight`` with PyTorch's default kaiming_uniform(a=sqrt(5)) scaled by
    1/sqrt(n_residuals_per_layer * n_layer) (GPT-2 rescale). mamba_ssm draws normal(0, 0.02)
    only for nn.Embedding, which this backbone has none of, so Linear weights keep PyTorch's init.
    """
    if isinstance(module, nn.Linear) and module.bias is not None:
        if not getattr(module.bias, "_no_reinit", False):
            nn.init.zeros_(module.bias)
    if rescale_prenorm_residual:
        for name, p in module.named_parameters():
            if name == "out_proj.weight":
                nn.init.kaiming_uniform_(p, a=math.sqrt(5))
                with torch.no_grad():
                    p /= math.sqrt(n_residuals_per_layer * n_layer)


class CaduceusBackbone(nn.Module):
    """Stack of ``n_layer`` bidirectional Mamba blocks plus a final RMSNorm; (B, L, d_model) -> (B, L, d_model)."""

    def __init__(
        self,
        d_model: int,
        n_layer: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        norm_eps: float = 1e-5,
        residual_in_fp32: bool = False,
        bidirectional: bool = True,
    ):
        super().__init__()
        self.d_model = d_model
        self.n_layer = n_layer
        # the authors train with residual_in_fp32: false, so under bf16 autocast the residual stream is bf16
        self.residual_in_fp32 = residual_in_fp32
        mamba_kwargs = dict(
            d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=dt_rank, dt_min=dt_min, dt_max=dt_max,
            dt_init=dt_init, dt_scale=dt_scale, dt_init_floor=dt_init_floor, conv_bias=conv_bias, bias=bias,
        )
        self.layers = nn.ModuleList(
            [Block(d_model, norm_eps=norm_eps, bidirectional=bidirectional, layer_idx=i, **mamba_kwargs)
             for i in range(n_layer)]
        )
        self.norm_f = RMSNorm(d_model, eps=norm_eps)
        self.apply(partial(init_mamba_weights, n_layer=n_layer))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """hidden_states: (B, L, d_model) -> (B, L, d_model) in the input's dtype."""
        residual = hidden_states  # (B, L, D)
        for layer in self.layers:
            if self.residual_in_fp32:
                residual = residual.float()
            residual = layer(residual)
        return self.norm_f(residual).to(hidden_states.dtype)
