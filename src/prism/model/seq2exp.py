"""Seq2Exp (Su et al., 2025): a learned per-base Beta mask over the input of a Caduceus encoder.

Facts followed: the public code, GitHub divelab/AIRS, OpenBio/Seq2Exp (``GeneBiMambaMIRNP`` in
``src/models/sequence/GeneExpformer.py``, ``configs/model/gene_express_bimamba_MI_RNP.yaml``,
``Seq2Exp.sh``, ``src/tasks/metrics.py:extract_rationale_loss``); see shared/design/BASELINES.md.

One module, three settings of the paper's Table 1 (hp ``mask`` and the sampling flags):
- Seq2Exp-soft: the mask is a Beta sample in training and the Beta mean at test time.
- Seq2Exp-hard: the sample (train) or the mean (test) thresholded at ``sample_threshold``, with a
  straight-through gradient in training (``post_hard_dist``, ``test_hard``); the generator is also the
  encoder (``enc_prd_ps``) and a learned positional embedding is added (``pos_enc``), and the encoder
  reads only the kept bases, packed (below).
- MACS3: the same encoder and head, the mask fixed to MACS3 DNase peaks; as in the reference
  (``use_peak_mask``) there is then no generator, no prior and no KL term, and the peaks are used as
  given (the central window is not forced to 1, blacklisted bases are not zeroed).

The learned mask (per base, in (0, 1)):
    posterior    Beta(a, b), a = softplus(g_1) + beta_min, b = softplus(g_0) + beta_min,
                 g = Linear(d_model, 2)(generator(seq_emb [+ sig_emb when enc_prd_ps]))
    signal prior Beta((s_i + beta_min) * prior_scale_factor, (prior_beta_i + beta_min) * prior_scale_factor)
                 per signal i, weighted by w = softmax(log(prior_weight / sum prior_weight))
    decouple_x   z ~ Beta(z_scale * (a + sum_i w_i alpha_i), z_scale * (b + sum_i w_i beta_i)),
                 KL(z || Beta(marginal_scale, marginal_scale * (1 - marginal_mean) / marginal_mean))
    otherwise    z ~ posterior, KL = sum_i w_i KL(posterior || prior_i)
then blacklisted bases are set to 0 and the central ``center_len`` bases to 1 (in that order, so the
centre wins). The encoder reads ``(seq_emb + sig_emb) * mask``; the head is Prism's.

Loss (``extract_rationale_loss``): smooth_l1(pred, y) + kl_loss_weight * KL, the KL averaged over
every base of the batch.

Their released Lightning checkpoints (Hugging Face xingyusu/GeneExp_Seq2Exp) are this kind's importer's
(:func:`import_reference_checkpoint`, prism.archs): their state-dict layout is derived from the settings
(:func:`reference_key_shapes`) and mapped both ways (:func:`reference_state_dict_to_ours`,
:func:`ours_to_reference_state_dict`); see the section at the end of this module.

Where this module departs from the reference code, on purpose:
- For L <= center_len the whole input is the central window (the reference slices with a negative start).
- The Beta distributions are computed in float32 (the reference ran them under bf16 autocast).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import partial
from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Beta, kl_divergence

from prism.genes import DataError
from prism.model.caduceus import CaduceusBackbone, init_mamba_weights
from prism.model.readout import ExpressionHead, adamw_param_groups, centre_mean_pool

__all__ = [
    "HP_KEYS",
    "REFERENCE_SIGNALS",
    "Seq2ExpConfig",
    "Seq2ExpModel",
    "REFERENCE_DEFAULTS",
    "build",
    "import_reference_checkpoint",
    "ours_to_reference_state_dict",
    "reference_config",
    "reference_key_shapes",
    "reference_state_dict_to_ours",
]

#: channel order of the reference loader's signal tensor (``ExperInteractDataset``: h3k27ac, dnase, hic)
REFERENCE_SIGNALS = ("h3k27ac", "dnase", "hic")

#: added to Beta concentrations, as the reference (``eps=1e-8``)
EPS = 1e-8


@dataclass
class Seq2ExpConfig:
    """Hyper-parameters; defaults are Seq2Exp-soft as ``Seq2Exp.sh`` trains it (library use only)."""

    d_model: int = 128
    n_layer: int = 4  # encoder depth (the reference's enc_n_layer)
    gen_n_layer: int = 4  # generator depth (the reference's gen_n_layer = enc_n_layer)
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    center_len: int = 2000  # central bases: never masked, and mean-pooled before the head
    length: int = 200_000  # input bp; sizes the positional embedding
    signals: tuple = REFERENCE_SIGNALS  # channel order of the signals input
    n_features: int = 9
    mask: str = "learned"  # "learned" (Seq2Exp) or "macs3" (fixed mask from DNase peaks)
    kl_loss_weight: float = 0.01
    prior_scale_factor: float = 10.0
    prior_beta: tuple = (1.5, 0.2, 1.0)  # per signal, in ``signals`` order
    prior_weight: tuple = (2.0, 2.0, 1.0)  # per signal, in ``signals`` order
    marginal_mean: float = 0.1
    marginal_scale: float = 10.0
    beta_min: float = 1.0
    z_scale: float = 1.0
    decouple_x: bool = True
    sample_threshold: float = 0.5
    post_hard_dist: bool = False  # training mask = (sample >= threshold), straight-through gradient
    test_hard: bool = False  # test mask = (mean >= threshold); else the mean
    enc_prd_ps: bool = False  # the generator is also the encoder (one backbone)
    pos_enc: bool = False  # learned positional embedding (1, length, d_model), packed encoder input
    init_n_layer: int = 64  # depth used by the out_proj init rescale (see Seq2ExpModel)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        """Raise a one-line ValueError on settings the reference cannot run or that make no sense."""
        for name in ("d_model", "n_layer", "gen_n_layer", "d_state", "d_conv", "expand", "center_len", "length",
                     "init_n_layer"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v > 0):
                raise ValueError(f"seq2exp: {name} must be a positive integer, got {v!r}")
        if self.mask not in ("learned", "macs3"):
            raise ValueError(f"seq2exp: mask must be 'learned' or 'macs3', got {self.mask!r}")
        if self.n_features < 0:
            raise ValueError(f"seq2exp: n_features must be >= 0, got {self.n_features!r}")
        if self.mask == "macs3":
            if self.enc_prd_ps:
                raise ValueError("seq2exp: enc_prd_ps needs the generator, which a macs3 mask does not build")
            if self.pos_enc:
                raise ValueError("seq2exp: pos_enc pools the packed central window, which a macs3 mask does not keep")
            return
        if not self.signals:
            raise ValueError("seq2exp: the learned mask's prior needs at least one signal, spec.signals is empty")
        if len(self.prior_beta) != len(self.signals) or len(self.prior_weight) != len(self.signals):
            raise ValueError(f"seq2exp: prior_beta and prior_weight need one value per signal of {list(self.signals)}")
        checks = (
            ("kl_loss_weight", self.kl_loss_weight >= 0, ">= 0"),
            ("prior_scale_factor", self.prior_scale_factor > 0, "> 0"),
            ("beta_min", self.beta_min >= 0, ">= 0"),
            ("marginal_mean", 0 < self.marginal_mean < 1, "in (0, 1)"),
            ("marginal_scale", self.marginal_scale > 0, "> 0"),
            ("z_scale", self.z_scale > 0, "> 0"),
            ("sample_threshold", 0 < self.sample_threshold < 1, "in (0, 1)"),
        )
        for name, ok, what in checks:
            if not ok:
                raise ValueError(f"seq2exp: {name} must be {what}, got {getattr(self, name)!r}")
        for s, w, b in zip(self.signals, self.prior_weight, self.prior_beta):
            if not w > 0:
                raise ValueError(f"seq2exp: prior_weight of {s!r} must be > 0, got {w!r}")
            if not b + self.beta_min > 0:
                raise ValueError(f"seq2exp: prior_beta of {s!r} plus beta_min must be > 0, got {b!r}")
        if self.enc_prd_ps and self.gen_n_layer != self.n_layer:
            raise ValueError(f"seq2exp: enc_prd_ps shares one backbone, but gen_n_layer {self.gen_n_layer} "
                             f"!= n_layer {self.n_layer}")
        if self.pos_enc and not (self.post_hard_dist and self.test_hard):
            raise ValueError("seq2exp: pos_enc packs the kept bases, so it needs a 0/1 mask: "
                             "post_hard_dist and test_hard must be true")


#: hp keys of ``build`` (the config's fields less those that come from spec and n_features)
HP_KEYS = tuple(f.name for f in fields(Seq2ExpConfig) if f.name not in ("length", "signals", "n_features"))


def _per_signal(hp: dict, key: str, signals: Sequence[str]) -> tuple:
    """hp[key] is a mapping signal name -> value; the values in ``signals`` order."""
    table = hp[key]
    if not isinstance(table, Mapping):
        raise ValueError(f"seq2exp: hp {key!r} must map signal names to numbers, got {table!r}")
    for s in signals:
        if s not in table:
            raise ValueError(f"seq2exp: hp {key!r} has no value for signal {s!r} (it names {sorted(table)})")
    return tuple(float(table[s]) for s in signals)


def _config(hp: dict, signals: tuple, length: int, n_features: int) -> Seq2ExpConfig:
    """hp (every key of HP_KEYS) and the run's signals and length -> the model's config."""
    values = {k: hp[k] for k in HP_KEYS}
    if hp["mask"] == "learned":
        values["prior_beta"] = _per_signal(hp, "prior_beta", signals)
        values["prior_weight"] = _per_signal(hp, "prior_weight", signals)
    else:  # no prior without a generator
        values["prior_beta"] = values["prior_weight"] = ()
    return Seq2ExpConfig(**values, length=int(length), signals=tuple(signals), n_features=int(n_features))


def build(hp: dict, spec, n_features: int) -> "Seq2ExpModel":
    """The model-module contract: hp (every key of HP_KEYS; prior_beta and prior_weight map signal
    names to numbers), spec (.length, .signals) and the number of extra gene features."""
    missing = [k for k in HP_KEYS if k not in hp]
    if missing:
        raise ValueError(f"seq2exp: hp lacks {missing[0]!r}")
    unknown = [k for k in hp if k not in HP_KEYS]
    if unknown:
        raise ValueError(f"seq2exp: unknown hp key {unknown[0]!r}")
    return Seq2ExpModel(_config(hp, tuple(spec.signals), spec.length, n_features))


class Seq2ExpModel(nn.Module):
    """Generator + Beta mask + Caduceus encoder + Prism's head (or a fixed MACS3 mask, no generator).

    Weight init as the reference's ``post_init``: every Linear bias zeroed (dt_proj's kept) and every
    ``out_proj.weight`` redrawn and divided by sqrt(init_n_layer). The reference's top-level
    CaduceusConfig never sets ``n_layer`` for this model (only enc_n_layer / gen_n_layer), so that
    rescale runs with CaduceusConfig's default n_layer = 64. ``pos_emb`` starts at zero, as there.
    """

    def __init__(self, config: Seq2ExpConfig | None = None, **overrides):
        super().__init__()
        config = config or Seq2ExpConfig()
        if overrides:
            config = Seq2ExpConfig(**{**asdict(config), **overrides})
        config.validate()
        self.config = c = config
        n_signals = len(c.signals)
        backbone = partial(CaduceusBackbone, c.d_model, d_state=c.d_state, d_conv=c.d_conv, expand=c.expand)

        self.seq_emb = nn.Linear(4, c.d_model)
        self.sig_emb = nn.Linear(n_signals, c.d_model) if n_signals > 0 else None
        self.pos_emb = nn.Parameter(torch.zeros(1, c.length, c.d_model)) if c.pos_enc else None
        if self.learned:
            self.generator = backbone(c.gen_n_layer)
            self.mask_output = nn.Linear(c.d_model, 2)  # (beta logit, alpha logit) per base
            w = torch.tensor(c.prior_weight, dtype=torch.float32)
            # fixed in the paper's runs (dist_param_grad false): buffers, softmax-ed in forward as the reference
            self.register_buffer("prior_weights", torch.log(w / w.sum()))
            self.register_buffer("signal_betas", torch.tensor(c.prior_beta, dtype=torch.float32))
        else:
            self.generator = self.mask_output = None
        self.encoder = self.generator if c.enc_prd_ps else backbone(c.n_layer)
        self.head = ExpressionHead(c.d_model, c.d_model, c.n_features)
        self.apply(partial(init_mamba_weights, n_layer=c.init_n_layer))

    @property
    def learned(self) -> bool:
        return self.config.mask == "learned"

    def centre(self, length: int) -> tuple[int, int]:
        """(start, size) of the central window of an input of ``length`` bp (all of it when shorter)."""
        n = min(self.config.center_len, length)
        return (length - n) // 2, n

    def mask_distribution(self, hidden: torch.Tensor, signals: torch.Tensor) -> tuple[Beta, torch.Tensor]:
        """Generator states (B, L, D) and raw signals (B, C, L) -> (z distribution over (B, L), KL scalar)."""
        c = self.config
        logits = self.mask_output(hidden).float()  # (B, L, 2)
        post_alpha = F.softplus(logits[..., 1]) + c.beta_min + EPS  # (B, L), pulls z towards 1
        post_beta = F.softplus(logits[..., 0]) + c.beta_min + EPS  # (B, L), pulls z towards 0
        prior_alpha = (signals.float() + c.beta_min) * c.prior_scale_factor + EPS  # (B, C, L)
        prior_beta = (self.signal_betas + c.beta_min) * c.prior_scale_factor  # (C,)
        w = torch.softmax(self.prior_weights, dim=0)  # (C,)
        if c.decouple_x:
            z_alpha = (post_alpha + (w[:, None] * prior_alpha).sum(dim=1)) * c.z_scale  # (B, L)
            z_beta = (post_beta + (w * prior_beta).sum()) * c.z_scale  # (B, L)
            z = Beta(z_alpha, z_beta, validate_args=False)
            marginal = Beta(
                torch.tensor(c.marginal_scale, device=z_alpha.device),
                torch.tensor((1 - c.marginal_mean) / c.marginal_mean * c.marginal_scale, device=z_alpha.device),
                validate_args=False,
            )
            return z, kl_divergence(z, marginal).mean()
        z = Beta(post_alpha, post_beta, validate_args=False)
        kl = sum(
            w[i] * kl_divergence(z, Beta(prior_alpha[:, i], prior_beta[i].expand_as(post_beta), validate_args=False)).mean()
            for i in range(prior_alpha.shape[1])
        )
        return z, kl

    def forward(
        self,
        seq: torch.Tensor,
        signals: torch.Tensor,
        features: torch.Tensor,
        blacklist: torch.Tensor | None = None,
        peaks: torch.Tensor | None = None,
        sample: bool = False,
    ) -> dict:
        """seq (B, L, 4) one-hot; signals (B, C, L) raw (C = len(config.signals)); features (B, n_features);
        blacklist (B, L) bool, True = blacklisted (None = none); peaks (B, L) float 0/1 (macs3 only);
        sample: draw the mask (training) instead of the deterministic test-time mask.

        Returns ``pred`` (B,), ``mask`` (B, L) float in [0, 1] and ``kl`` (scalar; 0 for macs3).
        """
        c = self.config
        B, L, _ = seq.shape
        if self.sig_emb is not None and (signals.dim() != 3 or signals.shape[1] != len(c.signals)):
            raise ValueError(f"seq2exp: signals must be (B, {len(c.signals)}, L) for {list(c.signals)}, "
                             f"got {tuple(signals.shape)}")
        x_seq = self.seq_emb(seq)  # (B, L, D)
        if self.pos_emb is not None:
            if L != self.pos_emb.shape[1]:
                raise ValueError(f"seq2exp: pos_enc was sized for {self.pos_emb.shape[1]} bp, the input has {L}")
            x_seq = x_seq + self.pos_emb  # (B, L, D)
        x_enc = x_gen = x_seq
        if self.sig_emb is not None:
            x_enc = x_seq + self.sig_emb(signals.transpose(1, 2))  # (B, L, D)
            if c.enc_prd_ps:  # the shared backbone reads the same input in both roles
                x_gen = x_enc
        start, n_centre = self.centre(L)

        if not self.learned:
            if peaks is None:
                raise DataError("seq2exp: mask 'macs3' needs batch.extra['peaks'] (B, L), the MACS3 DNase peaks")
            if tuple(peaks.shape) != (B, L):
                raise DataError(f"seq2exp: batch.extra['peaks'] has shape {tuple(peaks.shape)}, expected {(B, L)}")
            mask = peaks.float()  # (B, L), used as given, as the reference's use_peak_mask
            kl = x_enc.new_zeros((), dtype=torch.float32)
        else:
            z, kl = self.mask_distribution(self.generator(x_gen), signals)
            if sample:
                soft = z.rsample()  # (B, L), reparameterised
                if c.post_hard_dist:
                    hard = (soft >= c.sample_threshold).float()
                    mask = hard - soft.detach() + soft  # exactly 0/1, gradient of the sample
                else:
                    mask = soft
            else:
                mean = z.mean  # (B, L)
                mask = (mean >= c.sample_threshold).float() if c.test_hard else mean
            if blacklist is not None:
                if tuple(blacklist.shape) != (B, L) or blacklist.dtype != torch.bool:
                    raise DataError(f"seq2exp: batch.extra['blacklist'] must be bool {(B, L)}, got "
                                    f"{blacklist.dtype} {tuple(blacklist.shape)}")
                mask = mask.masked_fill(blacklist, 0.0)
            centre = torch.zeros(L, dtype=torch.bool, device=mask.device)
            centre[start : start + n_centre] = True
            mask = mask.masked_fill(centre, 1.0)  # (B, L): the promoter is always read

        if self.pos_emb is None:
            hidden = self.encoder(x_enc * mask[..., None])  # (B, L, D)
            pooled = centre_mean_pool(hidden, c.center_len)  # (B, D)
        else:
            pooled = self._packed_encoder(x_enc, mask, start, n_centre)  # (B, D)
        pred = self.head(torch.cat([pooled, features.to(pooled.dtype)], dim=-1)).squeeze(-1)  # (B,)
        return {"pred": pred, "mask": mask, "kl": kl}

    def _packed_encoder(self, x: torch.Tensor, mask: torch.Tensor, start: int, n_centre: int) -> torch.Tensor:
        """pos_enc: the encoder reads only the kept bases, packed to the left and zero-padded to the
        batch's longest, then pools the central window at its packed place. (B, L, D), (B, L) 0/1 -> (B, D).

        As the reference, the mask selects (``mask == 1``) but does not scale, so no gradient of the
        prediction loss reaches the mask through this path.
        """
        B, _, D = x.shape
        keep = mask == 1  # (B, L)
        counts = keep.sum(dim=1)  # (B,)
        packed = x.new_zeros(B, int(counts.max()), D)  # (B, L_kept_max, D)
        slots = torch.arange(packed.shape[1], device=x.device)[None] < counts[:, None]  # (B, L_kept_max)
        packed[slots] = x[keep]  # row-major on both sides: each row's kept bases, in order
        hidden = self.encoder(packed)  # (B, L_kept_max, D)
        offset = keep[:, :start].sum(dim=1)  # (B,) kept bases before the central window
        index = offset[:, None] + torch.arange(n_centre, device=x.device)[None]  # (B, n_centre)
        centre = hidden.gather(1, index[..., None].expand(-1, -1, D))  # (B, n_centre, D)
        return centre.mean(dim=1)

    def forward_batch(self, batch, mode: str = "eval") -> dict:
        """prism.data.Batch -> forward's dict; mode "train" samples the mask, "eval" is deterministic.

        Reads batch.extra["blacklist"] (B, L) bool (optional) and, for mask "macs3", batch.extra["peaks"].
        """
        if mode not in ("train", "eval"):
            raise ValueError(f"seq2exp: mode must be 'train' or 'eval', got {mode!r}")
        return self(batch.seq, batch.signals, batch.features, blacklist=batch.extra.get("blacklist"),
                    peaks=batch.extra.get("peaks"), sample=mode == "train")

    def loss(self, out: dict, target: torch.Tensor) -> dict:
        """loss = smooth_l1(pred, y) + kl_loss_weight * KL; logs pred_loss, kl_loss (weighted, as the
        reference logs it), kl_divergence (unweighted) and mask_mean (fraction of the input read)."""
        pred_loss = F.smooth_l1_loss(out["pred"].float(), target.float())
        kl = out["kl"]
        kl_loss = self.config.kl_loss_weight * kl if self.learned else torch.zeros_like(pred_loss)
        return {
            "loss": pred_loss + kl_loss,
            "pred_loss": pred_loss,
            "kl_loss": kl_loss,
            "kl_divergence": kl.detach(),
            "mask_mean": out["mask"].detach().float().mean(),
        }

    def param_groups(self, weight_decay: float) -> list[dict]:
        """Prism's AdamW groups (no decay on biases, norm weights, A_log, D; pos_emb is decayed)."""
        return adamw_param_groups(self, weight_decay)


# ------------------------------------------------------------------ the authors' released checkpoints
#
# Their Lightning checkpoint (Hugging Face xingyusu/GeneExp_Seq2Exp; written by train.py's
# SequenceLightningModule, which keeps the network in ``self.model``) holds GeneBiMambaMIRNP's state dict
# under ``model.``. Facts from GitHub divelab/AIRS, OpenBio/Seq2Exp:
# - src/models/sequence/GeneExpformer.py, GeneBiMambaMIRNP.__init__ registers, in this order,
#   seq_input_layer (Linear(base_size, d_model)), signal_input_layer (Linear(signal_size, d_model), with
#   interact 'concat'), pos_emb (Parameter (1, seq_range, d_model), with pos_enc), then, for a learned mask,
#   generator (Caduceus(n_layer = gen_n_layer, ignore_embed_layer)), prior_weights and signal_betas
#   (Parameters, requires_grad = dist_param_grad), mask_output (Linear(d_model, 2)); then encoder (the
#   generator itself with enc_prd_ps, else Caduceus(n_layer = enc_n_layer)) and pToExpr. A state dict
#   lists a module's own parameters before its submodules', and a module registered under two names
#   (enc_prd_ps) under both.
# - caduceus/modeling_caduceus.py: Caduceus.backbone is a CaduceusMixerModel (layers, norm_f; no
#   embeddings with ignore_embed_layer), each layer mamba_ssm 1.1.2's Block around BiMambaWrapper, as in
#   Prism's checkpoints (prism.released.caduceus_key_shapes).
# - configs/model/gene_express_bimamba_MI_RNP.yaml, configs/experiment/hg38/gene_express.yaml,
#   configs/task/extract_rationale.yaml and Seq2Exp.sh: the hyper-parameters, by these names.

LIGHTNING_PREFIX = "model."

#: their GeneBiMambaMIRNP prefix -> ours, in their state-dict order (own parameters first)
_PREFIX_MAP = (
    ("pos_emb", "pos_emb"),
    ("prior_weights", "prior_weights"),
    ("signal_betas", "signal_betas"),
    ("seq_input_layer.", "seq_emb."),
    ("signal_input_layer.", "sig_emb."),
    ("generator.backbone.", "generator."),
    ("mask_output.", "mask_output."),
    ("encoder.backbone.", "encoder."),
    ("pToExpr.", "head."),
)
#: keys whose axis runs over the signals, and that axis: the reference orders them as REFERENCE_SIGNALS
_SIGNAL_AXIS = {"sig_emb.weight": 1, "prior_weights": 0, "signal_betas": 0}

#: their model's settings where a checkpoint's hyper-parameters lack one: the model config
#: (gene_express_bimamba_MI_RNP.yaml), the experiment (gene_express.yaml: seq_range 200_000) and
#: Seq2Exp.sh's soft run (kl_loss_weight 0.01, prior_scale_factor 10, marginal_mean 0.1, beta_min 1)
REFERENCE_DEFAULTS = {
    "model": {"_name_": "BiMambaMIRNP", "config": {
        "d_model": 128, "enc_n_layer": 4, "center_len": 2000, "interact": "concat", "gen_signal": False,
        "prior_signal": "all", "prior_beta": "1.5,0.2,1.0", "prior_weight": "2,2,1", "prior_scale_factor": 10.0,
        "merge_peak_mask": False, "post_sample": True, "sample_threshold": 0.5, "post_dist": "beta",
        "post_hard_dist": False, "decouple_x": True, "only_x_sig": False, "use_include_list": False,
        "marginal_mean": 0.1, "marginal_scale": 10.0, "use_bio_mask": False, "use_peak_mask": False,
        "use_mask_model": False, "enc_prd_ps": False, "pos_enc": False, "pool_mask": 0, "beta_min": 1.0,
        "z_scale": 1.0, "test_top": False, "test_soft": True, "test_hard": False, "base_size": 4,
        "signal_size": 3, "rna_feat_dim": 9, "useRNAFeat": True, "rms_norm": True, "norm_epsilon": 1e-5,
        "bidirectional": True, "bidirectional_strategy": "add", "bidirectional_weight_tie": True, "rcps": False,
        "ssm_cfg": {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": "auto", "conv_bias": True, "bias": False},
    }},
    "task": {"loss": {"kl_loss_weight": 0.01, "select_weight": 0.0, "continuity_weight": 0.0,
                      "bio_mask_weight": 0.0}},
    "dataset": {"seq_range": 200_000},
}


def reference_key_shapes(config: Seq2ExpConfig) -> dict[str, tuple]:
    """{key: shape} of their GeneBiMambaMIRNP state dict (no Lightning prefix), in its order, for the model
    ``config`` describes (its signals are the checkpoint's channels). Derived from their module tree (see
    above), not from ours."""
    from prism.released import caduceus_key_shapes

    c, d, n_signals = config, config.d_model, len(config.signals)
    caduceus = partial(caduceus_key_shapes, d_model=d, d_state=c.d_state, d_conv=c.d_conv, expand=c.expand)
    out = [("pos_emb", (1, c.length, d))] if c.pos_enc else []
    if c.mask == "learned":
        out += [("prior_weights", (n_signals,)), ("signal_betas", (n_signals,))]
    out += [("seq_input_layer.weight", (d, 4)), ("seq_input_layer.bias", (d,))]
    if n_signals:
        out += [("signal_input_layer.weight", (d, n_signals)), ("signal_input_layer.bias", (d,))]
    if c.mask == "learned":
        out += caduceus("generator.backbone.", n_layer=c.gen_n_layer)
        out += [("mask_output.weight", (2, d)), ("mask_output.bias", (2,))]
    out += caduceus("encoder.backbone.", n_layer=c.n_layer)
    out += [("pToExpr.0.weight", (d, d + c.n_features)), ("pToExpr.0.bias", (d,)),
            ("pToExpr.2.weight", (d, d)), ("pToExpr.2.bias", (d,)),
            ("pToExpr.4.weight", (1, d)), ("pToExpr.4.bias", (1,))]
    return dict(out)


def _rename(key: str, source: int) -> str:
    """A key from one naming (0: theirs, 1: ours) to the other; KeyError when no module has it."""
    for names in _PREFIX_MAP:
        prefix = names[source]
        if key == prefix or (prefix.endswith(".") and key.startswith(prefix)):
            return names[1 - source] + key[len(prefix):]
    raise KeyError(key)


def _signal_order(signals: Sequence[str], n: int) -> list[int]:
    """Index into the reference's first ``n`` channels of each of our signals (a permutation of them)."""
    theirs = REFERENCE_SIGNALS[:n]
    if sorted(signals) != sorted(theirs):
        raise ValueError(f"seq2exp: the reference weights hold signals {list(theirs)}, not {list(signals)}")
    return [theirs.index(s) for s in signals]


def _describe(c: Seq2ExpConfig) -> str:
    what = "Seq2Exp, MACS3 mask" if c.mask == "macs3" else ("Seq2Exp-hard" if c.test_hard else "Seq2Exp-soft")
    return (f"the architecture it claims ({what}, d_model {c.d_model}, encoder {c.n_layer} and generator "
            f"{c.gen_n_layer} layers, {len(c.signals)} signals, {c.length:,} bp)")


def reference_state_dict_to_ours(theirs: Mapping[str, torch.Tensor], config: Seq2ExpConfig, *,
                                 name: str = "state dict") -> dict:
    """Their GeneBiMambaMIRNP state dict (bare names, or a Lightning checkpoint's ``model.``-prefixed
    ones) -> one that loads strictly into ``Seq2ExpModel(config)``.

    Every key and shape is checked against :func:`reference_key_shapes` first: the first key that is
    extra, missing or misshaped is a one-line DataError naming it and both shapes. So are tied weights
    that differ (mamba_rev's projections are mamba_fwd's; with enc_prd_ps the encoder is the generator)
    and prior tensors that disagree with the hyper-parameters (prior_beta, prior_weight). The
    signal-indexed tensors are permuted from the reference's channel order to ``config.signals``'.
    """
    from prism.released import check_keys, check_tied

    c = config
    state = {(k[len(LIGHTNING_PREFIX):] if k.startswith(LIGHTNING_PREFIX) else k): v for k, v in theirs.items()}
    check_keys(state, reference_key_shapes(c), name, _describe(c))
    for prefix, n_layer in (("generator.backbone.", c.gen_n_layer), ("encoder.backbone.", c.n_layer)):
        check_tied(state, prefix, n_layer, name)
    if c.enc_prd_ps:  # one module under two names: the same tensors
        for key in state:
            if key.startswith("encoder.backbone."):
                twin = "generator." + key[len("encoder."):]
                if not torch.equal(state[key], state[twin]):
                    raise DataError(f"{name}: key '{key}' differs from '{twin}' (enc_prd_ps: the encoder is the "
                                    f"generator, one tensor)")
    perm = torch.tensor(_signal_order(c.signals, len(c.signals)), dtype=torch.long)
    out = {}
    for key, value in state.items():
        ours = _rename(key, 0)
        out[ours] = value.index_select(_SIGNAL_AXIS[ours], perm) if ours in _SIGNAL_AXIS else value
    if c.mask == "learned":
        w = torch.tensor(c.prior_weight, dtype=torch.float64)
        for key, want, hp in (("signal_betas", torch.tensor(c.prior_beta, dtype=torch.float64), "prior_beta"),
                              ("prior_weights", torch.log(w / w.sum()), "prior_weight")):
            got = out[key].double()
            if not torch.allclose(got, want, rtol=0, atol=1e-6):
                raise DataError(f"{name}: key '{key}' holds {[round(v, 4) for v in got.tolist()]}, but {hp} "
                                f"{list(getattr(c, hp))} gives {[round(v, 4) for v in want.tolist()]} "
                                f"(signals {list(c.signals)})")
    return out


def ours_to_reference_state_dict(sd: Mapping[str, torch.Tensor], signals: Sequence[str] = REFERENCE_SIGNALS, *,
                                 lightning_prefix: bool = False) -> dict:
    """Our Seq2ExpModel state dict -> theirs, in their state-dict order (the inverse of
    reference_state_dict_to_ours); ``signals`` is our channel order. Tensors are shared unless permuted.
    Every key of ours must map (a KeyError names one that does not)."""
    perm = _signal_order(signals, len(signals))
    inverse = torch.tensor([perm.index(i) for i in range(len(perm))], dtype=torch.long)
    rank = {names[1]: i for i, names in enumerate(_PREFIX_MAP)}
    renamed = []
    for key, value in sd.items():
        theirs = _rename(key, 1)
        ours_prefix = next(n[1] for n in _PREFIX_MAP if key == n[1] or (n[1].endswith(".") and key.startswith(n[1])))
        if key in _SIGNAL_AXIS:
            value = value.index_select(_SIGNAL_AXIS[key], inverse)
        renamed.append((rank[ours_prefix], theirs, value))
    renamed.sort(key=lambda r: r[0])  # stable: within a module our order is theirs
    prefix = LIGHTNING_PREFIX if lightning_prefix else ""
    return {prefix + k: v for _, k, v in renamed}


def _csv_numbers(value, dotted: str, name: str) -> tuple[float, ...]:
    """Their comma-separated prior strings ("1.5,0.2,1.0"), or a list, as floats."""
    items = value.split(",") if isinstance(value, str) else value
    try:
        return tuple(float(x) for x in items)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: {dotted} is {value!r}, not comma-separated numbers") from None


def reference_config(hparams: dict | None, *, name: str = "checkpoint") -> tuple[dict, dict, dict]:
    """Their Hydra config (a checkpoint's hyper_parameters, as plain dicts) -> (hp, settings, info).

    hp has every key of :data:`HP_KEYS` but ``init_n_layer`` (an initialisation detail a checkpoint does
    not record) and, for a MACS3 mask, ``prior_beta`` and ``prior_weight``; settings are a run's (length, signals); info has the cell line, the seed and which values
    came from :data:`REFERENCE_DEFAULTS` because the checkpoint lacked them. A setting this module cannot
    express (gen_signal, a bio or include-list mask, top-k or Kumaraswamy masks, ...) is a ValueError.
    """
    from prism.released import CheckpointHparams, lookup_hparam

    tree = hparams or {}
    h = CheckpointHparams(tree, REFERENCE_DEFAULTS, name, "our Seq2Exp")
    get, need, defaulted = h.get, h.need, h.defaulted

    mc = "model.config."
    need("model._name_", "BiMambaMIRNP")
    for key, want in (("interact", "concat"), ("gen_signal", False), ("merge_peak_mask", False),
                      ("use_bio_mask", False), ("use_mask_model", False), ("use_include_list", False),
                      ("base_size", 4), ("useRNAFeat", True), ("rna_feat_dim", 9), ("rms_norm", True),
                      ("bidirectional", True), ("bidirectional_strategy", "add"), ("bidirectional_weight_tie", True),
                      ("rcps", False), ("ssm_cfg.dt_rank", "auto"), ("ssm_cfg.conv_bias", True),
                      ("ssm_cfg.bias", False)):
        need(mc + key, want)
    if float(get(mc + "norm_epsilon")) != 1e-5:
        raise ValueError(f"{name}: {mc}norm_epsilon is {get(mc + 'norm_epsilon')!r}; our RMSNorm uses 1e-5")
    for key in ("select_weight", "continuity_weight", "bio_mask_weight"):
        if float(get(f"task.loss.{key}")) != 0.0:
            raise ValueError(f"{name}: task.loss.{key} is {get(f'task.loss.{key}')!r}; our Seq2Exp has no such loss")
    n_signals = int(get(mc + "signal_size"))
    if not 1 <= n_signals <= len(REFERENCE_SIGNALS):
        raise ValueError(f"{name}: {mc}signal_size is {n_signals}; their data loader has 1 to 3 signals")
    signals = list(REFERENCE_SIGNALS[:n_signals])
    learned = not bool(get(mc + "use_peak_mask"))
    n_layer = int(get(mc + "enc_n_layer"))
    gen_n_layer = lookup_hparam(tree, mc + "gen_n_layer")
    if gen_n_layer is None:  # the model config's ${.enc_n_layer}
        gen_n_layer, _ = n_layer, defaulted.append(mc + "gen_n_layer")
    hp = {
        "d_model": int(get(mc + "d_model")), "n_layer": n_layer, "gen_n_layer": int(gen_n_layer),
        "d_state": int(get(mc + "ssm_cfg.d_state")), "d_conv": int(get(mc + "ssm_cfg.d_conv")),
        "expand": int(get(mc + "ssm_cfg.expand")), "center_len": int(get(mc + "center_len") or 0),
        "mask": "learned" if learned else "macs3", "kl_loss_weight": float(get("task.loss.kl_loss_weight")),
        "prior_scale_factor": float(get(mc + "prior_scale_factor")),
        "marginal_mean": float(get(mc + "marginal_mean")), "marginal_scale": float(get(mc + "marginal_scale")),
        "beta_min": float(get(mc + "beta_min")), "z_scale": float(get(mc + "z_scale")),
        "decouple_x": bool(get(mc + "decouple_x")), "sample_threshold": float(get(mc + "sample_threshold")),
        "post_hard_dist": bool(get(mc + "post_hard_dist")), "test_hard": False,
        "enc_prd_ps": bool(get(mc + "enc_prd_ps")), "pos_enc": bool(get(mc + "pos_enc")),
    }
    if hp["center_len"] <= 0:
        raise ValueError(f"{name}: {mc}center_len is {get(mc + 'center_len')!r}; our Seq2Exp pools a central window")
    if learned:
        for key, want in (("prior_signal", "all"), ("post_sample", True), ("post_dist", "beta"), ("only_x_sig", False),
                          ("test_top", False), ("pool_mask", 0)):
            need(mc + key, want)
        soft, hard = bool(get(mc + "test_soft")), bool(get(mc + "test_hard"))
        if soft == hard:
            raise ValueError(f"{name}: {mc}test_soft is {soft} and test_hard is {hard}; our Seq2Exp tests with "
                             f"exactly one of the two (the Beta mean, or it thresholded)")
        hp["test_hard"] = hard
        for key in ("prior_beta", "prior_weight"):
            values = _csv_numbers(get(mc + key), mc + key, name)
            if len(values) != n_signals:
                raise ValueError(f"{name}: {mc}{key} has {len(values)} values for {n_signals} signals {signals}")
            hp[key] = dict(zip(signals, values))
    # with MACS3 peaks as the mask there is no prior: the checkpoint claims no prior_beta or prior_weight
    settings = {"length": int(get("dataset.seq_range")), "signals": signals}
    info = {"cell": lookup_hparam(tree, "dataset.cell_type"), "seed": lookup_hparam(tree, "train.seed"),
            "defaulted": sorted(set(defaulted))}
    return hp, settings, info


def import_reference_checkpoint(ckpt, *, name: str = "checkpoint", log=print):
    """The seq2exp kind's importer (prism.archs.Kind.importer): one of their Lightning checkpoints
    (prism.released.ReferenceCheckpoint) -> prism.released.ImportedCheckpoint in our names, after every
    key and shape is checked against the architecture its hyper-parameters claim."""
    from prism.released import ImportedCheckpoint

    if ckpt.hparams is None:
        log(f"{name}: no hyper_parameters saved; assuming Seq2Exp.sh's soft model at 200 kb")
    hp, settings, info = reference_config(ckpt.hparams, name=name)
    if ckpt.hparams is not None and info["defaulted"]:
        log(f"{name}: not in its hyper_parameters, taken from Seq2Exp's configs: {', '.join(info['defaulted'])}")
    try:  # init_n_layer only initialises, and a MACS3 mask has no prior: any value builds the same keys
        unclaimed = {"init_n_layer": Seq2ExpConfig.init_n_layer, "prior_beta": {}, "prior_weight": {}}
        config = _config({**unclaimed, **hp}, tuple(settings["signals"]), settings["length"], 9)
        config.validate()
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    ours = reference_state_dict_to_ours(ckpt.state_dict, config, name=name)
    return ImportedCheckpoint(ours, hp, settings, info)
