"""Sequence-only baselines of Table 1 (Seq2Exp's settings): HyenaDNA (prism.model.hyena) and Enformer
(prism.model.enformer, through enformer-pytorch): shapes, losses, gradients, the FFT long convolution,
causality, odd input lengths, pretrained loading from a local directory, and parameter counts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from prism.data import Batch
from prism.genes import DataError
from prism.model import enformer, hyena
from prism.model.prism import count_parameters
from prism.runs import ModelSpec

N_FEATURES = 9
TINY_HYENA = dict(hyena.DEFAULT_HP, d_model=16, n_layer=2, d_inner=32, filter_order=8, center_len=50)
TINY_ENFORMER = dict(enformer.DEFAULT_HP, dim=24, depth=1, heads=2, attn_dim_key=8, dim_divisible_by=4,
                     target_length=-1, head_dim=16)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on a busy 2-core machine two OpenMP threads make these tiny convolutions 50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def spec(length: int, signals=()) -> ModelSpec:
    return ModelSpec(length=length, signals=tuple(signals), K=0)


def make_batch(batch: int, length: int, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    seq = F.one_hot(torch.randint(0, 4, (batch, length), generator=g), 4).float()  # (B, L, 4)
    seq[:, :7] = 0.0  # a run of N, as the shards write it (zeros)
    return Batch(seq=seq, signals=torch.zeros(batch, 0, length), features=torch.randn(batch, N_FEATURES, generator=g),
                 target=torch.rand(batch, generator=g) * 3, index=torch.arange(batch))


def build(kind: str, length: int, **hp):
    module, base = (hyena, TINY_HYENA) if kind == "hyena" else (enformer, TINY_ENFORMER)
    return module.build({**base, **hp}, spec(length), N_FEATURES)


# --- both architectures: the model-module contract -------------------------------------------------------------

@pytest.mark.parametrize("kind,length", [("hyena", 300), ("enformer", 700)])
def test_contract_shapes_finite_loss_and_gradient_to_every_parameter(kind, length):
    torch.manual_seed(0)
    model = build(kind, length)
    model.train()
    b = make_batch(4, length)
    out = model.forward_batch(b, mode="train")
    assert out["pred"].shape == (4,) and out["pred"].dtype == torch.float32
    losses = model.loss(out, b.target)
    assert set(losses) == {"loss", "pred_loss"} and losses["loss"].ndim == 0 and torch.isfinite(losses["loss"])
    assert torch.allclose(losses["loss"], F.smooth_l1_loss(out["pred"], b.target))  # Seq2Exp's gene_pred loss
    losses["loss"].backward()
    # Enformer zero-initialises each attention output projection, so q, k, v get gradient from the second step on
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.zero_grad()
    model.loss(model.forward_batch(b, mode="train"), b.target)["loss"].backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert no_grad == []


@pytest.mark.parametrize("kind,length", [("hyena", 300), ("enformer", 700)])
def test_eval_is_deterministic_and_modes_are_checked(kind, length):
    model = build(kind, length).eval()
    b = make_batch(3, length)
    with torch.no_grad():
        a, c = model.forward_batch(b)["pred"], model.forward_batch(b, mode="eval")["pred"]
    assert torch.equal(a, c)
    with pytest.raises(ValueError, match="mode"):
        model.forward_batch(b, mode="test")


@pytest.mark.parametrize("kind", ["hyena", "enformer"])
def test_param_groups_cover_every_trainable_parameter_once(kind):
    model = build(kind, 700)
    decay, no_decay = model.param_groups(1e-6)
    assert decay["weight_decay"] == 1e-6 and no_decay["weight_decay"] == 0.0
    ids = [id(p) for g in (decay, no_decay) for p in g["params"]]
    assert len(ids) == len(set(ids)) == len({id(p) for p in model.parameters()})
    norms = (torch.nn.LayerNorm, torch.nn.modules.batchnorm._BatchNorm, hyena.HyenaFilter)
    expected_no_decay = {id(p) for m in model.modules() if isinstance(m, norms) for p in m.parameters()}
    expected_no_decay |= {id(p) for n, p in model.named_parameters() if n.endswith("bias")}
    assert {id(p) for p in no_decay["params"]} == expected_no_decay


@pytest.mark.parametrize("kind", ["hyena", "enformer"])
def test_sequence_only_and_hp_keys_checked(kind):
    module, base = (hyena, TINY_HYENA) if kind == "hyena" else (enformer, TINY_ENFORMER)
    with pytest.raises(ValueError, match="sequence-only"):
        module.build(dict(base), spec(700, ["dnase"]), N_FEATURES)
    with pytest.raises(ValueError, match="missing keys"):
        module.build({k: v for k, v in base.items() if k != "depth" and k != "n_layer"}, spec(700), N_FEATURES)
    with pytest.raises(ValueError, match="unknown keys"):
        module.build({**base, "lr_pos_emb": 0.0}, spec(700), N_FEATURES)


# --- HyenaDNA ---------------------------------------------------------------------------------------------------

def test_fft_long_conv_equals_direct_causal_convolution():
    g = torch.Generator().manual_seed(1)
    u = torch.randn(2, 3, 37, generator=g, dtype=torch.float64)  # (B, D, L)
    k = torch.randn(3, 37, generator=g, dtype=torch.float64)  # (D, L)
    direct = torch.zeros_like(u)
    for t in range(37):
        for s in range(t + 1):
            direct[..., t] += k[:, s] * u[..., t - s]
    out = hyena.fft_long_conv(u, k)
    assert out.dtype == torch.float64
    assert torch.allclose(out, direct, atol=1e-12, rtol=0)


def test_hyena_backbone_is_causal():
    torch.manual_seed(0)
    model = build("hyena", 120).double().eval()
    x = torch.randn(2, 120, 16, dtype=torch.float64)
    y = model.backbone(x)
    x2 = x.clone()
    x2[:, 70, 3] += 1.0  # change position 70 only (one channel: LayerNorm ignores a shift of all)
    y2 = model.backbone(x2)
    diff = (y - y2).abs().amax(dim=(0, 2))  # (L,)
    assert diff[:70].max() < 1e-12  # nothing before it moves (FFT round-off aside)
    assert diff[70:].min() > 1e-10  # and everything from it on does (small at GPT-2 init, far above round-off)


def test_hyena_operator_matches_its_definition():
    """Order 2, written out: y = out_proj(x1 * (h * (v x2) + D (v x2))) after the short causal conv."""
    torch.manual_seed(0)
    op = hyena.HyenaOperator(4, l_max=22, order=2, filter_order=8).double()
    u = torch.randn(1, 20, 4, dtype=torch.float64)
    z = op.in_proj(u).transpose(1, 2)  # (1, 12, 20)
    w = op.short_filter.weight[:, 0]  # (12, 3)
    zc = torch.stack([sum(w[:, j] * (z[..., t - 2 + j] if t - 2 + j >= 0 else 0) for j in range(3))
                      for t in range(20)], dim=-1) + op.short_filter.bias[:, None]
    x1, x2, v = zc.split(4, dim=1)
    h = op.filter_fn.filter(20)[0].t()  # (4, 20)
    g = v * x2
    conv = torch.stack([sum(h[:, s] * g[..., t - s] for s in range(t + 1)) for t in range(20)], dim=-1)
    expected = op.out_proj(((conv + g * op.filter_fn.bias[:, None]) * x1).transpose(1, 2))
    assert torch.allclose(op(u), expected, atol=1e-12)


def test_hyena_filter_positional_features_and_decay():
    pe = hyena.PositionalEmbedding(5, l_max=202)
    z, t = pe(200)
    assert z.shape == (1, 200, 5) and t.shape == (1, 200, 1)
    assert torch.allclose(z[0, :, 0], torch.linspace(0, 1, 202)[:200])  # time first
    assert torch.allclose(z[0, :, 1] ** 2 + z[0, :, 3] ** 2, torch.ones(200))  # cos^2 + sin^2, band 1
    mod = hyena.ExponentialModulation(8)
    window = mod(t, torch.ones(1, 200, 8))[0]  # (200, 8)
    assert torch.all(window[1:] <= window[:-1])  # decays along the sequence
    # the fastest channel has decayed to 1e-2 at t = 0.3, the slowest at t = 1.5 (beyond the end)
    assert math.isclose(float(torch.exp(-0.3 * mod.deltas.abs()[0, 0, -1])), 1e-2, rel_tol=1e-5)
    # fixed features are recomputed from l_max, never stored
    assert not any("pos_emb" in k or "deltas" in k for k in build("hyena", 300).state_dict())


def test_hyena_rejects_inputs_longer_than_its_filters():
    model = build("hyena", 100)  # l_max = 102, as Seq2Exp's seq_range + 2
    model.forward_batch(make_batch(1, 102))
    with pytest.raises(ValueError, match="l_max 102"):
        model.forward_batch(make_batch(1, 103))


def test_hyena_parameter_count_at_seq2exp_settings():
    """By hand (d = 128, 4 layers, d_inner 512, order 2, filter_order 64, emb_dim 5):
    per layer: in_proj 128*384+384 = 49,536; out_proj 16,512; short conv 384*3+384 = 1,536; implicit filter
    5*64+64 + 2*(64*64+64) + 64*128 + shared sine 64 + D 128 = 17,088; 2 LayerNorms 512; MLP 66,048 + 65,664
    -> 216,896; x 4 = 867,584; final LayerNorm 256; head (137*128+128) + (128*128+128) + 129 = 34,305;
    Seq2Exp's Embedding(12, 128) 1,536 -> 903,681 (GeneExpHyena); ours, Linear(4, 128) 640 -> 902,785."""
    model = hyena.build(dict(hyena.DEFAULT_HP), spec(200_000), N_FEATURES)
    assert count_parameters(model) == 902_785 == 903_681 - 12 * 128 + 5 * 128
    assert count_parameters(model, "head") == 34_305
    assert model.backbone.layers[0].mixer.l_max == 200_002


# --- Enformer ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [1001, 1234, 2047])  # odd, and not multiples of 128
def test_enformer_readout_for_lengths_not_multiple_of_128(length):
    torch.manual_seed(0)
    model = build("enformer", length, num_downsamples=7, target_length=5).eval()
    b = make_batch(2, length)
    bins = enformer.enformer_bins(length, 7)
    assert bins == math.ceil(length / 128)
    emb = model.enformer(b.seq, return_only_embeddings=True)
    assert emb.shape == (2, enformer.cropped_bins(bins, 5), 48)
    with torch.no_grad():
        pred = model.forward_batch(b)["pred"]
        expected = model.head(torch.cat([emb.mean(dim=1), b.features], dim=-1)).squeeze(-1)
    assert pred.shape == (2,) and torch.allclose(pred, expected)


def test_enformer_crops_the_central_window():
    """Inputs longer than ``window`` see only the central window (start (L - window) // 2), as Seq2Exp."""
    torch.manual_seed(0)
    model = build("enformer", 1001, window=640).eval()
    b = make_batch(2, 1001)
    start = (1001 - 640) // 2
    centre = Batch(seq=b.seq[:, start : start + 640], signals=b.signals[..., :640], features=b.features,
                   target=b.target, index=b.index)
    outside = b.seq.clone()
    outside[:, :start] = 0.0
    outside[:, start + 640 :] = 1.0
    with torch.no_grad():
        pred = model.forward_batch(b)["pred"]
        assert torch.equal(pred, model.forward_batch(centre)["pred"])
        assert torch.equal(pred, model(outside, b.features))


def test_enformer_settings_checked():
    with pytest.raises(ValueError, match="target_length 896"):
        build("enformer", 20_000, target_length=896)  # 157 bins at 20 kb
    with pytest.raises(ValueError, match="multiple of 6"):
        build("enformer", 700, dim=32, heads=2)
    with pytest.raises(ValueError, match="freeze needs"):
        build("enformer", 700, freeze=True)


def test_enformer_parameter_count_at_seq2exp_settings():
    """enformer-pytorch's defaults, as Seq2Exp's GeneEnformer builds them (``Enformer.from_hparams()``), by hand:
    stem 4*768*15+768 + BN 1,536 + 768^2+768 + pool 768^2 = 1,228,800; conv tower, widths 768 768 896 1024 1152 1280
    1536, each 2 din + 5 din dout + 4 dout + 2 dout^2 -> 49,649,152; transformer 11 x 15,840,256 = 174,242,816;
    final pointwise 3,072 + 1536*3072 + 3,072 = 4,724,736; trunk 229,845,504; head (3072+9)*128+128 + 128*128+128 +
    129 = 411,137 -> 230,256,641. Seq2Exp's module also holds the unread track heads, 3072*5313+5313 +
    3072*1643+1643 = 21,375,788, so it counts 251,632,429."""
    with torch.device("meta"):  # no memory for 230M parameters
        model = enformer.build(dict(enformer.DEFAULT_HP), spec(200_000), N_FEATURES)
    assert count_parameters(model, "enformer") == 229_845_504
    assert count_parameters(model, "head") == 411_137
    assert count_parameters(model) == 230_256_641 == 251_632_429 - 21_375_788
    assert len(model.enformer.heads) == 0
    assert enformer.enformer_bins(196_608, 7) == 1536 and enformer.cropped_bins(1536, 896) == 896


def _tiny_official_like(tmp_path):
    """A small Enformer written as the official repository is laid out (config.json + pytorch_model.bin)."""
    torch.manual_seed(3)
    trunk = enformer.Enformer.from_hparams(dim=24, depth=1, heads=2, attn_dim_key=8, num_downsamples=3,
                                           dim_divisible_by=4, target_length=-1, output_heads=dict(human=5))
    trunk.save_pretrained(tmp_path, safe_serialization=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(enformer.PRETRAINED["files"])
    return trunk


def test_load_pretrained_from_a_local_directory(tmp_path):
    trunk = _tiny_official_like(tmp_path)
    loaded = enformer.load_pretrained(tmp_path, use_tf_gamma=False)
    sd, sd2 = trunk.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert "human" in loaded.heads  # the official model comes whole
    hp = dict(TINY_ENFORMER, num_downsamples=3, pretrained=str(tmp_path), freeze=True)
    with pytest.raises(ValueError, match="1536 bins"):  # the TF gamma features exist for 196,608 bp only
        enformer.build(hp, spec(700), N_FEATURES)
    with pytest.raises(ValueError, match="depth = 2 but"):
        enformer.build(dict(hp, depth=2), spec(1536 * 8), N_FEATURES)
    model = enformer.build(hp, spec(1536 * 8), N_FEATURES)  # 1536 bins after 3 halvings
    assert len(model.enformer.heads) == 0
    assert all(torch.equal(p, sd[n]) for n, p in model.enformer.state_dict().items())
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == {"head"}  # frozen trunk
    x = make_batch(2, 300).seq
    trunk.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(trunk(x, return_only_embeddings=True), loaded(x, return_only_embeddings=True))


def test_load_pretrained_names_what_is_missing(tmp_path):
    with pytest.raises(DataError, match="config.json"):
        enformer.load_pretrained(tmp_path)
    _tiny_official_like(tmp_path)
    (tmp_path / "pytorch_model.bin").unlink()
    with pytest.raises(DataError, match="pytorch_model.bin"):
        enformer.load_pretrained(tmp_path)
