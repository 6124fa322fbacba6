"""Seq2Exp (soft, hard) and its MACS3 variant: shapes, mask rules, prior, gradients, counts."""

import pytest
import torch
import torch.nn.functional as F

from prism.data import Batch
from prism.genes import DataError
from prism.model.prism import PrismModel, count_parameters
from prism.model.seq2exp import HP_KEYS, build
from prism.runs import ModelSpec

# Seq2Exp.sh's two runs over gene_express_bimamba_MI_RNP.yaml, and MACS3 (use_peak_mask) over the soft one
SOFT = dict(
    mask="learned", kl_loss_weight=0.01, prior_scale_factor=10.0, marginal_mean=0.1, marginal_scale=10.0,
    beta_min=1.0, prior_beta={"h3k27ac": 1.5, "dnase": 0.2, "hic": 1.0},
    prior_weight={"h3k27ac": 2.0, "dnase": 2.0, "hic": 1.0}, z_scale=1.0, decouple_x=True, sample_threshold=0.5,
    post_hard_dist=False, test_hard=False, enc_prd_ps=False, pos_enc=False,
)
HARD = {**SOFT, "prior_scale_factor": 1.0, "beta_min": 0.0, "marginal_mean": 0.45, "marginal_scale": 0.1,
        "test_hard": True, "post_hard_dist": True, "enc_prd_ps": True, "pos_enc": True}
MACS3 = {**SOFT, "mask": "macs3"}
PAPER = dict(d_model=128, n_layer=4, gen_n_layer=4, d_state=16, d_conv=4, expand=2, center_len=2000, init_n_layer=64)
TINY = dict(d_model=8, n_layer=1, gen_n_layer=1, d_state=4, d_conv=4, expand=2, center_len=100, init_n_layer=64)
SIGNALS = ("h3k27ac", "dnase", "hic")


def model(setting, length=400, signals=SIGNALS, seed=0, **hp):
    torch.manual_seed(seed)
    return build({**TINY, **setting, **hp}, ModelSpec(length=length, signals=signals), 9)


def inputs(batch=3, length=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    seq = F.one_hot(torch.randint(0, 4, (batch, length), generator=g), 4).float()  # (B, L, 4)
    signals = torch.rand(batch, 3, length, generator=g) * 4  # (B, 3, L), raw signal scale
    features = torch.randn(batch, 9, generator=g)
    blacklist = torch.zeros(batch, length, dtype=torch.bool)
    blacklist[:, 20:60] = True
    peaks = (torch.rand(batch, length, generator=g) < 0.3).float()
    return seq, signals, features, blacklist, peaks


def centre_slice(length, center_len):
    n = min(center_len, length)
    start = (length - n) // 2
    return slice(start, start + n)


@pytest.mark.parametrize("setting", [SOFT, HARD, MACS3], ids=["soft", "hard", "macs3"])
def test_forward_batch_shapes_and_finite_loss(setting):
    m = model(setting)
    seq, signals, features, blacklist, peaks = inputs()
    batch = Batch(seq, signals, features, torch.rand(3), torch.arange(3), extra={"blacklist": blacklist, "peaks": peaks})
    for mode in ("train", "eval"):
        out = m.forward_batch(batch, mode)
        assert out["pred"].shape == (3,) and out["mask"].shape == (3, 400)
        losses = m.loss(out, batch.target)
        assert set(losses) == {"loss", "pred_loss", "kl_loss", "kl_divergence", "mask_mean"}
        assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
        assert torch.allclose(losses["loss"], losses["pred_loss"] + losses["kl_loss"])
    with pytest.raises(ValueError, match="mode"):
        m.forward_batch(batch, "test")


@pytest.mark.parametrize("setting", [SOFT, HARD], ids=["soft", "hard"])
def test_gradients_reach_generator_and_encoder(setting):
    m = model(setting)
    seq, signals, features, blacklist, _ = inputs()
    out = m(seq, signals, features, blacklist=blacklist, sample=True)
    m.loss(out, torch.rand(3))["loss"].backward()
    for part in ("generator", "mask_output", "encoder", "seq_emb", "sig_emb", "head"):
        grads = [p.grad for p in getattr(m, part).parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), part
        assert sum(g.abs().sum() for g in grads) > 0, part
    assert (m.encoder is m.generator) == setting["enc_prd_ps"]


@pytest.mark.parametrize("setting", [SOFT, HARD], ids=["soft", "hard"])
@pytest.mark.parametrize("length,center_len", [(400, 100), (2400, 2000), (1500, 2000)])
def test_centre_never_masked_blacklist_always_masked(setting, length, center_len):
    m = model(setting, length=length, center_len=center_len)
    seq, signals, features, blacklist, _ = inputs(length=length)
    blacklist[:, length // 2] = True  # inside the centre: the centre wins, as the reference's order
    centre = centre_slice(length, center_len)
    for sample in (True, False):
        mask = m(seq, signals, features, blacklist=blacklist, sample=sample)["mask"]
        assert (mask[:, centre] == 1).all()
        outside = blacklist.clone()
        outside[:, centre] = False
        assert outside.any() == (length > center_len)
        assert (mask[outside] == 0).all()


def test_eval_is_deterministic_and_training_samples():
    for setting in (SOFT, HARD):
        m = model(setting)
        seq, signals, features, blacklist, _ = inputs()
        a, b = (m(seq, signals, features, blacklist=blacklist) for _ in range(2))
        assert torch.equal(a["pred"], b["pred"]) and torch.equal(a["mask"], b["mask"])
        s1, s2 = (m(seq, signals, features, blacklist=blacklist, sample=True)["mask"] for _ in range(2))
        assert not torch.equal(s1, s2)


def test_soft_and_hard_masks():
    """soft: train = Beta sample, eval = Beta mean; hard: both thresholded at sample_threshold (0/1)."""
    seq, signals, features, _, _ = inputs()
    side = torch.ones(400, dtype=torch.bool)
    side[centre_slice(400, 100)] = False
    soft = model(SOFT)
    soft_train = soft(seq, signals, features, sample=True)["mask"][:, side]
    assert ((soft_train > 0) & (soft_train < 1)).all() and soft_train.unique().numel() > 100
    soft_eval = soft(seq, signals, features)["mask"][:, side]
    soft.config.test_hard = True  # the same weights, the hard test-time rule
    thresholded = soft(seq, signals, features)["mask"][:, side]
    assert torch.equal(thresholded, (soft_eval >= 0.5).float())
    assert 0 < thresholded.mean() < 1
    hard = model(HARD)
    for sample in (True, False):
        mask = hard(seq, signals, features, sample=sample)["mask"]
        assert set(mask.unique().tolist()) <= {0.0, 1.0}


def test_soft_prior_and_kl_follow_the_reference_formulas():
    """Soft: signals reach the mask only through the prior Beta((s + 1) * 10, (b + 1) * 10), weights 2:2:1."""
    m = model(SOFT).eval()
    seq, signals, features, _, _ = inputs(batch=2)
    with torch.no_grad():
        logits = m.mask_output(m.generator(m.seq_emb(seq)))  # the generator reads the sequence only
        a = F.softplus(logits[..., 1]) + 1.0
        b = F.softplus(logits[..., 0]) + 1.0
        w = torch.tensor([0.4, 0.4, 0.2])
        alpha = a + ((signals + 1.0) * 10.0 * w[None, :, None]).sum(dim=1)
        beta = b + ((torch.tensor([1.5, 0.2, 1.0]) + 1.0) * 10.0 * w).sum()
        out = m(seq, signals, features)
    side = torch.ones(400, dtype=torch.bool)
    side[centre_slice(400, 100)] = False
    assert torch.allclose(out["mask"][:, side], (alpha / (alpha + beta))[:, side], atol=1e-6)
    # KL(Beta(alpha, beta) || Beta(10, 90)), the marginal with mean 0.1 and scale 10, averaged over all bases
    a2, b2 = torch.tensor(10.0), torch.tensor(90.0)
    lbeta = lambda x, y: torch.lgamma(x) + torch.lgamma(y) - torch.lgamma(x + y)  # noqa: E731
    kl = (lbeta(a2, b2) - lbeta(alpha, beta) + (alpha - a2) * torch.digamma(alpha) + (beta - b2) * torch.digamma(beta)
          + (a2 - alpha + b2 - beta) * torch.digamma(alpha + beta))
    assert torch.allclose(out["kl"], kl.mean(), rtol=1e-4)
    # a high signal at one base raises the mask there and nowhere else
    bumped = signals.clone()
    bumped[:, 1, 5] += 50.0
    with torch.no_grad():
        mask2 = m(seq, bumped, features)["mask"]
    changed = (mask2 != out["mask"]).any(dim=0)
    assert changed.nonzero().flatten().tolist() == [5] and (mask2[:, 5] > out["mask"][:, 5]).all()


def test_decouple_x_false_uses_the_posterior_and_per_signal_kl():
    m = model(SOFT, decouple_x=False)
    seq, signals, features, _, _ = inputs()
    out = m(seq, signals, features)
    assert torch.isfinite(out["kl"]) and out["kl"] > 0
    with torch.no_grad():  # the mask ignores the signals: only the KL sees the prior
        out2 = m(seq, signals * 3, features)
    assert torch.equal(out["mask"], out2["mask"]) and not torch.equal(out["kl"], out2["kl"])


def test_straight_through_gradient_and_packed_hard_encoder():
    """Hard without pos_enc: the prediction loss reaches mask_output through the straight-through mask.
    With pos_enc (the paper's hard run) the mask only selects bases, so only the KL reaches it."""
    seq, signals, features, _, _ = inputs()
    for pos_enc, reaches in ((False, True), (True, False)):
        m = model(HARD, pos_enc=pos_enc)
        out = m(seq, signals, features, sample=True)
        F.smooth_l1_loss(out["pred"], torch.rand(3)).backward()
        grad = m.mask_output.weight.grad
        assert (grad is not None and grad.abs().sum() > 0) == reaches


def test_packed_encoder_reads_only_kept_bases():
    """pos_enc: each row's kept bases, in order, zero-padded at the end to the batch's longest row;
    the central window is pooled where it lands in the packed row."""
    m = model(HARD).eval()
    seq, signals, features, blacklist, _ = inputs(batch=2)
    blacklist[1, 250:] = True  # rows of different kept lengths
    with torch.no_grad():
        out = m(seq, signals, features, blacklist=blacklist)
        keep = out["mask"] == 1
        counts = keep.sum(dim=1)
        assert counts[0] > counts[1]
        x = m.seq_emb(seq) + m.pos_emb + m.sig_emb(signals.transpose(1, 2))  # (B, L, D)
        centre = centre_slice(400, 100)
        for b in range(2):
            row = torch.cat([x[b][keep[b]], x.new_zeros(int(counts.max() - counts[b]), 8)])[None]  # (1, n, D)
            hidden = m.encoder(row)
            offset = int(keep[b, : centre.start].sum())
            pooled = hidden[0, offset : offset + 100].mean(dim=0)
            assert torch.allclose(out["pred"][b], m.head(torch.cat([pooled, features[b]]))[0], atol=1e-6)


def test_macs3_mask_is_the_peaks_as_given():
    m = model(MACS3)
    assert m.generator is None and m.mask_output is None
    assert not any(k.startswith(("generator", "mask_output", "prior", "signal_betas")) for k in m.state_dict())
    seq, signals, features, blacklist, peaks = inputs()
    for sample in (True, False):
        out = m(seq, signals, features, blacklist=blacklist, peaks=peaks, sample=sample)
        assert torch.equal(out["mask"], peaks) and out["kl"] == 0
    # bases outside the peaks never reach the encoder
    other = seq.clone()
    other[peaks == 0] = torch.tensor([0.0, 0.0, 0.0, 1.0])
    noisy = signals.clone()
    noisy[(peaks == 0)[:, None].expand_as(signals)] = 7.0
    with torch.no_grad():
        assert torch.allclose(m(other, noisy, features, peaks=peaks)["pred"], m(seq, signals, features, peaks=peaks)["pred"])
    with pytest.raises(DataError, match="peaks"):
        m(seq, signals, features)


def one_line_error(exc_info):
    return "\n" not in str(exc_info.value)


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"mask": "dnase"}, "mask must be"),
        ({"pos_enc": True}, "pos_enc"),  # soft sampling with packed input
        ({**HARD, "test_hard": False}, "pos_enc"),
        ({**MACS3, "enc_prd_ps": True}, "enc_prd_ps"),
        ({**MACS3, "pos_enc": True}, "pos_enc"),
        ({**HARD, "gen_n_layer": 2}, "gen_n_layer"),
        ({"marginal_mean": 1.0}, "marginal_mean"),
        ({"sample_threshold": 0.0}, "sample_threshold"),
        ({"prior_scale_factor": 0.0}, "prior_scale_factor"),
        ({"prior_weight": {"h3k27ac": 2.0, "dnase": 0.0, "hic": 1.0}}, "prior_weight of 'dnase'"),
        ({"prior_beta": {"h3k27ac": 1.5, "dnase": 0.2}}, "no value for signal 'hic'"),
        ({"d_model": 0}, "d_model"),
        ({"dist_param_grad": True}, "unknown hp key 'dist_param_grad'"),
    ],
)
def test_build_refuses_inconsistent_hp(bad, match):
    with pytest.raises(ValueError, match=match) as exc_info:
        build({**TINY, **SOFT, **bad}, ModelSpec(length=400), 9)
    assert one_line_error(exc_info)


def test_build_needs_every_key_and_signals_the_prior_knows():
    hp = {**TINY, **SOFT}
    assert set(hp) == set(HP_KEYS)
    with pytest.raises(ValueError, match="lacks 'kl_loss_weight'") as exc_info:
        build({k: v for k, v in hp.items() if k != "kl_loss_weight"}, ModelSpec(length=400), 9)
    assert one_line_error(exc_info)
    with pytest.raises(ValueError, match="no value for signal 'h3k4me3'") as exc_info:
        build(hp, ModelSpec(length=400, signals=("h3k27ac", "dnase", "h3k4me3")), 9)
    assert one_line_error(exc_info)
    with pytest.raises(ValueError, match="at least one signal"):
        build(hp, ModelSpec(length=400, signals=(), K=0), 9)
    # a subset of the prior's signals, in another order: weights renormalised over those present
    m = build(hp, ModelSpec(length=400, signals=("hic", "h3k27ac")), 9)
    assert torch.allclose(torch.softmax(m.prior_weights, 0), torch.tensor([1 / 3, 2 / 3]))
    assert torch.equal(m.signal_betas, torch.tensor([1.0, 1.5]))
    assert build({**TINY, **MACS3}, ModelSpec(length=400, signals=(), K=0), 9).sig_emb is None


def test_parameter_counts_at_the_paper_configuration():
    """d_model 128, 4 + 4 layers, L = 200,000, 3 signals, 9 features (trainable; tied weights once)."""
    spec = ModelSpec(length=200_000, signals=SIGNALS)
    soft, hard, macs3 = (build({**PAPER, **s}, spec, 9) for s in (SOFT, HARD, MACS3))
    n_soft, n_hard, n_macs3 = (count_parameters(m) for m in (soft, hard, macs3))
    caduceus_with_signals = count_parameters(PrismModel(K=0))  # 574,721
    backbone = count_parameters(soft, "generator")
    print(f"soft {n_soft}, hard {n_hard} (pos_emb {hard.pos_emb.numel()}), macs3 {n_macs3}, backbone {backbone}")
    assert backbone == 539_264
    # paper Table 3: 1.1M; BASELINES.md's 1,114,249 also counts the 6 fixed prior values (buffers here)
    assert n_soft == 1_114_243 == caduceus_with_signals + backbone + 258
    assert n_soft + sum(b.numel() for b in soft.buffers()) == 1_114_249
    # hard: one shared backbone (enc_prd_ps) plus a 200,000 x 128 positional embedding
    assert hard.pos_emb.numel() == 25_600_000
    assert n_hard == 26_174_979 == caduceus_with_signals + 258 + 25_600_000
    # MACS3: no generator, so exactly Caduceus w/ signals
    assert n_macs3 == caduceus_with_signals == 574_721


def test_init_as_the_reference_post_init():
    m = model(SOFT, n_layer=2, gen_n_layer=2)
    for lin in (m.seq_emb, m.sig_emb, m.mask_output, m.head[0], m.head[2], m.head[4]):
        assert torch.equal(lin.bias, torch.zeros_like(lin.bias))
    out_proj = m.encoder.layers[0].mixer.mamba_fwd.out_proj.weight  # kaiming bound 1/sqrt(16), / sqrt(64)
    assert out_proj.abs().max() <= 1 / 4 / 8 + 1e-7 and out_proj.abs().max() > 1 / 4 / 8 / 2
    assert torch.equal(model(HARD).pos_emb, torch.zeros(1, 400, 8))


def test_param_groups():
    m = model(HARD)
    groups = m.param_groups(1e-6)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(m.parameters()))
    no_decay = {id(p) for p in groups[1]["params"]}
    mamba = m.encoder.layers[0].mixer.mamba_fwd
    assert {id(mamba.A_log), id(mamba.D), id(m.encoder.norm_f.weight), id(m.mask_output.bias)} <= no_decay
    assert id(m.pos_emb) not in no_decay and id(m.mask_output.weight) not in no_decay


# The reference's state-dict layout (their checkpoints in and out) is tested in tests/test_released.py.
