"""prism.released: the authors' Lightning checkpoints (Prism's and Seq2Exp's) and pretrained Caduceus, in and out.

The "authors' checkpoint" here is built from our model's tensors placed in a module tree with the
attribute names of their public code (GeneExpformer.Prism, or Seq2Exp's GeneBiMambaMIRNP, inside
SequenceLightningModule.model), saved like Lightning 1.8 does: hyper_parameters is a real OmegaConf
DictConfig of their Hydra config.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml
from omegaconf import OmegaConf

from prism.data import Batch
from prism.evaluate import build_model, load_model
from prism.genes import DataError
from prism.model import CaduceusBackbone, PrismModel, count_parameters
from prism.model.seq2exp import Seq2ExpModel, ours_to_reference_state_dict
from prism.model.seq2exp import build as seq2exp_build
from prism.model.seq2exp import import_reference_checkpoint as import_seq2exp_checkpoint
from prism.model.seq2exp import reference_key_shapes as seq2exp_reference_key_shapes
from prism.model.seq2exp import reference_state_dict_to_ours as seq2exp_reference_state_dict_to_ours
from prism.released import (
    CADUCEUS_TOKEN_IDS,
    export_reference_state_dict,
    import_run,
    load_pretrained_caduceus,
    load_reference_checkpoint,
    load_reference_model,
    read_reference_checkpoint,
    reference_key_shapes,
)
from prism.runs import ModelSpec, Run
from prism.shards import one_hot


class _Namespace(nn.Module):
    pass


def their_module_tree(ours: PrismModel) -> nn.Module:
    """Our submodules under the attribute names of their SequenceLightningModule.model (a GeneExpformer.Prism)."""
    prism = _Namespace()
    prism.caduceus = _Namespace()
    prism.caduceus.backbone = ours.backbone
    prism.seq_input_layer = ours.seq_emb
    prism.signal_input_layer = ours.sig_emb
    if ours.confounder_encoder is not None:
        prism.weight_generator = _Namespace()
        prism.weight_generator.cnn_encoder = ours.confounder_encoder.cnn
        prism.weight_generator.weight_projector = nn.Sequential(ours.confounder_encoder.proj)
    prism.pToExpr = ours.head
    lightning = _Namespace()
    lightning.model = prism
    return lightning


def their_hydra_config(K: int = 2, prism: bool = True, d_model: int = 128, n_layer: int = 4):
    """The parts of their composed config (prism.yaml + gene_express.yaml + test.sh) the mapper reads."""
    weight = 1.0 if prism else 0.0
    return OmegaConf.create({
        "train": {"seed": 22, "monitor": "val/mse", "gpu_mem": "${eval:'round(1)'}"},
        "dataset": {"_name_": "promo_enhan_inter", "cell_type": "K562", "expr_type": "CAGE", "seq_range": 2000,
                    "pretrained_model": False},
        "task": {"_name_": "extract_rationale",
                 "loss": {"_name_": "extract_rationale_loss", "intervention_loss_weight": weight,
                          "uniform_loss_weight": weight}},
        "model": {"_name_": "Prism", "config": {
            "_target_": "caduceus.configuration_caduceus.CaduceusConfig",
            "d_model": d_model, "n_layer": n_layer, "center_len": 2000, "base_size": 4, "signal_size": 3,
            "weight_act": "sigmoid", "intervention_loss_weight": weight, "rna_feat_dim": 9, "useRNAFeat": True,
            "vocab_size": 12, "seq_range": "${dataset.seq_range}",
            "pretrained_model": "${dataset.pretrained_model}",
            "ssm_cfg": {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": "auto", "dt_min": 0.001, "dt_max": 0.1,
                        "dt_init": "random", "dt_scale": 1.0, "dt_init_floor": 1e-4, "conv_bias": True,
                        "bias": False, "use_fast_path": True},
            "rms_norm": True, "fused_add_norm": True, "residual_in_fp32": False, "norm_epsilon": 1e-5,
            "initializer_cfg": {"initializer_range": 0.02, "rescale_prenorm_residual": True},
            "bidirectional": True, "bidirectional_strategy": "add", "bidirectional_weight_tie": True,
            "rcps": False, "complement_map": None, "n_context": K, "cnn_dim": 8}},
        "optimizer": {"lr": 5e-4, "weight_decay": 1e-6, "betas": [0.9, 0.95]},
    })


def write_their_checkpoint(path, ours: PrismModel, hparams=None, state_dict=None) -> dict:
    """A Lightning-1.8-style .ckpt of their module tree holding our tensors; returns its state_dict."""
    state = their_module_tree(ours).state_dict() if state_dict is None else state_dict
    params = list(ours.parameters())
    # AdamW's state_dict layout (built by hand: constructing an optimizer first imports torch._dynamo, seconds)
    opt_state = {"state": {i: {"step": torch.tensor(31250.0), "exp_avg": torch.zeros_like(p),
                               "exp_avg_sq": torch.zeros_like(p)} for i, p in enumerate(params)},
                 "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 1e-6,
                                   "amsgrad": False, "params": list(range(len(params)))}]}
    ckpt = {
        "epoch": 7, "global_step": 31250, "pytorch-lightning_version": "1.8.6", "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 8, "completed": 7}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val/mse', 'mode': 'min'}": {
            "monitor": "val/mse", "best_model_score": torch.tensor(0.21), "best_model_path": "/x/mse.ckpt",
            "best_k_models": {"/x/mse.ckpt": torch.tensor(0.21)}, "dirpath": "/x"}},
        "optimizer_states": [opt_state],
        "lr_schedulers": [{"t_initial": 45000, "warmup_t": 5000, "base_values": [5e-4], "noise_range_t": None}],
    }
    if hparams is not None:
        ckpt.update({"hparams_name": "config", "hyper_parameters": hparams, "hparams_type": type(hparams)})
    torch.save(ckpt, path)
    return state


@pytest.fixture(scope="module")
def prism_model():
    torch.manual_seed(0)
    model = PrismModel(K=2)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so they are checked too
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(31250)
    return model.eval()


def test_their_key_lists_match_ours_with_no_key_left_over(prism_model):
    theirs_k2 = reference_key_shapes(K=2, prism=True)
    theirs_k0 = reference_key_shapes(prism=False)
    assert len(theirs_k2) == 110 and len(theirs_k0) == 87  # BASELINES.md's counts, derived here from their modules
    # the module tree of their code holds exactly these keys, with the Lightning prefix, in this order
    tree = their_module_tree(prism_model).state_dict()
    assert list(tree) == ["model." + k for k in theirs_k2]
    assert {k: tuple(v.shape) for k, v in tree.items()} == {"model." + k: s for k, s in theirs_k2.items()}
    caduceus = PrismModel(K=0)
    assert list(their_module_tree(caduceus).state_dict()) == ["model." + k for k in theirs_k0]
    # and renamed, exactly our state dicts: nothing left over on either side
    for model, theirs in ((prism_model, theirs_k2), (caduceus, theirs_k0)):
        exported = export_reference_state_dict(model.state_dict(), lightning_prefix=False)
        assert list(exported) == list(theirs)
        assert len(model.state_dict()) == len(theirs)


def test_authors_checkpoint_loads_into_our_model(tmp_path, prism_model):
    path = tmp_path / "mse-2025-01-30+Fold11.ckpt"
    state = write_their_checkpoint(path, prism_model, their_hydra_config(K=2))
    logs = []
    ours, model_cfg, settings = load_reference_checkpoint(path, log=logs.append)
    assert settings == {"length": 2000, "signals": ["h3k27ac", "dnase", "hic"], "K": 2, "lambda1": 1.0,
                        "lambda2": 1.0, "retention": 1.0}
    assert model_cfg == {"d_model": 128, "n_layer": 4, "d_state": 16, "d_conv": 4, "expand": 2,
                         "confounder_width": 8, "center_len": 2000}
    assert ModelSpec.from_settings(settings).model_id == "L2000_h3k27ac+dnase+hic_K2_l1-1_l2-1"
    model = build_model({"kind": "prism", "model": model_cfg}, ModelSpec.from_settings(settings))
    model.load_state_dict(ours, strict=True)
    model.eval()
    loaded = model.state_dict()
    for key, tensor in state.items():
        assert torch.equal(loaded[key.replace("model.", "", 1)
                                              .replace("caduceus.backbone.", "backbone.")
                                              .replace("seq_input_layer.", "seq_emb.")
                                              .replace("signal_input_layer.", "sig_emb.")
                                              .replace("weight_generator.cnn_encoder.", "confounder_encoder.cnn.")
                                              .replace("weight_generator.weight_projector.0.", "confounder_encoder.proj.")
                                              .replace("pToExpr.", "head.")], tensor), key


def test_a_smaller_checkpoint_says_what_model_it_is_and_computes_the_same(tmp_path):
    torch.manual_seed(5)
    source = PrismModel(d_model=16, n_layer=1, K=3).eval()
    path = tmp_path / "small.ckpt"
    write_their_checkpoint(path, source, their_hydra_config(K=3, d_model=16, n_layer=1))
    ours, model_cfg, settings = load_reference_checkpoint(path, log=lambda m: None)
    assert (model_cfg["d_model"], model_cfg["n_layer"], settings["K"]) == (16, 1, 3)
    model = build_model({"kind": "prism", "model": model_cfg}, ModelSpec.from_settings(settings))
    model.load_state_dict(ours, strict=True)
    model.eval()
    g = torch.Generator().manual_seed(1)
    seq = torch.from_numpy(one_hot(torch.randint(0, 5, (2, 64), generator=g).numpy().astype("uint8")))
    sig, feat = torch.rand(2, 3, 64, generator=g), torch.randn(2, 9, generator=g)
    with torch.no_grad():
        a, b = source(seq, sig, feat), model(seq, sig, feat)
    assert torch.equal(a["pred"], b["pred"]) and torch.equal(a["pred_intervention"], b["pred_intervention"])


def test_reference_model_for_evaluation(tmp_path, prism_model):
    path = tmp_path / "mse-2025-01-30_10-00-00+Fold11.ckpt"
    write_their_checkpoint(path, prism_model, their_hydra_config())
    model, meta = load_reference_model(path, log=lambda m: None)
    assert not model.training and meta["spec"]["K"] == 2 and meta["model_cfg"]["d_model"] == 128
    assert meta["reference"] == {"cell": "K562", "seed": 22, "epoch": 7, "global_step": 31250,
                                 "pytorch-lightning_version": "1.8.6", "hparams_name": "config"}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), prism_model.state_dict().values()))


def test_checkpoint_metadata_and_no_code_runs(tmp_path, prism_model, monkeypatch):
    path = tmp_path / "a.ckpt"
    write_their_checkpoint(path, prism_model, their_hydra_config())
    for mod in ("omegaconf", "omegaconf.dictconfig", "omegaconf.listconfig", "omegaconf.base", "omegaconf.nodes"):
        monkeypatch.setitem(sys.modules, mod, None)  # read as if OmegaConf were not installed: no class of it runs
    ckpt = read_reference_checkpoint(path)
    assert ckpt.meta == {"epoch": 7, "global_step": 31250, "pytorch-lightning_version": "1.8.6",
                         "hparams_name": "config"}
    hp = ckpt.hparams
    assert hp["model"]["config"]["seq_range"] == "${dataset.seq_range}"  # unresolved, as stored
    assert hp["model"]["config"]["ssm_cfg"]["dt_init_floor"] == 1e-4
    assert hp["optimizer"]["betas"] == [0.9, 0.95] and hp["model"]["config"]["complement_map"] is None
    assert all(isinstance(k, str) for k in ckpt.state_dict)


def test_caduceus_with_signals_checkpoint(tmp_path):
    torch.manual_seed(3)
    model = PrismModel(K=0)
    path = tmp_path / "caduceus.ckpt"
    write_their_checkpoint(path, model, their_hydra_config(K=4, prism=False))
    ours, model_cfg, settings = load_reference_checkpoint(path, log=lambda m: None)
    assert len(ours) == 87 and settings["K"] == 0 and settings["lambda1"] == 0.0
    build_model({"kind": "prism", "model": model_cfg}, ModelSpec.from_settings(settings)).load_state_dict(ours, strict=True)


def test_export_then_import_gives_identical_tensors(tmp_path, prism_model):
    exported = export_reference_state_dict(prism_model.state_dict())
    assert all(k.startswith("model.") for k in exported) and len(exported) == 110
    path = tmp_path / "exported.ckpt"
    write_their_checkpoint(path, prism_model, their_hydra_config(), state_dict=exported)
    back, _, _ = load_reference_checkpoint(path, log=lambda m: None)
    original = prism_model.state_dict()
    assert sorted(back) == sorted(original)
    for key in original:
        assert back[key].dtype == original[key].dtype and torch.equal(back[key], original[key]), key


def test_without_hparams_the_released_settings_are_assumed(tmp_path, prism_model):
    path = tmp_path / "bare.ckpt"
    write_their_checkpoint(path, prism_model)
    logs = []
    _, model_cfg, settings = load_reference_checkpoint(path, log=logs.append)
    assert settings["K"] == 2 and model_cfg["d_model"] == 128
    assert any("no hyper_parameters" in line for line in logs)


def _one_line_refusal(path, match):
    with pytest.raises(DataError) as err:
        load_reference_checkpoint(path, log=lambda m: None)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    assert match in msg, msg
    return msg


def test_missing_extra_and_misshaped_keys_are_refused_in_one_line(tmp_path, prism_model):
    good = their_module_tree(prism_model).state_dict()
    hp = their_hydra_config()
    key = "model.caduceus.backbone.layers.2.mixer.mamba_rev.dt_proj.bias"

    missing = {k: v for k, v in good.items() if k != key}
    write_their_checkpoint(tmp_path / "missing.ckpt", prism_model, hp, state_dict=missing)
    msg = _one_line_refusal(tmp_path / "missing.ckpt", "'caduceus.backbone.layers.2.mixer.mamba_rev.dt_proj.bias'")
    assert "shape nothing in the checkpoint" in msg and "needs (256)" in msg and "Prism K=2" in msg

    extra = {**good, "model.caduceus.backbone.embeddings.word_embeddings.weight": torch.zeros(16, 128)}
    write_their_checkpoint(tmp_path / "extra.ckpt", prism_model, hp, state_dict=extra)
    msg = _one_line_refusal(tmp_path / "extra.ckpt", "'caduceus.backbone.embeddings.word_embeddings.weight'")
    assert "has shape (16, 128) in the checkpoint" in msg and "needs nothing" in msg

    bad = dict(good)
    bad["model.pToExpr.0.weight"] = torch.zeros(128, 131)  # a head built for 3 features, not 9
    write_their_checkpoint(tmp_path / "shape.ckpt", prism_model, hp, state_dict=bad)
    msg = _one_line_refusal(tmp_path / "shape.ckpt", "'pToExpr.0.weight' has shape (128, 131)")
    assert "needs (128, 137)" in msg

    # a checkpoint claiming d_model 256 (its hparams) but holding 128-wide tensors
    write_their_checkpoint(tmp_path / "claim.ckpt", prism_model, their_hydra_config(d_model=256))
    msg = _one_line_refusal(tmp_path / "claim.ckpt", "has shape (256, 16) in the checkpoint")
    assert "d_model 256" in msg and "needs (512, 16)" in msg

    untied = dict(good)
    untied["model.caduceus.backbone.layers.0.mixer.mamba_rev.in_proj.weight"] = torch.zeros(512, 128)
    write_their_checkpoint(tmp_path / "untied.ckpt", prism_model, hp, state_dict=untied)
    _one_line_refusal(tmp_path / "untied.ckpt", "differs from its tied twin")

    unprefixed = {k[len("model."):]: v for k, v in good.items()}
    write_their_checkpoint(tmp_path / "noprefix.ckpt", prism_model, hp, state_dict=unprefixed)
    _one_line_refusal(tmp_path / "noprefix.ckpt", "lacks the Lightning module's prefix 'model.'")


def test_settings_our_model_cannot_express_are_refused(tmp_path, prism_model):
    hp = their_hydra_config()
    hp.model.config.weight_act = "softmax"  # they normalise over d_model, ours over K
    write_their_checkpoint(tmp_path / "softmax.ckpt", prism_model, hp)
    with pytest.raises(ValueError, match=r"model.config.weight_act is 'softmax'"):
        load_reference_checkpoint(tmp_path / "softmax.ckpt", log=lambda m: None)


def test_unexpected_pickled_object_is_refused_naming_it(tmp_path, prism_model):
    path = tmp_path / "odd.ckpt"
    state = their_module_tree(prism_model).state_dict()
    torch.save({"state_dict": state, "callbacks": {"Timer": {"elapsed": __import__("fractions").Fraction(1, 3)}}},
               path)
    with pytest.raises(DataError, match=r"holds fractions.Fraction, which weights_only loading refuses"):
        read_reference_checkpoint(path)
    assert read_reference_checkpoint(path, trusted=True).state_dict.keys() == {k[6:] for k in state}


# ------------------------------------------------------------------------------ pretrained Caduceus


def write_hf_caduceus(model_dir, *, d_model=32, n_layer=2, fmt="safetensors", rcps=False, seed=0):
    """A kuleshov-group style repository: config.json plus CaduceusForMaskedLM weights (random values)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["CaduceusForMaskedLM"], "model_type": "caduceus", "d_model": d_model,
        "n_layer": n_layer, "vocab_size": 16, "pad_vocab_size_multiple": 8, "rms_norm": True,
        "residual_in_fp32": False, "fused_add_norm": True, "norm_epsilon": 1e-5,
        "ssm_cfg": {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": "auto", "dt_min": 0.001, "dt_max": 0.1,
                    "dt_init": "random", "dt_scale": 1.0, "dt_init_floor": 1e-4, "conv_bias": True, "bias": False,
                    "use_fast_path": True},
        "bidirectional": True, "bidirectional_strategy": "add", "bidirectional_weight_tie": True, "rcps": rcps,
        "complement_map": {str(i): i for i in range(16)}, "initializer_cfg": {"initializer_range": 0.02},
    }
    (model_dir / "config.json").write_text(json.dumps(config))
    torch.manual_seed(seed)
    backbone = CaduceusBackbone(d_model, n_layer)
    state = {"caduceus.backbone.embeddings.word_embeddings.weight": torch.randn(16, d_model)}
    state.update({f"caduceus.backbone.{k}": v.clone() for k, v in backbone.state_dict().items()})
    state["lm_head.weight"] = state["caduceus.backbone.embeddings.word_embeddings.weight"]
    if fmt == "safetensors":
        from safetensors.torch import save_file

        # safetensors keeps one name per shared tensor (transformers drops the later ones on save)
        for k in [k for k in state if ".mamba_rev.in_proj." in k or ".mamba_rev.out_proj." in k]:
            del state[k]
        del state["lm_head.weight"]
        save_file(state, str(model_dir / "model.safetensors"))
    else:
        torch.save(state, model_dir / "pytorch_model.bin")
    return backbone, state["caduceus.backbone.embeddings.word_embeddings.weight"]


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_pretrained_caduceus_maps_onto_our_backbone(tmp_path, fmt):
    source, emb = write_hf_caduceus(tmp_path / "hf", fmt=fmt)
    backbone_state, seq_emb_state, cfg = load_pretrained_caduceus(tmp_path / "hf")
    assert cfg["d_model"] == 32 and cfg["n_layer"] == 2 and cfg["dt_rank"] == "auto"
    backbone = CaduceusBackbone(**cfg)
    backbone.load_state_dict(backbone_state, strict=True)
    for key, value in source.state_dict().items():
        assert torch.equal(backbone.state_dict()[key], value), key
    # seq_emb on a one-hot base is exactly their embedding row, bit for bit
    seq_emb = nn.Linear(4, 32)
    seq_emb.load_state_dict(seq_emb_state)
    x = torch.eye(4)[None]  # (1, 4, 4): A, C, G, T
    with torch.no_grad():
        got = seq_emb(x)[0]
    want = emb[[CADUCEUS_TOKEN_IDS[b] for b in "ACGT"]]
    assert torch.equal(got, want)
    # N: ours is all zeros -> 0; theirs is the N row
    with torch.no_grad():
        assert torch.equal(seq_emb(torch.zeros(1, 4)), torch.zeros(1, 32))
    assert not torch.equal(emb[CADUCEUS_TOKEN_IDS["N"]], torch.zeros(32))


def test_pretrained_caduceus_n_token_bias(tmp_path):
    _, emb = write_hf_caduceus(tmp_path / "hf")
    _, seq_emb_state, _ = load_pretrained_caduceus(tmp_path / "hf", n_token_bias=True)
    seq_emb = nn.Linear(4, 32)
    seq_emb.load_state_dict(seq_emb_state)
    with torch.no_grad():
        got = seq_emb(torch.cat([torch.eye(4), torch.zeros(1, 4)]))  # A, C, G, T, N
    want = emb[[CADUCEUS_TOKEN_IDS[b] for b in "ACGTN"]]
    assert torch.equal(got[4], want[4])  # N exactly
    torch.testing.assert_close(got[:4], want[:4], rtol=0, atol=1e-6)  # bases to float32 rounding


def test_pretrained_caduceus_as_prism_backbone(tmp_path):
    write_hf_caduceus(tmp_path / "hf", d_model=32, n_layer=2)
    backbone_state, seq_emb_state, cfg = load_pretrained_caduceus(tmp_path / "hf")
    model = PrismModel(d_model=cfg["d_model"], n_layer=cfg["n_layer"], d_state=cfg["d_state"], d_conv=cfg["d_conv"],
                       expand=cfg["expand"])
    model.backbone.load_state_dict(backbone_state, strict=True)
    model.seq_emb.load_state_dict(seq_emb_state, strict=True)


def test_pretrained_caduceus_refusals(tmp_path):
    write_hf_caduceus(tmp_path / "ps", rcps=True)
    with pytest.raises(ValueError, match="rcps is true"):
        load_pretrained_caduceus(tmp_path / "ps")

    write_hf_caduceus(tmp_path / "bad")
    cfg = json.loads((tmp_path / "bad" / "config.json").read_text())
    cfg["n_layer"] = 3  # claims a layer the weights do not have
    (tmp_path / "bad" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DataError) as err:
        load_pretrained_caduceus(tmp_path / "bad")
    msg = str(err.value)
    assert "model.safetensors" in msg and "'caduceus.backbone.layers.2.mixer.mamba_fwd.A_log' has shape nothing" in msg
    assert "needs (64, 16)" in msg and "\n" not in msg

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text(json.dumps({"d_model": 8, "n_layer": 1}))
    with pytest.raises(DataError, match="neither model.safetensors nor pytorch_model.bin"):
        load_pretrained_caduceus(tmp_path / "empty")


def test_parameter_count_of_the_131k_caduceus_ph():
    """d_model 256, 16 layers (the -ph 131k model's config): the backbone, tied weights once, plus the embedding."""
    with torch.device("meta"):  # shapes only
        backbone = CaduceusBackbone(256, 16)
    n = count_parameters(backbone)
    d_inner, rank = 512, math.ceil(256 / 16)
    # each direction's own: conv1d (weight, bias), x_proj, dt_proj (weight, bias), A_log, D
    per_mamba_own = d_inner * 4 + d_inner + (rank + 32) * d_inner + rank * d_inner + d_inner + d_inner * 16 + d_inner
    shared = 2 * d_inner * 256 + 256 * d_inner  # in_proj + out_proj, once per layer (tied)
    assert n == 16 * (shared + 2 * per_mamba_own + 256) + 256  # + each layer's norm, + norm_f
    assert n == 7_721_216
    assert n + 4 * 256 + 256 == 7_722_496  # with our seq_emb Linear(4, 256) in place of their 16-row embedding


# ------------------------------------------------------------------------- into the workflow's runs


def test_a_prism_checkpoint_imported_as_a_run_computes_as_the_source(tmp_path):
    torch.manual_seed(8)
    source = PrismModel(d_model=16, n_layer=1, K=2).eval()
    path = tmp_path / "mse-2025-01-30+Fold11.ckpt"
    write_their_checkpoint(path, source, their_hydra_config(K=2, d_model=16, n_layer=1))
    arch = {"name": "prism-released", "kind": "prism", "released": "prism-authors",
            "model": {"d_model": 16, "n_layer": 1, "d_state": 16, "d_conv": 4, "expand": 2, "confounder_width": 8,
                      "center_len": 2000, "weight_activation": "sigmoid", "residual_in_fp32": False,
                      "bidirectional": True}}
    spec = ModelSpec.from_settings({"arch": "prism-released", "length": 2000})
    meta = import_run(path, Run(("K562",), spec, 22), arch, tmp_path / "run" / "model.pt", log=lambda m: None)
    assert meta["reference"] == {"cell": "K562", "seed": 22} and meta["source"] == str(path)
    model, _ = load_model(tmp_path / "run" / "model.pt")
    g = torch.Generator().manual_seed(1)
    seq = torch.from_numpy(one_hot(torch.randint(0, 5, (2, 64), generator=g).numpy().astype("uint8")))
    sig, feat = torch.rand(2, 3, 64, generator=g), torch.randn(2, 9, generator=g)
    with torch.no_grad():
        assert torch.equal(source(seq, sig, feat)["pred"], model(seq, sig, feat)["pred"])
    # the run it is imported as must be the model it holds
    other = Run(("K562",), ModelSpec.from_settings({"arch": "prism-released", "length": 2000, "K": 3}), 22)
    with pytest.raises(DataError, match=r"the checkpoint is prism-released_L2000_h3k27ac\+dnase\+hic_K2_l1-1_l2-1, "
                                        r"but run results/runs/K562/prism-released_L2000_h3k27ac\+dnase\+hic_K3"):
        import_run(path, other, arch, tmp_path / "other.pt", log=lambda m: None)


# ---------------------------------------------------------------- Seq2Exp's released checkpoints

S2E_SIGNALS = ("h3k27ac", "dnase", "hic")
#: Seq2Exp.sh's soft and hard runs (over configs/model/gene_express_bimamba_MI_RNP.yaml), in our hp names
S2E_SOFT = dict(mask="learned", kl_loss_weight=0.01, prior_scale_factor=10.0, marginal_mean=0.1, marginal_scale=10.0,
                beta_min=1.0, prior_beta={"h3k27ac": 1.5, "dnase": 0.2, "hic": 1.0},
                prior_weight={"h3k27ac": 2.0, "dnase": 2.0, "hic": 1.0}, z_scale=1.0, decouple_x=True,
                sample_threshold=0.5, post_hard_dist=False, test_hard=False, enc_prd_ps=False, pos_enc=False)
S2E_HARD = {**S2E_SOFT, "prior_scale_factor": 1.0, "beta_min": 0.0, "marginal_mean": 0.45, "marginal_scale": 0.1,
            "test_hard": True, "post_hard_dist": True, "enc_prd_ps": True, "pos_enc": True}
S2E_MACS3 = {**S2E_SOFT, "mask": "macs3"}  # use_peak_mask: MACS3 DNase peaks instead of the learned mask
S2E_PAPER = dict(d_model=128, n_layer=4, gen_n_layer=4, d_state=16, d_conv=4, expand=2, center_len=2000,
                 init_n_layer=64)
S2E_DEMO = dict(d_model=16, n_layer=1, gen_n_layer=1, d_state=8, d_conv=4, expand=2, center_len=100, init_n_layer=64)


def seq2exp(setting=S2E_SOFT, sizes=S2E_DEMO, length=400, seed=0, signals=S2E_SIGNALS):
    torch.manual_seed(seed)
    return seq2exp_build({**sizes, **setting}, ModelSpec(length=length, signals=signals), 9).eval()


def their_seq2exp_tree(ours: Seq2ExpModel) -> nn.Module:
    """Our tensors under the attribute names of their SequenceLightningModule.model (a GeneBiMambaMIRNP),
    registered in the order its __init__ registers them (prior_weights, signal_betas, pos_emb: Parameters)."""
    c = ours.config
    m = _Namespace()
    m.seq_input_layer = ours.seq_emb
    m.signal_input_layer = ours.sig_emb
    if c.pos_enc:
        m.pos_emb = ours.pos_emb
    if ours.learned:
        m.generator = _Namespace()
        m.generator.backbone = ours.generator
        m.prior_weights = nn.Parameter(ours.prior_weights.clone(), requires_grad=False)
        m.signal_betas = nn.Parameter(ours.signal_betas.clone(), requires_grad=False)
        m.mask_output = ours.mask_output
    if c.enc_prd_ps:
        m.encoder = m.generator  # parameter sharing: the same module under a second name
    else:
        m.encoder = _Namespace()
        m.encoder.backbone = ours.encoder
    m.pToExpr = ours.head
    lightning = _Namespace()
    lightning.model = m
    return lightning


def their_seq2exp_config(setting=S2E_SOFT, sizes=S2E_DEMO, seq_range=400, cell="K562", seed=2222):
    """Their composed config (gene_express.yaml + gene_express_bimamba_MI_RNP.yaml + extract_rationale.yaml,
    with Seq2Exp.sh's overrides), the parts that name the model, as a real OmegaConf DictConfig."""
    hard = setting["test_hard"]
    return OmegaConf.create({
        "train": {"seed": seed, "monitor": "val/mse", "single_CV": 11, "gpu_mem": "${eval:'round(1)'}"},
        "dataset": {"_name_": "promo_enhan_inter", "cell_type": cell, "expr_type": "CAGE", "seq_range": seq_range,
                    "pretrained_model": False, "blacklist_ver": "v1"},
        "task": {"_name_": "extract_rationale",
                 "loss": {"_name_": "extract_rationale_loss", "select_weight": 0.0, "continuity_weight": 0.0,
                          "bio_mask_weight": 0.0, "kl_loss_weight": setting["kl_loss_weight"]}},
        "model": {"_name_": "BiMambaMIRNP", "config": {
            "_target_": "caduceus.configuration_caduceus.CaduceusConfig", "d_model": sizes["d_model"],
            "enc_n_layer": sizes["n_layer"], "gen_n_layer": "${.enc_n_layer}", "center_len": sizes["center_len"],
            "pretrained_model": "${dataset.pretrained_model}", "interact": "concat", "gen_signal": False,
            "prior_signal": "all", "prior_beta": "1.5,0.2,1.0", "prior_weight": "2,2,1",
            "prior_scale_factor": setting["prior_scale_factor"], "merge_peak_mask": False, "max_pool_size": 0,
            "post_sample": True, "sample_threshold": 0.5, "post_dist": "beta", "post_hard_dist": hard,
            "decouple_x": True, "only_x_sig": False, "use_include_list": False,
            "marginal_mean": setting["marginal_mean"], "marginal_scale": setting["marginal_scale"],
            "use_bio_mask": False, "use_peak_mask": setting["mask"] == "macs3", "dist_param_grad": False,
            "use_mask_model": False,
            "enc_prd_ps": hard, "pos_enc": hard, "pool_mask": 0, "beta_min": setting["beta_min"], "z_scale": 1.0,
            "test_top": False, "test_top_percent": "${.marginal_mean}", "test_soft": not hard, "test_hard": hard,
            "base_size": 4, "signal_size": 3, "rna_feat_dim": 9, "useRNAFeat": True, "vocab_size": 12,
            "ssm_cfg": {"d_state": sizes["d_state"], "d_conv": sizes["d_conv"], "expand": sizes["expand"],
                        "dt_rank": "auto", "dt_min": 0.001, "dt_max": 0.1, "dt_init": "random", "dt_scale": 1.0,
                        "dt_init_floor": 1e-4, "conv_bias": True, "bias": False, "use_fast_path": True},
            "rms_norm": True, "fused_add_norm": True, "residual_in_fp32": False, "pad_vocab_size_multiple": 8,
            "norm_epsilon": 1e-5, "bidirectional": True, "bidirectional_strategy": "add",
            "bidirectional_weight_tie": True, "rcps": False, "complement_map": None,
            "seq_range": "${dataset.seq_range}"}},
    })


def s2e_arch(setting=S2E_SOFT, sizes=S2E_DEMO):
    return {"name": "seq2exp-released", "kind": "seq2exp", "released": "seq2exp-authors",
            "model": {**sizes, **setting}}


def s2e_run(length=400, seed=2222):
    return Run(("K562",), ModelSpec.from_settings({"arch": "seq2exp-released", "length": length}, confounder=False),
               seed)


@pytest.mark.parametrize("setting,n_keys", [(S2E_SOFT, 168), (S2E_HARD, 169), (S2E_MACS3, 87)],
                         ids=["soft", "hard", "macs3"])
def test_their_seq2exp_key_list_matches_ours_with_no_key_left_over(setting, n_keys):
    with torch.device("meta"):  # the paper's sizes at 200 kb: shapes only
        ours = seq2exp(setting, S2E_PAPER, length=200_000)
    theirs = seq2exp_reference_key_shapes(ours.config)
    assert len(theirs) == n_keys  # soft: 4 + 2 prior + 2 x 79 (generator, encoder) + 2 mask_output + 6 pToExpr
    tree = their_seq2exp_tree(ours).state_dict()
    assert list(tree) == ["model." + k for k in theirs]
    assert {k: tuple(v.shape) for k, v in tree.items()} == {"model." + k: s for k, s in theirs.items()}
    exported = ours_to_reference_state_dict(ours.state_dict())
    assert list(exported) == list(theirs) and len(ours.state_dict()) == n_keys
    assert {k: tuple(v.shape) for k, v in exported.items()} == theirs
    if setting["pos_enc"]:
        assert theirs["pos_emb"] == (1, 200_000, 128) and list(theirs)[0] == "pos_emb"
    if setting is S2E_SOFT:
        # trainable parameters at the paper's settings (paper Table 3: 1.1M); mamba_rev's in/out projections are
        # mamba_fwd's (listed twice in the file, 8 layers), and their two prior vectors are fixed (6 values)
        tied = 8 * (2 * 256 * 128 + 128 * 256)
        assert sum(math.prod(s) for s in theirs.values()) - tied == 1_114_249 == count_parameters(ours) + 6


def write_their_seq2exp_checkpoint(path, ours: Seq2ExpModel, hparams=None, state_dict=None) -> dict:
    """A Lightning-1.8-style .ckpt of their module tree holding our tensors; returns its state_dict."""
    state = their_seq2exp_tree(ours).state_dict() if state_dict is None else state_dict
    ckpt = {"epoch": 4, "global_step": 25000, "pytorch-lightning_version": "1.8.6", "state_dict": state,
            "callbacks": {"ModelCheckpoint{'monitor': 'val/mse', 'mode': 'min'}": {"best_model_score": torch.tensor(0.2)}},
            "optimizer_states": [], "lr_schedulers": []}
    if hparams is not None:
        ckpt.update({"hparams_name": "config", "hyper_parameters": hparams, "hparams_type": type(hparams)})
    torch.save(ckpt, path)
    return state


def s2e_inputs(length=400, batch=3):
    g = torch.Generator().manual_seed(4)
    seq = torch.from_numpy(one_hot(torch.randint(0, 5, (batch, length), generator=g).numpy().astype("uint8")))
    blacklist = torch.zeros(batch, length, dtype=torch.bool)
    blacklist[:, 10:30] = True
    peaks = (torch.rand(batch, length, generator=g) < 0.3).float()
    return Batch(seq, torch.rand(batch, 3, length, generator=g) * 3, torch.randn(batch, 9, generator=g),
                 torch.rand(batch), torch.arange(batch), extra={"blacklist": blacklist, "peaks": peaks})


@pytest.mark.parametrize("setting", [S2E_SOFT, S2E_HARD, S2E_MACS3], ids=["soft", "hard", "macs3"])
def test_their_seq2exp_checkpoint_imported_as_a_run_computes_as_the_source(tmp_path, setting):
    source = seq2exp(setting, seed=3)
    path = tmp_path / "mse-2025-02-03_00-00-00+Fold11.ckpt"
    write_their_seq2exp_checkpoint(path, source, their_seq2exp_config(setting))
    logs = []
    meta = import_run(path, s2e_run(), s2e_arch(setting), tmp_path / "run" / "model.pt", log=logs.append)
    assert meta["reference"] == {"cell": "K562", "seed": 2222} and meta["parameters"] == count_parameters(source)
    assert any("imported" in line and "seq2exp-released_L400_h3k27ac+dnase+hic" in line for line in logs)
    model, _ = load_model(tmp_path / "run" / "model.pt")
    batch = s2e_inputs()
    with torch.no_grad():
        a, b = source.forward_batch(batch), model.forward_batch(batch)
    assert torch.equal(a["pred"], b["pred"]) and torch.equal(a["mask"], b["mask"])


def test_seq2exp_export_then_import_gives_identical_tensors(tmp_path):
    source = seq2exp(seed=5)
    exported = ours_to_reference_state_dict(source.state_dict(), lightning_prefix=True)
    assert all(k.startswith("model.") for k in exported) and len(exported) == len(source.state_dict())
    path = tmp_path / "exported.ckpt"
    write_their_seq2exp_checkpoint(path, source, their_seq2exp_config(), state_dict=exported)
    got = import_seq2exp_checkpoint(read_reference_checkpoint(path), name=str(path), log=lambda m: None)
    assert got.settings == {"length": 400, "signals": list(S2E_SIGNALS)}
    assert got.hp == {k: v for k, v in {**S2E_DEMO, **S2E_SOFT}.items() if k != "init_n_layer"}
    original = source.state_dict()
    assert list(got.state_dict) == list(original)
    for key in original:
        assert got.state_dict[key].dtype == original[key].dtype and torch.equal(got.state_dict[key], original[key]), key


def _s2e_refusal(tmp_path, fname, state=None, hparams=None, source=None):
    source = seq2exp(seed=6) if source is None else source
    path = tmp_path / fname
    write_their_seq2exp_checkpoint(path, source, hparams or their_seq2exp_config(), state_dict=state)
    with pytest.raises(DataError) as err:
        import_run(path, s2e_run(), s2e_arch(), tmp_path / f"{fname}.pt", log=lambda m: None)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path))
    assert not (tmp_path / f"{fname}.pt").exists()
    return msg


def test_seq2exp_keys_or_shapes_that_do_not_fit_are_refused_in_one_line(tmp_path):
    source = seq2exp(seed=6)
    good = their_seq2exp_tree(source).state_dict()

    bad = {**good, "model.mask_output.weight": torch.zeros(3, 16)}  # a three-way posterior head
    msg = _s2e_refusal(tmp_path, "shape.ckpt", bad, source=source)
    assert "key 'mask_output.weight' has shape (3, 16) in the checkpoint" in msg and "needs (2, 16)" in msg
    assert "Seq2Exp-soft, d_model 16" in msg

    missing = {k: v for k, v in good.items() if k != "model.encoder.backbone.layers.0.mixer.mamba_rev.A_log"}
    msg = _s2e_refusal(tmp_path, "missing.ckpt", missing, source=source)
    assert "'encoder.backbone.layers.0.mixer.mamba_rev.A_log' has shape nothing in the checkpoint" in msg
    assert "needs (32, 8)" in msg

    extra = {**good, "model.generator.backbone.embeddings.word_embeddings.weight": torch.zeros(16, 16)}
    msg = _s2e_refusal(tmp_path, "extra.ckpt", extra, source=source)
    assert "'generator.backbone.embeddings.word_embeddings.weight' has shape (16, 16)" in msg and "needs nothing" in msg

    # a checkpoint whose hyper-parameters claim d_model 32 but whose tensors are 16 wide
    claim = their_seq2exp_config(sizes={**S2E_DEMO, "d_model": 32})
    msg = _s2e_refusal(tmp_path, "claim.ckpt", hparams=claim, source=source)
    assert "d_model 32" in msg and "has shape (16, 4) in the checkpoint" in msg and "needs (32, 4)" in msg

    # a soft checkpoint claiming the hard model (it lacks pos_emb, the first key of the hard layout)
    msg = _s2e_refusal(tmp_path, "hardclaim.ckpt", hparams=their_seq2exp_config(S2E_HARD), source=source)
    assert "'pos_emb' has shape nothing in the checkpoint" in msg and "Seq2Exp-hard" in msg

    untied = {**good, "model.generator.backbone.layers.0.mixer.mamba_rev.out_proj.weight": torch.zeros(16, 32)}
    assert "differs from its tied twin" in _s2e_refusal(tmp_path, "untied.ckpt", untied, source=source)

    prior = {**good, "model.signal_betas": torch.tensor([1.5, 1.0, 0.2])}
    msg = _s2e_refusal(tmp_path, "prior.ckpt", prior, source=source)
    assert "key 'signal_betas' holds [1.5, 1.0, 0.2], but prior_beta [1.5, 0.2, 1.0]" in msg


def test_seq2exp_hard_encoder_must_be_its_generator(tmp_path):
    source = seq2exp(S2E_HARD, seed=7)
    state = dict(their_seq2exp_tree(source).state_dict())
    state["model.encoder.backbone.norm_f.weight"] = torch.zeros(16)
    path = tmp_path / "hard.ckpt"
    write_their_seq2exp_checkpoint(path, source, their_seq2exp_config(S2E_HARD), state_dict=state)
    with pytest.raises(DataError, match=r"'encoder.backbone.norm_f.weight' differs from 'generator.backbone.norm_f."
                                        r"weight' \(enc_prd_ps"):
        import_run(path, s2e_run(), s2e_arch(S2E_HARD), tmp_path / "hard.pt", log=lambda m: None)


def test_seq2exp_checkpoint_of_another_model_or_setting_is_refused(tmp_path):
    source = seq2exp(seed=6)
    path = tmp_path / "a.ckpt"
    write_their_seq2exp_checkpoint(path, source, their_seq2exp_config())
    with pytest.raises(DataError, match=r"the checkpoint has kl_loss_weight 0.01, architectures.seq2exp-released."
                                        r"model says 0.1"):
        import_run(path, s2e_run(), s2e_arch({**S2E_SOFT, "kl_loss_weight": 0.1}), tmp_path / "a.pt",
                   log=lambda m: None)
    with pytest.raises(DataError, match=r"the checkpoint is seq2exp-released_L400_h3k27ac\+dnase\+hic, but run "
                                        r"results/runs/K562/seq2exp-released_L800"):
        import_run(path, s2e_run(length=800), s2e_arch(), tmp_path / "b.pt", log=lambda m: None)
    with pytest.raises(ValueError, match="kind 'enformer' has no importer of released checkpoints"):
        import_run(path, s2e_run(), {**s2e_arch(), "kind": "enformer"}, tmp_path / "c.pt", log=lambda m: None)
    # settings our Seq2Exp cannot express are named, in one line
    for key, value, match in (("gen_signal", True, "model.config.gen_signal is True"),
                              ("test_soft", False, "test_soft is False and test_hard is False"),
                              ("prior_weight", "2,2", "model.config.prior_weight has 2 values for 3 signals")):
        hp = their_seq2exp_config()
        hp.model.config[key] = value
        write_their_seq2exp_checkpoint(path, source, hp)
        with pytest.raises(ValueError, match=match) as err:
            import_run(path, s2e_run(), s2e_arch(), tmp_path / "d.pt", log=lambda m: None)
        assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_seq2exp_signal_order_follows_ours():
    order = ("dnase", "hic", "h3k27ac")
    source = seq2exp(signals=order, seed=9)
    theirs = ours_to_reference_state_dict(source.state_dict(), signals=order)
    assert torch.equal(theirs["signal_betas"], torch.tensor([1.5, 0.2, 1.0]))  # the reference's channel order
    assert torch.equal(theirs["signal_input_layer.weight"][:, 0], source.sig_emb.weight[:, 2])  # h3k27ac
    back = seq2exp_reference_state_dict_to_ours(theirs, source.config)
    assert all(torch.equal(back[k], v) for k, v in source.state_dict().items())
    with pytest.raises(ValueError, match="the reference weights hold signals"):
        ours_to_reference_state_dict(source.state_dict(), signals=("h3k27ac", "dnase", "atac"))


# ------------------------------------------------------------------------------------ the workflow

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_mirrors_seq2exp_checkpoint_imports_as_the_demo_configs_run(tmp_path):
    """The mirror's "released" Seq2Exp-soft (prism.demo) is the model config/demo.yaml's seq2exp-released claims."""
    from prism.demo import _write_seq2exp_released  # the mirror's Seq2Exp repository alone (the whole mirror: ~10 s)
    from prism.plan import Plan

    cfg = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    plan = Plan(cfg, workdir="/w")
    run = next(e.run for e in plan.evaluations["table4"] if e.row.group == "Seq2Exp-soft (released checkpoints)")
    arch = {"name": run.model.arch, **{k: v for k, v in plan.architectures[run.model.arch].items() if k != "training"}}
    path = _write_seq2exp_released(tmp_path / "huggingface", seed=0)[(run.cells[0], run.seed)]
    assert path.endswith("xingyusu/GeneExp_Seq2Exp/resolve/" + "0d3e" * 10 + "/Seq2Exp-soft/K562/seed_2/"
                         "mse-2025-02-03_00-00-00+Fold11.ckpt")
    listing = json.loads((tmp_path / "huggingface/api/models/xingyusu/GeneExp_Seq2Exp/tree" / ("0d3e" * 10)
                          / "Seq2Exp-soft/K562/seed_2").read_text())
    assert [e["path"] for e in listing] == ["Seq2Exp-soft/K562/seed_2/mse-2025-02-03_00-00-00+Fold11.ckpt"]
    meta = import_run(path, run, arch, tmp_path / "model.pt", log=lambda m: None)
    assert meta["spec"]["length"] == 400 and meta["reference"] == {"cell": "K562", "seed": 2}


def _dry_run(config: str, workdir: Path) -> tuple[dict[str, int], str]:
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-n", "table4",
                           "--directory", str(workdir), "--configfile", str(ROOT / config), "--quiet", "rules"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    table = out.split("Job stats:")[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M) if m[1] != "total"}, out


def test_table4_plans_the_released_checkpoints_and_our_own_runs(tmp_path):
    # the paper's config, in an empty directory: 5 of Seq2Exp's checkpoints downloaded and imported, 5 runs of
    # ours trained, one evaluation job per run (it tests all 13 input lengths), one table
    counts, _ = _dry_run("config/config.yaml", tmp_path / "paper")
    assert counts["import_released"] == 5 and counts["train"] == 5 and counts["evaluate"] == 10
    assert counts["metrics_table"] == 1 and counts["download"] == 17  # 12 data files and the 5 checkpoints
    # the demo: its mirror's one "released" checkpoint beside one run trained here
    counts, _ = _dry_run("config/demo.yaml", tmp_path / "demo")
    assert counts["demo_mirror"] == 1 and counts["import_released"] == 1 and counts["train"] == 1
    assert counts["evaluate"] == 2 and counts["metrics_table"] == 1
