"""Mamba mixer with mamba_ssm's ``Mamba`` (mamba_simple.py) parameter names, shapes and init.

One module, two backends chosen at run time: mamba_ssm's fused ``selective_scan_fn`` and
causal_conv1d's ``causal_conv1d_fn`` on CUDA when they import, else the pure-PyTorch path
(:func:`prism.model.scan.selective_scan` and an ``nn.Conv1d``). A state_dict loads on both.
Set ``PRISM_FORCE_TORCH_SCAN=1`` to force the PyTorch path on CUDA as well.
"""

from __future__ import annotations

import functools
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from prism.model.scan import selective_scan

__all__ = ["Mamba", "fast_kernels"]


@functools.lru_cache(maxsize=1)
def fast_kernels():
    """(selective_scan_fn, causal_conv1d_fn) when mamba_ssm and causal_conv1d import, else None."""
    try:
        from causal_conv1d import causal_conv1d_fn
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # ImportError, or a CUDA extension that fails to load
        return None
    return selective_scan_fn, causal_conv1d_fn


def _use_fast_path(x: torch.Tensor):
    if not x.is_cuda or os.environ.get("PRISM_FORCE_TORCH_SCAN") == "1":
        return None
    return fast_kernels()


class Mamba(nn.Module):
    """Selective SSM mixer: (B, L, d_model) -> (B, L, d_model)."""

    def __init__(
        self,
        d_model: int,
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
        layer_idx: int | None = None,
    ):
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.layer_idx = layer_idx

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv1d = nn.Conv1d(
            self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner, padding=d_conv - 1, bias=conv_bias
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)

        # dt_proj weight: keeps the variance of dt at initialisation independent of dt_rank
        dt_init_std = self.dt_rank**-0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, dt_init_std)
        elif dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
        else:
            raise ValueError(f"dt_init must be 'constant' or 'random', got {dt_init!r}")
        # dt_proj bias: softplus(bias) is log-uniform in [dt_min, dt_max], floored at dt_init_floor
        dt = torch.exp(
            torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        ).clamp(min=dt_init_floor)
        inv_dt = dt + torch.log(-torch.expm1(-dt))  # inverse of softplus
        with torch.no_grad():
            self.dt_proj.bias.copy_(inv_dt)
        self.dt_proj.bias._no_reinit = True  # the backbone's init must leave this bias alone

        # S4D-real initialisation: A = -(1, 2, ..., d_state) for every channel
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)  # (D, N)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.D._no_weight_decay = True

        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """hidden_states: (B, L, d_model) -> (B, L, d_model)."""
        batch, seqlen, _ = hidden_states.shape
        kernels = _use_fast_path(hidden_states)

        xz = self.in_proj(hidden_states).transpose(1, 2)  # (B, 2 * d_inner, L)
        x, z = xz.chunk(2, dim=1)  # (B, d_inner, L) each
        # SSM parameters in fp32 (as mamba_ssm), or fp64 when the model runs in fp64 (gradient checks)
        pdt = torch.float64 if self.A_log.dtype == torch.float64 else torch.float32
        A = -torch.exp(self.A_log.to(pdt))  # (d_inner, d_state)

        if kernels is not None:
            selective_scan_fn, causal_conv1d_fn = kernels
            x = causal_conv1d_fn(
                x=x.contiguous(),
                weight=self.conv1d.weight.squeeze(1),  # (d_inner, d_conv)
                bias=self.conv1d.bias,
                activation="silu",
            )  # (B, d_inner, L)
        else:
            x = F.silu(self.conv1d(x)[..., :seqlen])  # causal: drop the right padding, (B, d_inner, L)

        x_dbl = self.x_proj(x.transpose(1, 2))  # (B, L, dt_rank + 2 * d_state)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight).transpose(1, 2)  # bias goes in the scan, (B, d_inner, L)
        B = B.transpose(1, 2).contiguous()  # (B, d_state, L)
        C = C.transpose(1, 2).contiguous()  # (B, d_state, L)

        scan = kernels[0] if kernels is not None else selective_scan
        y = scan(
            x.contiguous(),
            dt.contiguous(),
            A,
            B,
            C,
            self.D.to(pdt),
            z=z.contiguous(),
            delta_bias=self.dt_proj.bias.to(pdt),
            delta_softplus=True,
        )  # (B, d_inner, L)
        return self.out_proj(y.transpose(1, 2))  # (B, L, d_model)
