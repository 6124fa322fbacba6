"""Prism: Caduceus with epigenomic signals plus a confounder encoder and backdoor-adjusted prediction.

Facts followed: shared/design/MODEL.md (the public Prism code) and the paper's Appendix F.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from prism.model.caduceus import CaduceusBackbone, RMSNorm

__all__ = [
    "ModelConfig",
    "PrismModel",
    "ConfounderEncoder",
    "adamw_param_groups",
    "centre_pool",
    "count_parameters",
    "expression_head",
    "uniform_loss",
]


@dataclass
class ModelConfig:
    """Model hyper-parameters; defaults are the paper's (Table 9, Appendix F)."""

    d_model: int = 128
    n_layer: int = 4
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    n_signals: int = 3  # H3K27ac, DNase, Hi-C
    n_features: int = 9  # extra gene features concatenated before the head (mRNA half-life, promoter activity, ...)
    K: int = 2  # number of background chromatin states (confounder strata)
    confounder_width: int = 8  # base width of the confounder encoder's CNN
    weight_activation: str = "sigmoid"  # or "softmax" over the K states
    center_len: int = 2000  # positions kept (centred) before mean pooling
    lambda1: float = 1.0  # weight of the intervention loss
    lambda2: float = 1.0  # weight of the uniform (diversity) loss
    uniform_t: float = 2.0  # temperature t of the uniform loss

    def to_dict(self) -> dict:
        return asdict(self)


class ConfounderEncoder(nn.Module):
    """1D-CNN from raw signals (B, n_signals, L) to K weight vectors (B, d_model, K) in (0, 1)."""

    def __init__(self, n_signals: int, d_model: int, K: int, width: int = 8, activation: str = "sigmoid"):
        super().__init__()
        if activation not in ("sigmoid", "softmax"):
            raise ValueError(f"weight_activation must be 'sigmoid' or 'softmax', got {activation!r}")
        self.d_model, self.K, self.activation = d_model, K, activation
        w = width
        self.cnn = nn.Sequential(
            nn.Conv1d(n_signals, w, kernel_size=7, padding=3), nn.BatchNorm1d(w), nn.ReLU(), nn.MaxPool1d(4),
            nn.Conv1d(w, 2 * w, kernel_size=5, padding=2), nn.BatchNorm1d(2 * w), nn.ReLU(), nn.MaxPool1d(4),
            nn.Conv1d(2 * w, 4 * w, kernel_size=3, padding=1), nn.BatchNorm1d(4 * w), nn.ReLU(), nn.MaxPool1d(4),
            nn.AdaptiveAvgPool1d(1),
            nn.Flatten(),
        )
        self.proj = nn.Linear(4 * w, d_model * K)

    def forward(self, signals: torch.Tensor) -> torch.Tensor:
        """signals: (B, n_signals, L), L >= 64 -> weights (B, d_model, K)."""
        raw = self.proj(self.cnn(signals)).view(-1, self.d_model, self.K)  # (B, d_model, K)
        return torch.sigmoid(raw) if self.activation == "sigmoid" else torch.softmax(raw, dim=-1)


def uniform_loss(weights: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Uniformity of the K weight vectors (Wang and Isola, 2020): weights (B, d_model, K) -> scalar.

    Each vector is L2-normalised over d_model; per sample log(sum_ij exp(2 t G_ij - 2 t)) over the
    K x K Gram matrix G, diagonal included (as the reference code); mean over the batch.
    """
    w = F.normalize(weights, p=2, dim=1, eps=1e-8)  # (B, d_model, K)
    gram = w.transpose(1, 2) @ w  # (B, K, K)
    return torch.logsumexp((2 * t * gram - 2 * t).flatten(1), dim=1).mean()


def expression_head(d_model: int, n_features: int) -> nn.Sequential:
    """The expression head shared by Prism and the baselines built on it: (N, d_model + n_features) -> (N, 1).

    Linear(d + n_features, d) - ReLU - Linear(d, d) - ReLU - Linear(d, 1), the reference's ``pToExpr``.
    """
    return nn.Sequential(
        nn.Linear(d_model + n_features, d_model), nn.ReLU(),
        nn.Linear(d_model, d_model), nn.ReLU(),
        nn.Linear(d_model, 1),
    )


def centre_pool(hidden: torch.Tensor, center_len: int) -> torch.Tensor:
    """Mean over the central ``center_len`` positions (all when L <= center_len): (N, L, D) -> (N, D)."""
    L = hidden.shape[1]
    if L > center_len:
        start = (L - center_len) // 2
        hidden = hidden[:, start : start + center_len]  # (N, center_len, D)
    return hidden.mean(dim=1)


def adamw_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decay for weights, none for biases, norm weights (RMSNorm, BatchNorm), A_log and D."""
    no_decay_ids = set()
    for module in model.modules():
        is_norm = isinstance(module, (RMSNorm, nn.LayerNorm, nn.modules.batchnorm._BatchNorm))
        for name, p in module.named_parameters(recurse=False):
            if is_norm or name.endswith("bias") or getattr(p, "_no_weight_decay", False):
                no_decay_ids.add(id(p))
    decay, no_decay = [], []
    for p in model.parameters():  # deduplicated: tied weights appear once
        if p.requires_grad:
            (no_decay if id(p) in no_decay_ids else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class PrismModel(nn.Module):
    """Prism (K > 0 and lambda1 != 0) or Caduceus with signals (otherwise; no confounder encoder at all)."""

    def __init__(self, config: ModelConfig | None = None, **overrides):
        super().__init__()
        config = config or ModelConfig()
        if overrides:
            config = ModelConfig(**{**asdict(config), **overrides})
        self.config = c = config
        self.seq_emb = nn.Linear(4, c.d_model)
        self.sig_emb = nn.Linear(c.n_signals, c.d_model) if c.n_signals > 0 else None
        self.confounder_encoder = (
            ConfounderEncoder(c.n_signals, c.d_model, c.K, c.confounder_width, c.weight_activation)
            if self.uses_confounder
            else None
        )
        self.backbone = CaduceusBackbone(c.d_model, c.n_layer, d_state=c.d_state, d_conv=c.d_conv, expand=c.expand)
        self.head = expression_head(c.d_model, c.n_features)

    @property
    def uses_confounder(self) -> bool:
        """True for Prism proper; a model with no signals has nothing to stratify, so it is never Prism."""
        c = self.config
        return c.K > 0 and c.lambda1 != 0 and c.n_signals > 0

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """Mean over the central ``center_len`` positions (all when L <= center_len): (N, L, D) -> (N, D)."""
        return centre_pool(hidden, self.config.center_len)

    def forward(
        self,
        seq: torch.Tensor,
        signals: torch.Tensor | None,
        features: torch.Tensor,
        signal_weights: torch.Tensor | None = None,
        intervention: bool = True,
    ) -> dict:
        """seq (B, L, 4) one-hot float; signals (B, n_signals, L); features (B, n_features).

        signal_weights (B, n_signals) or broadcastable: scales the raw signals first (0 drops a signal).
        intervention=False skips the K weighted copies: ``pred`` is unchanged (copy 0 alone makes it),
        so validation and testing run one backbone pass instead of K + 1.
        Returns ``pred`` (B,), ``pred_intervention`` (B,) or None, ``weights`` (B, d_model, K) or None.
        """
        batch = seq.shape[0]
        x = self.seq_emb(seq)  # (B, L, D)
        weights = None
        if self.sig_emb is not None:
            if signal_weights is not None:
                signals = signals * torch.as_tensor(signal_weights, dtype=signals.dtype, device=signals.device)[..., None]
            s = self.sig_emb(signals.transpose(1, 2))  # (B, L, D)
            if self.uses_confounder:
                weights = self.confounder_encoder(signals)  # (B, D, K)
            if weights is not None and intervention:
                w = weights.permute(2, 0, 1)[:, :, None, :]  # (K, B, 1, D)
                copies = torch.cat([(x + s)[None], x[None] + s[None] * w], dim=0)  # (K+1, B, L, D)
                x = copies.flatten(0, 1)  # ((K+1) * B, L, D), copy-major
            else:
                x = x + s  # (B, L, D)

        hidden = self.backbone(x)  # ((K+1) * B, L, D) or (B, L, D)
        pred_intervention = None
        if weights is not None and intervention:
            hidden = hidden.view(-1, batch, *hidden.shape[1:])  # (K+1, B, L, D)
            h_int = hidden[1:].mean(dim=0)  # (B, L, D): representation averaged over the K states
            pred_intervention = self.head(torch.cat([self.pool(h_int), features], dim=-1)).squeeze(-1)
            hidden = hidden[0]  # (B, L, D)
        pred = self.head(torch.cat([self.pool(hidden), features], dim=-1)).squeeze(-1)  # (B,)
        return {"pred": pred, "pred_intervention": pred_intervention, "weights": weights}

    def loss(self, out: dict, y: torch.Tensor) -> dict:
        """Loss = smooth_l1(pred, y) + lambda1 * smooth_l1(pred_intervention, y) + lambda2 * uniform_loss."""
        c = self.config
        pred_loss = F.smooth_l1_loss(out["pred"], y)
        zero = pred_loss.new_zeros(())
        if out.get("pred_intervention") is not None:
            intervention = F.smooth_l1_loss(out["pred_intervention"], y)
            uniform = uniform_loss(out["weights"], c.uniform_t)
        else:
            intervention, uniform = zero, zero
        total = pred_loss + c.lambda1 * intervention + c.lambda2 * uniform
        return {"loss": total, "pred_loss": pred_loss, "intervention_loss": intervention, "uniform_loss": uniform}

    def param_groups(self, weight_decay: float) -> list[dict]:
        """Two AdamW groups: decay for weights, none for biases, norm weights (RMSNorm, BatchNorm), A_log and D."""
        return adamw_param_groups(self, weight_decay)


def count_parameters(model: nn.Module, component: str | None = None) -> int:
    """Trainable parameters of ``model`` (or of its submodule named ``component``), tied weights once."""
    module = model if component is None else model.get_submodule(component)
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
