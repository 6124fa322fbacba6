"""EPInformer model: parameter count at the paper's settings, shapes, attention mask, loss, optimiser groups."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prism.data import Batch
from prism.model.epinformer import DEFAULTS, EPInformer, build, load_reference_state_dict, promoter_star_mask
from prism.runs import ModelSpec


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small convolutions: one thread ran 20x faster than two on a shared 2-core machine (measured)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


#: forward tests use a small model (same wiring): the paper's size takes seconds per gene on CPU
SMALL = dict(n_elements=4, element_length=400, d_model=32, n_layer=2, n_head=2)


def count(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def elements(batch: int, n_real: list[int], n_elements: int = 4, length: int = 400, seed: int = 0):
    """(seq, feat, mask) with gene b holding the promoter plus n_real[b] - 1 enhancers, the rest padding."""
    g = torch.Generator().manual_seed(seed)
    E = n_elements + 1
    seq = F.one_hot(torch.randint(0, 4, (batch, E, length), generator=g), 4).float()  # (B, E, L, 4)
    feat = torch.rand(batch, E, 3, generator=g)  # (B, E, 3)
    mask = torch.zeros(batch, E, dtype=torch.bool)
    for b, n in enumerate(n_real):
        seq[b, n:], feat[b, n:] = 0.0, 0.0
        mask[b, :n] = True
    feat[:, 0] = 0.0
    return seq, feat, mask


def batch_of(seq, feat, mask, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    B = seq.shape[0]
    return Batch(seq=torch.zeros(B, 400, 4), signals=torch.zeros(B, 3, 400), features=torch.randn(B, 9, generator=g),
                 target=torch.rand(B, generator=g), index=torch.arange(B),
                 extra={"elements_seq": seq, "elements_feat": feat, "elements_mask": mask})


def test_parameter_count_at_the_paper_settings():
    """447,341 = EPInformer_v2(out_dim=64, n_encoder=3, head=4, n_enhancers=60, n_extraFeat=3, usePromoterSignal=True).

    Source: the layer shapes of pinellolab/EPInformer EPInformer/models.py (= divelab/AIRS
    OpenBio/Seq2Exp/src/models/sequence/EPInformer.py), counted per module below; instantiating that
    class gives the same 447,341 and the same outputs and gradients with the same weights.
    """
    model = build(dict(DEFAULTS), ModelSpec(), 9)
    parts = {name: count(getattr(model, name)) for name in
             ("seq_encoder", "seq_projector", "feature_fusion", "interaction_encoder", "head")}
    assert parts == {
        # stem 4*256*8+256; blocks (conv k3 + BN + 1x1) 256->128: 98,432+256+16,512, 128->64: 24,640+128+4,160,
        # 64->64: 12,352+128+4,160, 64->128: 24,704+256+16,512
        "seq_encoder": 8_448 + 115_200 + 28_928 + 16_640 + 41_472,
        # dilated convs 24,640 + 12,352 + 12,352, 1x1 2,080, four BNs 128*3 + 64, Linear(101, 2) 204
        "seq_projector": 24_640 + 12_352 + 12_352 + 2_080 + 3 * 128 + 64 + 204,
        "feature_fusion": (67 * 64 + 64) + (64 * 64 + 64),
        # per layer: attention 3*64*64+192 + 64*64+64, two LayerNorms 256, FF 64*256+256 + 256*64+64
        "interaction_encoder": 3 * (16_640 + 256 + 33_088),
        "head": (73 * 128 + 128) + (128 * 128 + 128) + 129,
    }
    assert sum(parts.values()) == count(model) == 447_341
    # the lighter variants differ only in the fusion's input width
    assert count(EPInformer(n_extra_features=2)) == 447_341 - 64
    assert count(EPInformer(n_extra_features=1)) == 447_341 - 128


def test_forward_shapes_and_padding_is_ignored():
    torch.manual_seed(0)
    model = EPInformer(**SMALL).eval()
    seq, feat, mask = elements(3, [5, 3, 1])
    # genes 3 and 4 repeat gene 1: with junk in its padding features, and with one real enhancer changed
    seq = torch.cat([seq, seq[1:2], seq[1:2].clone()])
    feat = torch.cat([feat, feat[1:2].clone(), feat[1:2]])
    mask = torch.cat([mask, mask[1:2], mask[1:2]])
    feat[3, 3:] = 5.0  # padding slots' features (their one-hot stays empty, so they stay padding)
    seq[4, 2] = F.one_hot(torch.full((400,), 2), 4).float()  # a real enhancer's sequence: all G
    batch = batch_of(seq, feat, mask)
    batch.features[3:] = batch.features[1]
    with torch.no_grad():
        out = model.forward_batch(batch)
    assert out["pred"].shape == (5,) and out["attention"].shape == (2, 5, 5, 5)
    # padding slots get no attention from anyone; an enhancer attends only to itself and the promoter
    att = out["attention"]
    assert torch.all(att[:, 1, :, 3:] == 0) and torch.all(att[:, 2, :, 1:] == 0)
    star = promoter_star_mask(5)
    assert torch.all(att[:, 0][:, star] == 0) and torch.all(att[:, 0][:, ~star] > 0)
    assert torch.allclose(att.sum(-1), torch.ones(2, 5, 5))
    # a gene's prediction depends on its real elements only (BatchNorm in eval mode)
    pred = out["pred"]
    torch.testing.assert_close(pred[3], pred[1], rtol=0, atol=1e-6)
    assert abs(pred[4] - pred[1]) > 1e-5


@pytest.mark.parametrize("n_extra", [1, 2, 3])
def test_variants_read_their_feature_columns(n_extra):
    """EPInformer-PE reads distance, -Activity adds activity, -Activity-HiC adds Hi-C (column 1)."""
    torch.manual_seed(0)
    model = EPInformer(n_extra_features=n_extra, **SMALL).eval()
    seq, feat, mask = elements(2, [5, 3])
    feat.requires_grad_(True)
    model(seq, feat, mask, torch.randn(2, 9))["pred"].sum().backward()
    used = feat.grad[:, 1:3].abs().sum(dim=(0, 1)) > 0  # (3,) over real enhancers
    assert used.tolist() == [c in {1: [0], 2: [0, 2], 3: [0, 1, 2]}[n_extra] for c in range(3)]


def test_loss_backward_and_param_groups():
    torch.manual_seed(0)
    model = EPInformer(**SMALL)
    batch = batch_of(*elements(3, [5, 2, 1]))
    out = model.forward_batch(batch, mode="train")
    parts = model.loss(out, batch.target)
    assert torch.isclose(parts["loss"], F.smooth_l1_loss(out["pred"], batch.target)) and parts["pred_loss"] is parts["loss"]
    parts["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())
    decay, no_decay = model.param_groups(1e-6)
    assert decay["weight_decay"] == 1e-6 and no_decay["weight_decay"] == 0.0
    ids = [id(p) for p in decay["params"] + no_decay["params"]]
    assert len(ids) == len(set(ids)) and sum(p.numel() for p in decay["params"] + no_decay["params"]) == count(model)
    layer = model.interaction_encoder[0]
    no = {id(p) for p in no_decay["params"]}
    for p in (layer.self_attn.in_proj_bias, layer.norm1.weight, model.seq_projector[1].weight, model.head[0].bias):
        assert id(p) in no
    for p in (layer.self_attn.in_proj_weight, model.seq_encoder.stem[0].weight, model.head[0].weight):
        assert id(p) not in no


BACK = {"seq_encoder.stem.": "seq_encoder.stem_conv.", "seq_encoder.tower.": "seq_encoder.conv_tower.",
        "seq_projector.": "conv_out.", "feature_fusion.": "add_pos_conv.", "interaction_encoder.": "attn_encoder.",
        "head.": "pToExpr."}


def reference_names(state: dict) -> dict:
    """Our state dict under the reference EPInformer_v2's module names."""
    out = {}
    for k, v in state.items():
        for ours, ref in BACK.items():
            if k.startswith(ours):
                k = ref + k[len(ours):]
                break
        out[k] = v
    return out


def test_state_dict_round_trip_by_reference_names():
    """A state dict under the reference's module names (EPInformer_v2) loads through REFERENCE_PREFIXES."""
    shapes = {k: tuple(v.shape) for k, v in reference_names(EPInformer().state_dict()).items()}
    # a few of the reference's keys and shapes (EPInformer_v2 at the paper's settings)
    assert shapes["seq_encoder.stem_conv.0.weight"] == (256, 4, 1, 8)
    assert shapes["seq_encoder.conv_tower.6.1.running_var"] == (128,)
    assert shapes["conv_out.12.weight"] == (2, 101) and shapes["add_pos_conv.0.weight"] == (64, 67, 1)
    assert shapes["attn_encoder.2.self_attn.in_proj_weight"] == (192, 64) and shapes["pToExpr.0.weight"] == (128, 73)
    assert len(shapes) == 114  # the reference has 114 keys; the key sets are the same
    torch.manual_seed(0)
    a = EPInformer(**SMALL).eval()
    torch.manual_seed(1)
    b = EPInformer(**SMALL).eval()
    load_reference_state_dict(b, reference_names(a.state_dict()))
    seq, feat, mask = elements(2, [5, 3])
    features = torch.randn(2, 9)
    with torch.no_grad():
        assert torch.equal(a(seq, feat, mask, features)["pred"], b(seq, feat, mask, features)["pred"])


def test_bad_settings_and_inputs():
    with pytest.raises(ValueError, match="unknown hyper-parameter 'heads'"):
        build({"heads": 4}, ModelSpec(), 9)
    with pytest.raises(ValueError, match="n_extra_features"):
        EPInformer(n_extra_features=4)
    with pytest.raises(ValueError, match="multiple of 32"):
        EPInformer(d_model=48)
    with pytest.raises(ValueError, match="element_length"):
        EPInformer(element_length=392)
    model = EPInformer(**SMALL)
    seq, feat, mask = elements(2, [5, 3])
    with pytest.raises(ValueError, match="elements_seq is"):
        model.forward_batch(batch_of(*elements(2, [3, 3], n_elements=5)))
    b = batch_of(seq, feat, mask)
    b.extra.pop("elements_mask")
    with pytest.raises(ValueError, match="elements_mask"):
        model.forward_batch(b)
