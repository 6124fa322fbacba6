"""HyenaDNA (Nguyen et al., 2023) as Seq2Exp trains it: a sequence-only baseline of the paper's Table 1.

Facts followed (read, not copied): HazyResearch/hyena-dna ``standalone_hyenadna.py`` (Hyena operator, implicit
filter, block, backbone) and divelab/AIRS ``OpenBio/Seq2Exp``: ``src/models/sequence/hyena.py``,
``src/models/sequence/long_conv_lm.py``, ``GeneExpHyena`` in ``src/models/sequence/GeneExpformer.py``,
``configs/model/gene_express_hyena.yaml`` and ``baselines.sh``. Where the two differ, Seq2Exp's code is followed
because it produced the numbers: the decay window has no shift (standalone: 0.05), and for order > 2 the filter
channels split as ``(d o)`` (standalone: ``(o d)``; the same for the order 2 used).

The backbone is causal, as HyenaDNA's: the FFT long convolution and the short depthwise convolution only look
back, so hidden state t depends on bases 0..t alone. The head pools the central ``center_len`` positions.

Input: the one-hot sequence through ``Linear(4, d_model)`` (as Prism), not the reference's token embedding
``Embedding(12, d_model)`` over character ids. Over the five symbols that occur (A, C, G, T -> one-hot; N -> zeros)
both give five free vectors (N gets the bias), so the function class is the same; the Linear skips the 7 rows of
special tokens that a one-hot batch never uses (896 parameters fewer at d_model 128).
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from prism.model.readout import ExpressionHead, SequenceRegressor, centre_mean_pool, require_sequence_only

__all__ = [
    "DEFAULT_HP",
    "ExponentialModulation",
    "HyenaBackbone",
    "HyenaBlock",
    "HyenaDNA",
    "HyenaFilter",
    "HyenaOperator",
    "PositionalEmbedding",
    "build",
    "fft_long_conv",
]

#: Seq2Exp's settings (configs/model/gene_express_hyena.yaml with baselines.sh's n_layer=4); build() needs every key.
DEFAULT_HP = {
    "d_model": 128,
    "n_layer": 4,
    "d_inner": 512,  # MLP width, 4 * d_model
    "order": 2,  # depth of the Hyena recurrence (gates x_1 .. x_order)
    "filter_order": 64,  # width of the implicit filter's MLP
    "emb_dim": 5,  # positional features of the filter MLP: t plus (emb_dim - 1) / 2 complex exponentials
    "short_filter_order": 3,  # kernel of the short depthwise convolution
    "w": 10.0,  # initial frequency of the filter MLP's sine activations
    "modulate": True,  # multiply the filter by the exponential decay window
    "embed_dropout": 0.1,  # dropout on the input embedding
    "resid_dropout": 0.0,  # dropout on each mixer and MLP output
    "center_len": 2000,  # central positions mean-pooled before the head
}

#: Seq2Exp sets the filters' maximum length to the input length plus 2 (``l_max: seq_range + 2``); the
#: positional features (and so the filters) depend on it.
L_MAX_EXTRA = 2


def fft_long_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal long convolution y[..., t] = sum_{s <= t} k[..., s] * u[..., t - s], by FFT.

    u: (B, D, L); k: (D, L) -> (B, D, L). Zero-padding to 2 L turns the FFT's circular convolution into the
    linear one. Computed in float32 at least (FFTs in bf16 lose the filter's tail), returned in u's dtype.
    """
    L = u.shape[-1]
    dtype = torch.promote_types(u.dtype, torch.float32)
    n = 2 * L
    u_f = torch.fft.rfft(u.to(dtype), n=n)  # (B, D, L + 1) complex
    k_f = torch.fft.rfft(k.to(dtype), n=n)  # (D, L + 1) complex
    return torch.fft.irfft(u_f * k_f, n=n)[..., :L].to(u.dtype)


class Sin(nn.Module):
    """sin(freq * x) with a learnt frequency per feature: (..., dim) -> (..., dim)."""

    def __init__(self, dim: int, w: float = 10.0):
        super().__init__()
        self.freq = nn.Parameter(w * torch.ones(1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.freq * x)


class PositionalEmbedding(nn.Module):
    """Positional features z (1, l_max, emb_dim) of the filter MLP and the normalised time t (1, l_max, 1).

    z = [t, Re exp(-i f w), Im exp(-i f w)] with t = linspace(0, 1), w = 2 pi l / l_max and (emb_dim - 1) / 2
    frequencies f = linspace(1e-4, bands - 1). Fixed (Seq2Exp's ``lr_pos_emb: 0.0`` makes them buffers), and
    recomputed from l_max rather than stored in checkpoints.
    """

    def __init__(self, emb_dim: int, l_max: int):
        super().__init__()
        if emb_dim < 3 or emb_dim % 2 == 0:
            raise ValueError(f"emb_dim must be odd and >= 3 (time, cosine and sine), got {emb_dim}")
        bands = (emb_dim - 1) // 2
        t = torch.linspace(0, 1, l_max)[None, :, None]  # (1, L, 1)
        w = 2 * math.pi * torch.linspace(0, l_max - 1, l_max)[None, :, None] / l_max  # (1, L, 1)
        f = torch.linspace(1e-4, bands - 1, bands)[None, None]  # (1, 1, bands)
        z = torch.exp(-1j * f * w)  # (1, L, bands) complex
        self.register_buffer("z", torch.cat([t, z.real, z.imag], dim=-1), persistent=False)  # (1, L, emb_dim)
        self.register_buffer("t", t, persistent=False)

    def forward(self, L: int) -> tuple[torch.Tensor, torch.Tensor]:
        """-> z (1, L, emb_dim), t (1, L, 1): the first L positions."""
        return self.z[:, :L], self.t[:, :L]


class ExponentialModulation(nn.Module):
    """Decay window: h (1, L, D) * (exp(-t |delta_d|) + shift), one decay rate per channel.

    Rates run linearly from log(target) / slow_decay_pct to log(target) / fast_decay_pct (fixed: Seq2Exp's
    ``modulation_lr`` 0.0 makes them a buffer), so channel d has decayed to ``target`` at t = pct_d.
    """

    def __init__(self, d_model: int, fast_decay_pct: float = 0.3, slow_decay_pct: float = 1.5,
                 target: float = 1e-2, shift: float = 0.0):
        super().__init__()
        self.shift = shift
        max_decay, min_decay = math.log(target) / fast_decay_pct, math.log(target) / slow_decay_pct
        self.register_buffer("deltas", torch.linspace(min_decay, max_decay, d_model)[None, None], persistent=False)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """t (1, L, 1), h (1, L, D) -> (1, L, D)."""
        return h * (torch.exp(-t * self.deltas.abs()) + self.shift)


class HyenaFilter(nn.Module):
    """Implicit long filter: an MLP with sine activations over positional features, times a decay window.

    ``filter(L)`` gives h (1, L, d_model); ``bias`` (d_model,) is the skip term D of the long convolution
    y = h * u + D u. All of its parameters are kept out of weight decay (Seq2Exp: ``wd: 0.0``).
    """

    def __init__(self, d_model: int, l_max: int, emb_dim: int = 5, filter_order: int = 64,
                 num_inner_mlps: int = 2, w: float = 10.0, modulate: bool = True, **modulation):
        super().__init__()
        self.modulate = modulate
        self.bias = nn.Parameter(torch.randn(d_model))
        self.pos_emb = PositionalEmbedding(emb_dim, l_max)
        act = Sin(filter_order, w)  # one module at every activation: they share one frequency vector, as the reference
        layers = [nn.Linear(emb_dim, filter_order), act]
        for _ in range(num_inner_mlps):
            layers += [nn.Linear(filter_order, filter_order), act]
        layers.append(nn.Linear(filter_order, d_model, bias=False))
        self.implicit_filter = nn.Sequential(*layers)
        self.modulation = ExponentialModulation(d_model, **modulation)
        for p in self.parameters():
            p._no_weight_decay = True

    def filter(self, L: int) -> torch.Tensor:
        """-> h (1, L, d_model)."""
        z, t = self.pos_emb(L)
        h = self.implicit_filter(z)  # (1, L, D)
        return self.modulation(t, h) if self.modulate else h


class HyenaOperator(nn.Module):
    """Hyena mixer of order N: (B, L, D) -> (B, L, D).

    in_proj to N + 1 streams (x_1 .. x_N, v), a short causal depthwise convolution on each, then for
    i = N .. 2: v <- long_conv_i(v * x_i) (implicit filter i, FFT) and finally y = out_proj(v * x_1).
    """

    def __init__(self, d_model: int, l_max: int, order: int = 2, filter_order: int = 64,
                 short_filter_order: int = 3, dropout: float = 0.0, **filter_args):
        super().__init__()
        if order < 2:
            raise ValueError(f"Hyena order must be at least 2, got {order}")
        self.d_model, self.l_max, self.order = d_model, l_max, order
        width = d_model * (order + 1)
        self.in_proj = nn.Linear(d_model, width)
        self.out_proj = nn.Linear(d_model, d_model)
        # padding on both sides, then the first L outputs are kept: causal
        self.short_filter = nn.Conv1d(width, width, short_filter_order, groups=width, padding=short_filter_order - 1)
        self.filter_fn = HyenaFilter(d_model * (order - 1), l_max, filter_order=filter_order, **filter_args)
        self.dropout = nn.Dropout(dropout)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u: (B, L, D), L <= l_max -> (B, L, D)."""
        B, L, D = u.shape
        if L > self.l_max:
            raise ValueError(f"input of {L} positions is longer than the Hyena filters' l_max {self.l_max}")
        z = self.in_proj(u).transpose(1, 2)  # (B, (N+1) D, L)
        z = self.short_filter(z)[..., :L]  # (B, (N+1) D, L)
        *x, v = z.split(D, dim=1)  # N + 1 streams of (B, D, L)
        h = self.filter_fn.filter(L)[0]  # (L, D (N-1))
        h = h.view(L, D, self.order - 1).permute(2, 1, 0)  # (N-1, D, L): channels "(d o)" as Seq2Exp
        bias = self.filter_fn.bias.view(D, self.order - 1).t()  # (N-1, D)
        for o, x_i in enumerate(reversed(x[1:])):
            v = self.dropout(v * x_i)  # (B, D, L)
            v = fft_long_conv(v, h[o]) + v * bias[o, :, None].to(v.dtype)  # (B, D, L)
        y = (v * x[0]).transpose(1, 2)  # (B, L, D)
        return self.out_proj(y)


class Mlp(nn.Module):
    """fc1 - GELU (tanh approximation) - fc2: (B, L, D) -> (B, L, D)."""

    def __init__(self, d_model: int, d_inner: int):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_inner)
        self.fc2 = nn.Linear(d_inner, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class HyenaBlock(nn.Module):
    """Pre-norm residual block: x + mixer(LN(x)), then x + MLP(LN(x)); residual kept in fp32.

    The reference's flash-attention Block orders it dropout -> add -> LN (so it can fuse them); as a function
    of the input it is this standard pre-norm block with the same dropouts.
    """

    def __init__(self, d_model: int, d_inner: int, l_max: int, resid_dropout: float = 0.0,
                 layer_norm_epsilon: float = 1e-5, **operator_args):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_epsilon)
        self.mixer = HyenaOperator(d_model, l_max, **operator_args)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_epsilon)
        self.mlp = Mlp(d_model, d_inner)
        self.dropout = nn.Dropout(resid_dropout)

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        """residual: (B, L, D) fp32 (or fp64) -> (B, L, D) in the residual's dtype."""
        residual = residual + self.dropout(self.mixer(self.norm1(residual))).to(residual.dtype)
        return residual + self.dropout(self.mlp(self.norm2(residual))).to(residual.dtype)


def init_hyena_weights(module: nn.Module, n_layer: int, initializer_range: float = 0.02) -> None:
    """The reference's ``_init_weights`` (GPT-2 style), applied with ``backbone.apply``.

    Linear weights normal(0, 0.02) and biases zero (the implicit filter's layers included); ``out_proj`` and
    ``fc2`` weights re-drawn with std 0.02 / sqrt(2 n_layer) (two residual branches per block).
    """
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=initializer_range)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    for name, p in module.named_parameters():
        if name in ("out_proj.weight", "fc2.weight"):
            nn.init.normal_(p, std=initializer_range / math.sqrt(2 * n_layer))


class HyenaBackbone(nn.Module):
    """Embedding dropout, ``n_layer`` Hyena blocks and a final LayerNorm: (B, L, D) -> (B, L, D) fp32."""

    def __init__(self, d_model: int, n_layer: int, d_inner: int, l_max: int, embed_dropout: float = 0.1,
                 resid_dropout: float = 0.0, layer_norm_epsilon: float = 1e-5, initializer_range: float = 0.02,
                 **operator_args):
        super().__init__()
        self.embed_dropout = nn.Dropout(embed_dropout)
        self.layers = nn.ModuleList([
            HyenaBlock(d_model, d_inner, l_max, resid_dropout=resid_dropout, layer_norm_epsilon=layer_norm_epsilon,
                       **operator_args)
            for _ in range(n_layer)
        ])
        self.ln_f = nn.LayerNorm(d_model, eps=layer_norm_epsilon)
        self.apply(partial(init_hyena_weights, n_layer=n_layer, initializer_range=initializer_range))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """hidden_states: (B, L, D) embedded input -> (B, L, D) in fp32 at least (Seq2Exp: ``residual_in_fp32``)."""
        dtype = torch.promote_types(hidden_states.dtype, torch.float32)
        residual = self.embed_dropout(hidden_states).to(dtype)  # (B, L, D)
        for layer in self.layers:
            residual = layer(residual)
        return self.ln_f(residual)


class HyenaDNA(SequenceRegressor):
    """Sequence -> Linear(4, d) -> Hyena backbone -> centre mean pool + extra features -> head -> expression.

    Trained with smooth L1 on log10(CAGE + 1), as Seq2Exp's ``gene_pred`` task trains its baselines.
    """

    def __init__(self, hp: dict, length: int, n_features: int):
        super().__init__()
        d = hp["d_model"]
        self.center_len = hp["center_len"]
        self.l_max = length + L_MAX_EXTRA
        self.seq_emb = nn.Linear(4, d)
        init_hyena_weights(self.seq_emb, n_layer=hp["n_layer"])  # the reference's embedding sits inside its backbone
        self.backbone = HyenaBackbone(
            d, hp["n_layer"], hp["d_inner"], self.l_max, embed_dropout=hp["embed_dropout"],
            resid_dropout=hp["resid_dropout"], order=hp["order"], filter_order=hp["filter_order"],
            short_filter_order=hp["short_filter_order"], emb_dim=hp["emb_dim"], w=hp["w"], modulate=hp["modulate"],
        )
        self.head = ExpressionHead(d, d, n_features)

    def forward(self, seq: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """seq (B, L, 4) one-hot (N = zeros), L <= length + 2; features (B, n_features) -> pred (B,)."""
        hidden = self.backbone(self.seq_emb(seq))  # (B, L, D)
        pooled = centre_mean_pool(hidden, self.center_len)  # (B, D)
        pred = self.head(torch.cat([pooled.to(features.dtype), features], dim=-1)).squeeze(-1)  # (B,)
        return pred.float()  # fp32 under autocast too, as the reference's logits.float()


def build(hp: dict, spec, n_features: int) -> HyenaDNA:
    """HyenaDNA for inputs of ``spec.length`` bp; hp has exactly the keys of DEFAULT_HP; spec.signals must be empty."""
    missing, unknown = set(DEFAULT_HP) - set(hp), set(hp) - set(DEFAULT_HP)
    if missing or unknown:
        raise ValueError(f"hyena hp: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}")
    require_sequence_only(spec, "hyena")
    return HyenaDNA(hp, int(spec.length), n_features)
