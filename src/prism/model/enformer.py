"""Enformer (Avsec et al., 2021) as Seq2Exp trains it, a sequence-only baseline of the paper's Table 1 (and,
with the official weights, of Table 10). The network is lucidrains' ``enformer-pytorch`` package.

Facts followed (read, not copied): divelab/AIRS ``OpenBio/Seq2Exp``: ``src/models/sequence/Enformer.py``
(GeneEnformer), ``configs/model/Enformer.yaml`` and ``baselines.sh``. What the wrapper does:
- the input window (200,000 bp around the TSS) is cropped to its central ``window`` = 196,608 bp, Enformer's own
  length (start (L - window) // 2, so the TSS stays in the middle);
- the trunk (stem, conv tower: 128-fold downsampling to 1536 bins, transformer, crop to the central
  ``target_length`` = 896 bins, pointwise conv to 2 * dim) gives embeddings (B, 896, 3072); their mean over the bins,
  with the 9 extra features concatenated, goes through ``Linear(3072 + 9, 128) - ReLU - Linear(128, 128) - ReLU -
  Linear(128, 1)``;
- hyper-parameters are enformer-pytorch's defaults (``Enformer.from_hparams()``), trained from scratch
  (``use_pretrain=False``) with smooth L1 on log10(CAGE + 1).

Differences, all outside what Seq2Exp ran: Seq2Exp's Enformer also computes the human (5313) and mouse (1643)
track heads and never reads them; here they are not built (they would get no gradient: 21,375,788 dead parameters).
Inputs shorter than ``window`` are used whole (Seq2Exp's slice would start below zero). Lengths that are not multiples
of 128 work because enformer-pytorch's attention pooling pads an odd length by one masked position, so the trunk has
``enformer_bins(L)`` = ceil at each halving; its crop keeps ``target_length`` bins, or one fewer when the number of
bins minus ``target_length`` is odd (``cropped_bins``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
from enformer_pytorch import Enformer
from enformer_pytorch.modeling_enformer import Attention, exponential_linspace_int

from prism.genes import DataError
from prism.model.readout import ExpressionHead, SequenceRegressor, require_sequence_only

__all__ = [
    "DEFAULT_HP",
    "EnformerRegressor",
    "PRETRAINED",
    "build",
    "cropped_bins",
    "enformer_bins",
    "load_pretrained",
]

#: Seq2Exp's settings: enformer-pytorch's defaults (dim 1536, depth 11, ...) plus its wrapper's window and head.
#: build() needs every key.
DEFAULT_HP = {
    "dim": 1536,  # transformer width; the conv tower grows from dim / 2 to dim
    "depth": 11,  # transformer layers
    "heads": 8,  # attention heads; dim / heads must be a multiple of 6 (relative position features)
    "attn_dim_key": 64,  # key/query width per head
    "dropout_rate": 0.4,  # dropout in the transformer (and / 8 after the final pointwise conv)
    "attn_dropout": 0.05,  # dropout on attention weights
    "pos_dropout": 0.01,  # dropout on relative position features
    "num_downsamples": 7,  # halvings by attention pooling: 2 ** 7 = 128 bp per bin
    "dim_divisible_by": 128,  # conv tower widths are rounded to multiples of this
    "target_length": 896,  # central bins kept after the transformer (-1: all of them)
    "window": 196_608,  # central input bp kept (Seq2Exp's valid_len_enformer)
    "head_dim": 128,  # width of the expression head (Seq2Exp's d_model)
    "use_checkpointing": False,  # gradient checkpointing of the transformer (memory only, same numbers)
    "pretrained": None,  # None: from scratch; else a local directory of the official weights (load_pretrained)
    "freeze": False,  # with pretrained: keep the Enformer trunk fixed, train the head only
}

#: The official weights that enformer-pytorch loads by name (Seq2Exp: ``from_pretrained(repo)``), as a Hugging
#: Face model repository: the port of DeepMind's TF-Hub Enformer. config.json is 439 bytes, pytorch_model.bin
#: 1.01 GB (a pickled state_dict, loaded with weights_only). Commit 7fe5de9 added the weights, affe571 is the head.
PRETRAINED = {
    "repo": "EleutherAI/enformer-official-rough",
    "revision": "affe5713ae9017460706a44108289b13c5fee16c",
    "files": ("config.json", "pytorch_model.bin"),
}

# hp keys that define the trunk, compared with a pretrained config.json
_ARCH_KEYS = ("dim", "depth", "heads", "attn_dim_key", "dropout_rate", "attn_dropout", "pos_dropout",
              "num_downsamples", "dim_divisible_by", "target_length")
# the official port's gamma position features were taken from TensorFlow for this many bins only
_TF_GAMMA_BINS = 1536


def enformer_bins(length: int, num_downsamples: int) -> int:
    """Bins the trunk makes of ``length`` bp: each attention pooling halves, an odd length rounded up."""
    for _ in range(num_downsamples):
        length = math.ceil(length / 2)
    return length


def cropped_bins(bins: int, target_length: int) -> int:
    """Bins left after enformer-pytorch's centre crop to ``target_length`` (-1: no crop); one fewer when
    ``bins - target_length`` is odd (it trims floor-halves from both ends)."""
    if target_length == -1 or bins == target_length:
        return bins
    trim = (bins - target_length + 1) // 2
    return bins - 2 * trim


def load_pretrained(model_dir: str | Path, use_tf_gamma: bool = True) -> Enformer:
    """The official Enformer from a local directory holding PRETRAINED's files -> enformer_pytorch.Enformer.

    No hub access (``local_files_only``). Every key of the checkpoint must match the model and vice versa.
    ``use_tf_gamma`` switches on the TensorFlow gamma position features the port was made with (what
    enformer-pytorch's ``from_pretrained`` does for this repository name); they exist for 1536 bins
    (196,608 bp) only. Track heads (human 5313, mouse 1643) are part of the returned model.
    """
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise DataError(f"{path / 'config.json'}: missing (Enformer weights directory)")
    if not any((path / f).is_file() for f in ("pytorch_model.bin", "model.safetensors")):
        raise DataError(f"{path}: no pytorch_model.bin or model.safetensors (Enformer weights)")
    model, info = Enformer.from_pretrained(str(path), local_files_only=True, output_loading_info=True)
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if bad:
        raise DataError(f"{path}: the checkpoint does not fit enformer-pytorch's Enformer: {bad}")
    for module in model.modules():
        if isinstance(module, Attention):
            module.use_tf_gamma = use_tf_gamma
    return model


class EnformerRegressor(SequenceRegressor):
    """Centre ``window`` bp -> Enformer trunk -> mean over bins + extra features -> head -> expression (B,)."""

    def __init__(self, trunk: Enformer, window: int, head_dim: int, n_features: int, freeze: bool = False):
        super().__init__()
        trunk.add_heads()  # no track heads: the readout never reads them
        self.enformer = trunk
        self.window = window
        if freeze:
            for p in self.enformer.parameters():
                p.requires_grad_(False)
        self.head = ExpressionHead(2 * trunk.dim, head_dim, n_features)

    def forward(self, seq: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """seq (B, L, 4) one-hot (N = zeros), any L; features (B, n_features) -> pred (B,)."""
        L = seq.shape[1]
        if L > self.window:
            start = (L - self.window) // 2
            seq = seq[:, start : start + self.window]  # (B, window, 4)
        emb = self.enformer(seq, return_only_embeddings=True)  # (B, bins, 2 dim)
        pooled = emb.mean(dim=1)  # (B, 2 dim)
        pred = self.head(torch.cat([pooled.to(features.dtype), features], dim=-1)).squeeze(-1)  # (B,)
        return pred.float()  # fp32 under autocast too, as the reference's logits.float()


def _check_hp(hp: dict, length: int) -> None:
    missing, unknown = set(DEFAULT_HP) - set(hp), set(hp) - set(DEFAULT_HP)
    if missing or unknown:
        raise ValueError(f"enformer hp: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}")
    dim, heads = hp["dim"], hp["heads"]
    if dim % heads or (dim // heads) % 6:
        raise ValueError(f"enformer hp: dim / heads ({dim} / {heads}) must be a whole multiple of 6")
    if hp["num_downsamples"] < 3:
        raise ValueError(f"enformer hp: num_downsamples must be at least 3, got {hp['num_downsamples']}")
    widths = exponential_linspace_int(dim // 2, dim, num=hp["num_downsamples"] - 1, divisible_by=hp["dim_divisible_by"])
    if min(widths) < 1:
        raise ValueError(f"enformer hp: dim_divisible_by {hp['dim_divisible_by']} rounds conv tower widths "
                         f"{widths} to zero; use one <= dim / 2")
    bins = enformer_bins(min(length, hp["window"]), hp["num_downsamples"])
    if hp["target_length"] != -1 and not 1 <= hp["target_length"] <= bins:
        raise ValueError(f"enformer hp: target_length {hp['target_length']} must be -1 or 1..{bins}, the bins "
                         f"of a {min(length, hp['window'])} bp input")
    if hp["freeze"] and not hp["pretrained"]:
        raise ValueError("enformer hp: freeze needs pretrained weights")
    if hp["pretrained"] and bins != _TF_GAMMA_BINS:
        raise ValueError(f"enformer hp: the official weights need {_TF_GAMMA_BINS} bins (a 196,608 bp input); "
                         f"a {min(length, hp['window'])} bp input makes {bins}")


def build(hp: dict, spec, n_features: int) -> EnformerRegressor:
    """Enformer regressor for inputs of ``spec.length`` bp; hp has exactly the keys of DEFAULT_HP;
    spec.signals must be empty. With ``hp["pretrained"]`` the trunk is the official model, whose config.json
    must agree with hp on the architecture."""
    _check_hp(hp, int(spec.length))
    require_sequence_only(spec, "enformer")
    if hp["pretrained"]:
        trunk = load_pretrained(hp["pretrained"])
        cfg = trunk.config
        for key in _ARCH_KEYS:
            if getattr(cfg, key) != hp[key]:
                raise ValueError(f"enformer hp {key} = {hp[key]!r} but {hp['pretrained']}/config.json has "
                                 f"{getattr(cfg, key)!r}")
        trunk.use_checkpointing = hp["use_checkpointing"]
    else:
        trunk = Enformer.from_hparams(
            dim=hp["dim"], depth=hp["depth"], heads=hp["heads"], attn_dim_key=hp["attn_dim_key"],
            dropout_rate=hp["dropout_rate"], attn_dropout=hp["attn_dropout"], pos_dropout=hp["pos_dropout"],
            num_downsamples=hp["num_downsamples"], dim_divisible_by=hp["dim_divisible_by"],
            target_length=hp["target_length"], use_checkpointing=hp["use_checkpointing"], output_heads={},
        )
    return EnformerRegressor(trunk, hp["window"], hp["head_dim"], n_features, freeze=hp["freeze"])
