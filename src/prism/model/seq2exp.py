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

Where this module departs from the reference code, on purpose:
- For L <= center_len the whole input is the central window (the reference slices with a negative start).
- The Beta distributions are computed in float32 (the reference ran them under bf16 autocast).
"""

from __future__ import annotations

import re
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
    "build",
    "ours_to_reference_state_dict",
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


def build(hp: dict, spec, n_features: int) -> "Seq2ExpModel":
    """The model-module contract: hp (every key of HP_KEYS; prior_beta and prior_weight map signal
    names to numbers), spec (.length, .signals) and the number of extra gene features."""
    missing = [k for k in HP_KEYS if k not in hp]
    if missing:
        raise ValueError(f"seq2exp: hp lacks {missing[0]!r}")
    unknown = [k for k in hp if k not in HP_KEYS]
    if unknown:
        raise ValueError(f"seq2exp: unknown hp key {unknown[0]!r}")
    signals = tuple(spec.signals)
    values = {k: hp[k] for k in HP_KEYS}
    if hp["mask"] == "learned":
        values["prior_beta"] = _per_signal(hp, "prior_beta", signals)
        values["prior_weight"] = _per_signal(hp, "prior_weight", signals)
    else:  # no prior without a generator
        values["prior_beta"] = values["prior_weight"] = ()
    config = Seq2ExpConfig(**values, length=int(spec.length), signals=signals, n_features=int(n_features))
    return Seq2ExpModel(config)


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


# Reference module names (GeneBiMambaMIRNP's attributes; its Caduceus wraps the blocks in ``.backbone``)
# mapped to ours: (their prefix, our prefix, the names allowed after either). A Lightning checkpoint of
# the reference holds them under ``model.`` (the LightningModule's attribute).
_MAMBA = r"(in_proj\.weight|conv1d\.(weight|bias)|x_proj\.weight|dt_proj\.(weight|bias)|A_log|D|out_proj\.weight)"
_BACKBONE = rf"(layers\.\d+\.mixer\.mamba_(fwd|rev)\.{_MAMBA}|layers\.\d+\.norm\.weight|norm_f\.weight)"
_LINEAR = r"(weight|bias)"
_RULES = (
    ("seq_input_layer.", "seq_emb.", _LINEAR),
    ("signal_input_layer.", "sig_emb.", _LINEAR),
    ("generator.backbone.", "generator.", _BACKBONE),
    ("encoder.backbone.", "encoder.", _BACKBONE),
    ("mask_output.", "mask_output.", _LINEAR),
    ("pToExpr.", "head.", r"[024]\.(weight|bias)"),
    ("pos_emb", "pos_emb", ""),
    ("prior_weights", "prior_weights", ""),
    ("signal_betas", "signal_betas", ""),
)
#: keys whose axis runs over the signals, and that axis: the reference orders them as REFERENCE_SIGNALS
_SIGNAL_AXIS = {"sig_emb.weight": 1, "prior_weights": 0, "signal_betas": 0}
LIGHTNING_PREFIX = "model."


def _rename(name: str, source: int) -> str | None:
    """Map a key from one naming (source 0 = reference, 1 = ours) to the other; None if no rule fits."""
    for rule in _RULES:
        prefix, rest = rule[source], name[len(rule[source]):]
        if name.startswith(prefix) and re.fullmatch(rule[2], rest):
            return rule[1 - source] + rest
    return None


def _signal_order(signals: Sequence[str]) -> list[int]:
    if sorted(signals) != sorted(REFERENCE_SIGNALS):
        raise ValueError(f"seq2exp: reference weights hold signals {list(REFERENCE_SIGNALS)}, not {list(signals)}")
    return [REFERENCE_SIGNALS.index(s) for s in signals]


def reference_state_dict_to_ours(sd: Mapping[str, torch.Tensor], signals: Sequence[str] = REFERENCE_SIGNALS) -> dict:
    """A state dict of the reference ``GeneBiMambaMIRNP`` (bare, or a Lightning checkpoint's
    ``state_dict``, keys under ``model.``) -> one that loads into Seq2ExpModel.

    ``signals``: our channel order; the signal-indexed tensors are permuted from REFERENCE_SIGNALS to it.
    """
    perm = _signal_order(signals)
    out = {}
    for key in sd:
        ours = _rename(key[len(LIGHTNING_PREFIX):] if key.startswith(LIGHTNING_PREFIX) else key, 0)
        if ours is None:
            raise ValueError(f"seq2exp: no Seq2ExpModel module for reference key {key!r}")
        value = sd[key]
        if ours in _SIGNAL_AXIS:
            value = value.index_select(_SIGNAL_AXIS[ours], torch.tensor(perm))
        out[ours] = value
    return out


def ours_to_reference_state_dict(sd: Mapping[str, torch.Tensor], signals: Sequence[str] = REFERENCE_SIGNALS) -> dict:
    """Inverse of reference_state_dict_to_ours (bare reference names, no ``model.`` prefix)."""
    perm = _signal_order(signals)
    inverse = [perm.index(i) for i in range(len(perm))]
    out = {}
    for key, value in sd.items():
        theirs = _rename(key, 1)
        if theirs is None:
            raise ValueError(f"seq2exp: no reference module for key {key!r}")
        if key in _SIGNAL_AXIS:
            value = value.index_select(_SIGNAL_AXIS[key], torch.tensor(inverse))
        out[theirs] = value
    return out
