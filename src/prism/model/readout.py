"""What the architectures share after their backbone: centre pooling, the expression head, AdamW groups.

Prism, Caduceus w/ signals and Seq2Exp's sequence baselines (HyenaDNA, Mamba, Caduceus, Enformer) all end
the same way in the reference code (GeneExpformer.py, Enformer.py of divelab/AIRS OpenBio/Seq2Exp): mean of
the backbone's hidden states (HyenaDNA/Mamba/Caduceus: over the central ``center_len`` positions), the 9
extra gene features concatenated, then ``Linear(d_in + 9, d) - ReLU - Linear(d, d) - ReLU - Linear(d, 1)``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from prism.model.caduceus import RMSNorm

__all__ = ["ExpressionHead", "SequenceRegressor", "adamw_param_groups", "centre_mean_pool", "require_sequence_only"]


def centre_mean_pool(hidden: torch.Tensor, center_len: int) -> torch.Tensor:
    """Mean over the central ``center_len`` positions (all of them when L <= center_len): (N, L, D) -> (N, D).

    The window starts at (L - center_len) // 2, as the reference code slices it.
    """
    L = hidden.shape[1]
    if L > center_len:
        start = (L - center_len) // 2
        hidden = hidden[:, start : start + center_len]  # (N, center_len, D)
    return hidden.mean(dim=1)


class ExpressionHead(nn.Sequential):
    """Pooled representation (N, d_in) with the extra features (N, n_features) -> (N, 1).

    Submodules are numbered as the reference's ``pToExpr`` Sequential (0, 2, 4 are the Linear layers),
    so a checkpoint's ``head.*`` keys map one to one.
    """

    def __init__(self, d_in: int, d_model: int, n_features: int):
        super().__init__(
            nn.Linear(d_in + n_features, d_model), nn.ReLU(),
            nn.Linear(d_model, d_model), nn.ReLU(),
            nn.Linear(d_model, 1),
        )


def adamw_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: ``weight_decay`` for weights; none for biases, norm weights (RMSNorm, LayerNorm,
    BatchNorm) and parameters marked ``_no_weight_decay`` (Mamba's A_log and D, Hyena's implicit filter).

    Frozen parameters (requires_grad False) are left out; tied weights appear once.
    """
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


def require_sequence_only(spec, arch: str) -> None:
    """ValueError unless ``spec`` lists no signals: ``arch`` reads the DNA sequence alone (as in Seq2Exp)."""
    if tuple(spec.signals):
        raise ValueError(f"{arch} is a sequence-only model (as Seq2Exp trains it); signals must be empty, "
                         f"got {list(spec.signals)}")


class SequenceRegressor(nn.Module):
    """The model contract for Seq2Exp's sequence-only baselines (HyenaDNA, Enformer): ``forward(seq,
    features)`` gives (B,) predictions; training and evaluation are the same function (dropout and BatchNorm
    follow ``self.training``, as Lightning sets it), and the loss is Seq2Exp's gene_pred task's."""

    def forward_batch(self, batch, mode: str = "eval") -> dict:
        """batch: prism.data.Batch (reads seq and features) -> {"pred": (B,)}."""
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        return {"pred": self(batch.seq, batch.features)}

    def loss(self, out: dict, target: torch.Tensor) -> dict:
        """Smooth L1 (Huber, beta 1) of pred against target (B,) log10(CAGE + 1)."""
        pred_loss = F.smooth_l1_loss(out["pred"].float(), target.float())
        return {"loss": pred_loss, "pred_loss": pred_loss}

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups (:func:`adamw_param_groups`): no decay on biases, norms and ``_no_weight_decay``
        parameters (Hyena's implicit filters: Seq2Exp's ``wd: 0.0``); frozen parameters left out."""
        return adamw_param_groups(self, weight_decay)
