"""EPInformer (Lin et al., 2024): promoter-enhancer sequences, their features and attention between them.

Facts followed: ``EPInformer_v2`` of pinellolab/EPInformer ``EPInformer/models.py``, the same class that
Seq2Exp runs as its baseline (divelab/AIRS ``OpenBio/Seq2Exp/src/models/sequence/EPInformer.py``, with
``configs/model/CAGE_promo_enhan.yaml`` and ``configs/experiment/hg38/CAGE_pred_promo_enhan_inter.yaml``:
``out_dim 64, n_encoder 3, head 4, n_enhancers 60, n_extraFeat 3, useBN, useLN, useFeat,
usePromoterSignal``, no pre-trained encoder). That is EPInformer-PE-Activity-HiC.

Per gene, E = 1 + n_elements elements (slot 0 the promoter, then candidate enhancers; see
:mod:`prism.candidates`), each a one-hot window of ``element_length`` (2 kb) bases:

1. ``seq_encoder``, one CNN shared by all elements: Conv(4 -> 256, k 8, "same") - ELU, then four blocks
   [Conv(k 3, pad 1) - BatchNorm - ELU - MaxPool(2)] each followed by a residual [Conv(k 1) - ELU],
   widths 256 -> 128 -> 64 -> 64 -> 128: (B, 128, E, L / 16);
2. ``seq_projector``: dilated Convs (k 3, dilation 2, 4, 6; 128 -> 64 -> 64 -> 64) and a Conv(k 1,
   64 -> 32), each with BatchNorm - ELU, then Linear over positions (L / 16 - 24 -> d_model / 32) - ELU,
   flattened to one d_model vector per element: (B, E, d_model);
3. ``feature_fusion``: the element's extra features (distance in kb, log10(1 + Hi-C contact),
   activity) concatenated, then Conv(k 1, d_model + n_extra -> d_model) - ReLU - Conv(k 1) - ReLU;
4. ``interaction_encoder``: n_layer pre-norm attention layers (LayerNorm - multi-head self-attention -
   residual, LayerNorm - FF(d -> 4d -> d, ReLU) - residual; no dropout). The attention mask lets
   the promoter attend to every element and each enhancer only to itself and the promoter;
   padding slots are masked as keys;
5. ``head`` on the promoter's vector concatenated with the 9 per-gene features (8 mRNA half-life
   features and the promoter activity, :data:`prism.genes.FEATURES`): Linear(d + 9 -> 128) - ReLU -
   Linear(128 -> 128) - ReLU - Linear(128 -> 1).

The convolutions are 2-D with (1, k) kernels over (element, position), as in the reference, so its
state dicts load by renaming prefixes (:data:`REFERENCE_PREFIXES`); their BatchNorm statistics pool
over all E slots, padding included, as the reference's do.

Batch extras read (built by :class:`prism.candidates.ElementBatcher`): ``elements_seq`` (B, E, L, 4)
float one-hot, ``elements_feat`` (B, E, 3) float (distance_kb, hic, activity), ``elements_mask``
(B, E) bool (True = a real element). ``batch.seq`` and ``batch.signals`` are not read: the promoter
is slot 0 of ``elements_seq`` and the signals enter through the element features.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["EPInformer", "build", "DEFAULTS", "REFERENCE_PREFIXES", "EXTRA_FEATURE_COLUMNS"]

#: the paper's (and Seq2Exp's) settings; the config holds these
DEFAULTS = {
    "n_elements": 60,  # candidate enhancers per gene (n_enhancers)
    "element_length": 2000,  # bp per element window
    "d_model": 64,  # out_dim
    "n_layer": 3,  # n_encoder: interaction (attention) layers
    "n_head": 4,  # head
    "n_extra_features": 3,  # n_extraFeat: 1 distance, 2 + activity, 3 + Hi-C (EPInformer-PE / -Activity / -Activity-HiC)
}
#: columns of elements_feat (distance_kb, hic, activity) each variant reads, in EPInformer's order
EXTRA_FEATURE_COLUMNS = {1: [0], 2: [0, 2], 3: [0, 1, 2]}
#: the reference's module prefixes -> ours (pinellolab/EPInformer EPInformer_v2)
REFERENCE_PREFIXES = {
    "seq_encoder.stem_conv.": "seq_encoder.stem.",
    "seq_encoder.conv_tower.": "seq_encoder.tower.",
    "conv_out.": "seq_projector.",
    "add_pos_conv.": "feature_fusion.",
    "attn_encoder.": "interaction_encoder.",
    "pToExpr.": "head.",
}
_TOWER_WIDTHS = (256, 128, 64, 64, 128)


class SamePadConv2d(nn.Conv2d):
    """Conv2d with (1, k) kernel and PyTorch's padding="same" (left (k-1)//2, right k//2), padded explicitly:
    the same numbers without torch's per-call warning for even kernels."""

    def forward(self, x):
        k = self.kernel_size[1]
        return super().forward(F.pad(x, ((k - 1) // 2, k // 2, 0, 0)))


class SequenceEncoder(nn.Module):
    """CNN over every element's one-hot: (B, E, L, 4) -> (B, 128, E, L // 16)."""

    def __init__(self):
        super().__init__()
        w = _TOWER_WIDTHS
        self.stem = nn.Sequential(SamePadConv2d(4, w[0], kernel_size=(1, 8)), nn.ELU())
        layers = []
        for i in range(4):
            layers.append(nn.Sequential(
                nn.Conv2d(w[i], w[i + 1], kernel_size=(1, 3), padding=(0, 1)), nn.BatchNorm2d(w[i + 1]), nn.ELU(),
                nn.MaxPool2d(kernel_size=(1, 2), stride=(1, 2)),
            ))
            layers.append(nn.Sequential(nn.Conv2d(w[i + 1], w[i + 1], kernel_size=(1, 1)), nn.ELU()))
        self.tower = nn.ModuleList(layers)  # (downsampling block, residual 1x1 block) x 4

    def forward(self, one_hot: torch.Tensor) -> torch.Tensor:
        # contiguous NCHW: on channels-last input, CPU BatchNorm's batch variance is off by ~1e-2 here
        x = self.stem(one_hot.permute(0, 3, 1, 2).contiguous())  # (B, 4, E, L) -> (B, 256, E, L)
        for i in range(0, len(self.tower), 2):
            x = self.tower[i](x)  # (B, C, E, L / 2^k)
            x = self.tower[i + 1](x) + x
        return x  # (B, 128, E, L / 16)


class InteractionLayer(nn.Module):
    """Pre-norm self-attention and feed-forward over the elements of each gene: (B, E, d) -> (B, E, d)."""

    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, n_head, dropout=0.0, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.ReLU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x, key_padding_mask, attn_mask):
        h = self.norm1(x)
        h, weights = self.self_attn(h, h, h, key_padding_mask=key_padding_mask, attn_mask=attn_mask)
        x = x + h
        return x + self.ff(self.norm2(x)), weights  # weights (B, E, E), averaged over heads


def promoter_star_mask(n: int, device=None) -> torch.Tensor:
    """(n, n) bool attention mask, True = blocked: element i > 0 sees only itself and the promoter (0)."""
    blocked = ~torch.eye(n, dtype=torch.bool, device=device)
    blocked[0, :] = False
    blocked[:, 0] = False
    return blocked


class EPInformer(nn.Module):
    """EPInformer_v2 as Seq2Exp runs it (module docstring); hyper-parameters as :data:`DEFAULTS`."""

    def __init__(self, n_elements: int = 60, element_length: int = 2000, d_model: int = 64, n_layer: int = 3,
                 n_head: int = 4, n_extra_features: int = 3, n_features: int = 9):
        super().__init__()
        if n_extra_features not in EXTRA_FEATURE_COLUMNS:
            raise ValueError(f"epinformer: n_extra_features must be 1, 2 or 3, got {n_extra_features}")
        if d_model % 32 or d_model % n_head:
            raise ValueError(f"epinformer: d_model {d_model} must be a multiple of 32 and of n_head {n_head}")
        positions = element_length // 16 - 2 * (2 + 4 + 6)  # after 4 poolings and the dilated k-3 convs
        if element_length % 16 or positions < 1:
            raise ValueError(f"epinformer: element_length {element_length} must be a multiple of 16 and >= 400")
        self.n_elements, self.element_length, self.d_model = n_elements, element_length, d_model
        self.n_extra_features, self.n_features = n_extra_features, n_features
        self.seq_encoder = SequenceEncoder()
        self.seq_projector = nn.Sequential(
            nn.Conv2d(128, 64, kernel_size=(1, 3), dilation=(1, 2)), nn.BatchNorm2d(64), nn.ELU(),
            nn.Conv2d(64, 64, kernel_size=(1, 3), dilation=(1, 4)), nn.BatchNorm2d(64), nn.ELU(),
            nn.Conv2d(64, 64, kernel_size=(1, 3), dilation=(1, 6)), nn.BatchNorm2d(64), nn.ELU(),
            nn.Conv2d(64, 32, kernel_size=(1, 1)), nn.BatchNorm2d(32), nn.ELU(),
            nn.Linear(positions, d_model // 32), nn.ELU(),
        )
        self.feature_fusion = nn.Sequential(
            nn.Conv1d(d_model + n_extra_features, d_model, kernel_size=1), nn.ReLU(),
            nn.Conv1d(d_model, d_model, kernel_size=1), nn.ReLU(),
        )
        self.interaction_encoder = nn.ModuleList(InteractionLayer(d_model, n_head) for _ in range(n_layer))
        self.head = nn.Sequential(
            nn.Linear(d_model + n_features, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 1),
        )
        self.register_buffer("_feature_columns", torch.tensor(EXTRA_FEATURE_COLUMNS[n_extra_features]), persistent=False)

    def forward(self, elements_seq, elements_feat, elements_mask, features) -> dict:
        """elements_seq (B, E, L, 4), elements_feat (B, E, 3), elements_mask (B, E) bool, features (B, n_features).

        Returns ``pred`` (B,) and ``attention`` (n_layer, B, E, E) (weights averaged over heads).
        """
        B, E = elements_seq.shape[:2]
        x = self.seq_projector(self.seq_encoder(elements_seq))  # (B, 32, E, d / 32)
        x = x.permute(0, 2, 1, 3).flatten(2)  # (B, E, d)
        extra = elements_feat.index_select(-1, self._feature_columns).to(x.dtype)  # (B, E, n_extra)
        x = self.feature_fusion(torch.cat([x, extra], dim=-1).transpose(1, 2)).transpose(1, 2)  # (B, E, d)
        key_padding = ~elements_mask.bool()  # (B, E) True = padding
        star = promoter_star_mask(E, x.device)
        attention = []
        for layer in self.interaction_encoder:
            x, w = layer(x, key_padding, star)
            attention.append(w)
        h = torch.cat([x[:, 0], features.to(x.dtype)], dim=-1) if self.n_features else x[:, 0]  # (B, d + 9)
        return {"pred": self.head(h).squeeze(-1), "attention": torch.stack(attention)}

    def forward_batch(self, batch, mode: str = "eval") -> dict:
        """prism.data.Batch -> {"pred": (B,), "attention"}; deterministic in both modes (no dropout)."""
        try:
            seq, feat, mask = (batch.extra[k] for k in ("elements_seq", "elements_feat", "elements_mask"))
        except KeyError as exc:
            raise ValueError(f"epinformer: the batch lacks extra[{exc.args[0]!r}] (prism.candidates.ElementBatcher)") from None
        if seq.shape[1] != 1 + self.n_elements or seq.shape[2] != self.element_length:
            raise ValueError(f"epinformer: elements_seq is {tuple(seq.shape)}, the model takes "
                             f"(B, {1 + self.n_elements}, {self.element_length}, 4)")
        return self(seq, feat, mask, batch.features)

    def loss(self, out: dict, target: torch.Tensor) -> dict:
        """Smooth L1 (Huber, beta 1) between pred and log10(CAGE + 1), as EPInformer and Seq2Exp train it."""
        pred_loss = F.smooth_l1_loss(out["pred"].float(), target.float())
        return {"loss": pred_loss, "pred_loss": pred_loss}

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups as Seq2Exp's add_optimizer_hooks: no decay on biases, BatchNorm and LayerNorm."""
        no_decay = set()
        for module in self.modules():
            is_norm = isinstance(module, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm))
            for name, p in module.named_parameters(recurse=False):
                if is_norm or name.endswith("bias"):
                    no_decay.add(id(p))
        params = [p for p in self.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if id(p) not in no_decay], "weight_decay": weight_decay},
            {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0},
        ]


def build(hp: dict, spec, n_features: int) -> EPInformer:
    """EPInformer from its config hyper-parameters (keys of :data:`DEFAULTS`), a ModelSpec and 9 features.

    spec.length, spec.signals and spec.retention are not used: the element windows and features come
    from the batch extras (module docstring).
    """
    unknown = set(hp) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"epinformer: unknown hyper-parameter {sorted(unknown)[0]!r} (known: {', '.join(DEFAULTS)})")
    return EPInformer(**{**DEFAULTS, **hp}, n_features=n_features)


def load_reference_state_dict(model: EPInformer, state_dict: dict) -> None:
    """Load a state dict of the reference EPInformer_v2 (e.g. its released checkpoints' model_state_dict)."""
    renamed = {}
    for key, value in state_dict.items():
        for old, new in REFERENCE_PREFIXES.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        renamed[key] = value
    model.load_state_dict(renamed)
