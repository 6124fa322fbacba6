"""What the architectures share after their backbone: centre pooling, the expression head, AdamW groups.

Prism, Caduceus w/ signals and Seq2Exp's sequence baselines (HyenaDNA, Mamba, Caduceus, Enformer) all end
the same way in the reference code (GeneExpformer.py, Enformer.py of divelab/AIRS OpenBio/Seq2Exp): mean of
the backbone's hidden states (HyenaDNA/Mamba/Caduceus: over the central ``center_len`` positions), the 9
extra gene features concatenated, then ``Linear(d_in + 9, d) - ReLU - Linear(d, d) - ReLU - Linear(d, 1)``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from prism.model.caduceus import RMSNorm

__all__ = ["ExpressionHead", "adamw_param_groups", "centre_mean_pool", "require_sequence_only"]


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
