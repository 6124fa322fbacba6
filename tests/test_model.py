"""Prism model: parameter counts, shapes, tying, state_dict, losses, determinism, optimiser groups."""

import math

import pytest
import torch
import torch.nn.functional as F

from prism.model import CaduceusBackbone, Mamba, ModelConfig, PrismModel, count_parameters, uniform_loss

SMALL = dict(d_model=16, n_layer=1, d_state=4)  # shape tests: tiny backbone, same wiring


def inputs(batch, length, n_signals, n_features=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    seq = F.one_hot(torch.randint(0, 4, (batch, length), generator=g), 4).float()  # (B, L, 4)
    signals = torch.rand(batch, n_signals, length, generator=g)  # (B, n_signals, L)
    features = torch.randn(batch, n_features, generator=g)  # (B, n_features)
    return seq, signals, features


def test_parameter_counts_match_paper_table3():
    caduceus = count_parameters(PrismModel(K=0))
    caduceus_l1_zero = count_parameters(PrismModel(K=2, lambda1=0.0))
    prism = PrismModel()
    n_prism = count_parameters(prism)
    n_conf = count_parameters(prism, "confounder_encoder")
    print(f"Caduceus w/ signals: {caduceus}, Prism (K=2): {n_prism}, confounder encoder: {n_conf}")
    assert caduceus == caduceus_l1_zero == 574_721  # paper: 574K
    assert n_prism == 585_681  # paper: 585K
    assert n_conf == 10_960 == n_prism - caduceus  # paper: about 11K
    assert PrismModel(K=0).confounder_encoder is None


def test_mamba_parameter_names_and_shapes_match_mamba_ssm():
    m = Mamba(128)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "in_proj.weight": (512, 128),
        "conv1d.weight": (256, 1, 4),
        "conv1d.bias": (256,),
        "x_proj.weight": (8 + 32, 256),
        "dt_proj.weight": (256, 8),
        "dt_proj.bias": (256,),
        "A_log": (256, 16),
        "D": (256,),
        "out_proj.weight": (128, 256),
    }
    assert torch.equal(m.A_log, torch.log(torch.arange(1, 17.0)).repeat(256, 1))
    assert m.A_log._no_weight_decay and m.D._no_weight_decay and m.dt_proj.bias._no_reinit
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6


def test_backbone_init_and_tying():
    bb = CaduceusBackbone(32, n_layer=4)
    for layer in bb.layers:
        fwd, rev = layer.mixer.mamba_fwd, layer.mixer.mamba_rev
        assert rev.in_proj.weight is fwd.in_proj.weight and rev.out_proj.weight is fwd.out_proj.weight
        assert rev.x_proj.weight is not fwd.x_proj.weight and rev.A_log is not fwd.A_log
        # kaiming_uniform(a=sqrt(5)) bound is 1/sqrt(fan_in); rescaled by 1/sqrt(n_layer)
        assert fwd.out_proj.weight.abs().max() <= 1 / math.sqrt(64) / 2 + 1e-6
        assert fwd.conv1d.bias is not None and fwd.dt_proj.bias.abs().sum() > 0
    assert "layers.0.mixer.mamba_rev.in_proj.weight" in bb.state_dict()
    x = torch.randn(2, 10, 32)
    assert bb(x).shape == (2, 10, 32)


@pytest.mark.parametrize("K", range(7))
@pytest.mark.parametrize("n_signals", range(6))
def test_forward_shapes_K_and_signals(K, n_signals):
    model = PrismModel(K=K, n_signals=n_signals, **SMALL)
    out = model(*inputs(2, 100, n_signals))
    assert out["pred"].shape == (2,)
    if K > 0 and n_signals > 0:
        assert model.uses_confounder
        assert out["pred_intervention"].shape == (2,) and out["weights"].shape == (2, 16, K)
        assert ((out["weights"] > 0) & (out["weights"] < 1)).all()
    else:
        assert out["pred_intervention"] is None and out["weights"] is None
        assert model.confounder_encoder is None
    if n_signals == 0:
        assert model.sig_emb is None


@pytest.mark.parametrize("length", [100, 500, 2000, 2500])
def test_forward_shapes_lengths(length):
    model = PrismModel(d_model=8, n_layer=1, d_state=2)
    out = model(*inputs(1, length, 3))
    assert out["pred"].shape == out["pred_intervention"].shape == (1,)


def test_centre_pooling():
    model = PrismModel(**SMALL)
    hidden = torch.arange(2500.0)[None, :, None].expand(1, 2500, 3)  # (1, L, 3), value = position
    assert torch.allclose(model.pool(hidden), torch.full((1, 3), 250 + 1999 / 2))
    assert torch.allclose(model.pool(hidden[:, :300]), torch.full((1, 3), 299 / 2))


def test_copies_share_one_backbone_batch():
    model = PrismModel(K=3, **SMALL)
    seen = []
    model.backbone.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    model(*inputs(2, 100, 3))
    assert seen == [torch.Size([8, 100, 16])]  # B * (K + 1)


def test_softmax_weights_sum_to_one_over_d_model():
    """The authors' softmax option normalises each weight vector over d_model (BASELINES.md)."""
    model = PrismModel(K=3, weight_activation="softmax", **SMALL)
    w = model(*inputs(2, 100, 3))["weights"]  # (B, d_model, K)
    assert torch.allclose(w.sum(1), torch.ones(2, 3), atol=1e-6)


def test_float64_forward_and_gradcheck_of_the_whole_model():
    torch.manual_seed(0)
    model = PrismModel(d_model=4, n_layer=1, d_state=2, K=1, confounder_width=2).double().eval()
    seq, signals, features = (t.double() for t in inputs(1, 70, 3))
    out = model(seq, signals, features)
    assert out["pred"].dtype == torch.float64
    signals.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: model(seq, s, features)["pred_intervention"], (signals,),
                                    eps=1e-6, atol=1e-5, nondet_tol=1e-7)


def test_residual_stream_follows_autocast_unless_residual_in_fp32():
    seen = {}
    for fp32 in (False, True):
        model = PrismModel(residual_in_fp32=fp32, **SMALL)
        model.backbone.layers[0].register_forward_hook(lambda m, a, o, k=fp32: seen.__setitem__(k, o.dtype))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(*inputs(1, 100, 3))
    assert seen == {False: torch.bfloat16, True: torch.float32}


def test_signal_weights_scale_raw_signals():
    torch.manual_seed(0)
    model = PrismModel(**SMALL).eval()
    seq, signals, features = inputs(2, 100, 3)
    sw = torch.tensor([1.0, 0.0, 0.5])
    a = model(seq, signals, features, signal_weights=sw)["pred"]
    b = model(seq, signals * sw[:, None], features)["pred"]
    assert torch.allclose(a, b)


def test_state_dict_round_trip():
    torch.manual_seed(0)
    a = PrismModel(**SMALL).eval()
    torch.manual_seed(1)
    b = PrismModel(**SMALL).eval()
    x = inputs(2, 100, 3)
    assert not torch.allclose(a(*x)["pred"], b(*x)["pred"])
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(*x)["pred"], b(*x)["pred"])
    assert b.backbone.layers[0].mixer.mamba_rev.in_proj.weight is b.backbone.layers[0].mixer.mamba_fwd.in_proj.weight


def test_determinism():
    torch.manual_seed(7)
    a = PrismModel(**SMALL)
    torch.manual_seed(7)
    b = PrismModel(**SMALL)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_uniform_loss_prefers_distinct_vectors():
    e = torch.eye(8)
    orthogonal = torch.stack([e[0], e[1]], dim=-1)[None]  # (1, 8, 2)
    identical = torch.stack([e[0], e[0]], dim=-1)[None]
    lo, li = uniform_loss(orthogonal, 2.0), uniform_loss(identical, 2.0)
    assert torch.isclose(lo, torch.tensor(math.log(2 + 2 * math.exp(-4))))
    assert torch.isclose(li, torch.tensor(math.log(4.0)))
    assert lo < li
    assert torch.isfinite(uniform_loss(torch.zeros(3, 8, 2)))  # eps keeps all-zero weights finite


def test_loss_components_and_backward():
    torch.manual_seed(0)
    model = PrismModel(lambda1=0.5, lambda2=2.0, **SMALL)
    out = model(*inputs(3, 100, 3))
    y = torch.randn(3)
    parts = model.loss(out, y)
    assert torch.isclose(parts["pred_loss"], F.smooth_l1_loss(out["pred"], y))
    assert torch.isclose(parts["intervention_loss"], F.smooth_l1_loss(out["pred_intervention"], y))
    assert torch.isfinite(parts["uniform_loss"])
    total = parts["pred_loss"] + 0.5 * parts["intervention_loss"] + 2.0 * parts["uniform_loss"]
    assert torch.isclose(parts["loss"], total)
    parts["loss"].backward()
    assert model.confounder_encoder.proj.weight.grad.abs().sum() > 0

    plain = PrismModel(K=0, **SMALL)
    parts = plain.loss(plain(*inputs(3, 100, 3)), y)
    assert parts["intervention_loss"] == 0 and parts["uniform_loss"] == 0
    assert torch.equal(parts["loss"], parts["pred_loss"])


def test_param_groups():
    model = PrismModel(**SMALL)
    decay, no_decay = model.param_groups(1e-6)
    assert decay["weight_decay"] == 1e-6 and no_decay["weight_decay"] == 0.0
    ids_decay = {id(p) for p in decay["params"]}
    ids_no = {id(p) for p in no_decay["params"]}
    assert not ids_decay & ids_no
    assert sum(p.numel() for p in decay["params"] + no_decay["params"]) == count_parameters(model)
    mixer = model.backbone.layers[0].mixer.mamba_fwd
    for p in (mixer.A_log, mixer.D, mixer.dt_proj.bias, model.backbone.norm_f.weight,
              model.backbone.layers[0].norm.weight, model.confounder_encoder.cnn[1].weight, model.head[0].bias):
        assert id(p) in ids_no
    for p in (mixer.in_proj.weight, mixer.dt_proj.weight, model.seq_emb.weight, model.confounder_encoder.proj.weight):
        assert id(p) in ids_decay


def test_config_defaults_are_the_paper():
    c = ModelConfig()
    assert (c.d_model, c.n_layer, c.K, c.lambda1, c.lambda2, c.uniform_t, c.center_len) == (128, 4, 2, 1.0, 1.0, 2.0, 2000)


def test_prediction_without_intervention_copies_is_the_same():
    """Validation and testing skip the K weighted copies; copy 0 alone makes `pred` in eval mode."""
    torch.manual_seed(0)
    model = PrismModel(ModelConfig(d_model=16, n_layer=1, d_state=4, K=3)).eval()
    seq = torch.nn.functional.one_hot(torch.randint(0, 4, (2, 300)), 4).float()
    signals, features = torch.rand(2, 3, 300), torch.randn(2, 9)
    with torch.no_grad():
        full = model(seq, signals, features)
        fast = model(seq, signals, features, intervention=False)
    assert fast["pred_intervention"] is None and fast["weights"] is not None
    torch.testing.assert_close(fast["pred"], full["pred"], rtol=1e-5, atol=1e-6)
