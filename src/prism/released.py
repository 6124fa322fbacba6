"""Released weights in and out: the authors' Prism checkpoints, the machinery every kind's released
checkpoints go through (Seq2Exp's: prism.model.seq2exp), and kuleshov-group's pretrained Caduceus.

:func:`import_run` turns one released Lightning checkpoint into a run's ``model.pt``: it reads the file
without running pickled code (:func:`read_reference_checkpoint`), hands it to the importer its kind names
(prism.archs.Kind.importer: :func:`import_prism_checkpoint` here, ``import_reference_checkpoint`` in
prism.model.seq2exp), which maps the authors' key names onto ours after :func:`check_keys` has compared
every key and shape with what the checkpoint claims, and then requires that claim to be the run's.

The authors' checkpoints (Hugging Face model repo ``yangyz1230/Prism``,
``ckpt/{cell}/seed_{seed}/mse-<date>+Fold11.ckpt``) are PyTorch Lightning 1.8 checkpoints of their
``SequenceLightningModule``. Facts read in their public code (GitHub yangzhao1230/Prism):

* ``train.py``: the Lightning module keeps the network in ``self.model``, so every state-dict key
  carries the prefix ``model.``; it calls ``save_hyperparameters(config)`` with the Hydra config (an
  OmegaConf ``DictConfig``), which Lightning stores as ``hyper_parameters`` plus ``hparams_type``.
* ``src/models/sequence/GeneExpformer.py`` (class ``Prism``): ``caduceus`` (a ``Caduceus`` without
  token embedding, whose ``backbone`` holds ``layers`` and ``norm_f``), then ``seq_input_layer``,
  ``signal_input_layer``, ``weight_generator`` (``cnn_encoder``, ``weight_projector``; only when
  ``intervention_loss_weight != 0``) and ``pToExpr``.
* ``caduceus/modeling_caduceus.py``: each layer is mamba_ssm's ``Block`` (``mixer``, ``norm``) around
  ``BiMambaWrapper`` (``mamba_fwd``, ``mamba_rev``); ``mamba_rev``'s in/out projections are the same
  tensors as ``mamba_fwd``'s (``bidirectional_weight_tie``) and appear under both names.
* ``configs/model/prism.yaml``, ``configs/experiment/hg38/gene_express.yaml`` and ``test.sh``: the
  hyper-parameters (used when a checkpoint carries none, :data:`REFERENCE_DEFAULTS`).

Their Prism (K = 2) has 110 state-dict keys and Caduceus w/ signals 87, exactly the keys of our
:class:`prism.model.PrismModel`; :func:`reference_key_shapes` derives them from the facts above.

Pretrained Caduceus (Hugging Face ``kuleshov-group/caduceus-ph_seqlen-131k_d_model-256_n_layer-16``)
is a ``CaduceusForMaskedLM``: ``caduceus.backbone.embeddings.word_embeddings``, the same layers as
above, and ``lm_head`` (tied to the embedding). :func:`load_pretrained_caduceus` maps it onto our
:class:`prism.model.CaduceusBackbone` and ``seq_emb``.

Every refusal is one line naming the file and the first key at fault (:class:`prism.genes.DataError`
for a file that does not fit, ``ValueError`` for settings our model cannot express).
"""

from __future__ import annotations

import collections
import json
import math
import re
import typing
from pathlib import Path
from typing import Callable

from prism.genes import DataError

__all__ = [
    "CADUCEUS_TOKEN_IDS",
    "LIGHTNING_PREFIX",
    "PRISM_HF_REPO",
    "PRISM_HF_REVISION",
    "REFERENCE_DEFAULTS",
    "ImportedCheckpoint",
    "ReferenceCheckpoint",
    "caduceus_key_shapes",
    "check_keys",
    "check_tied",
    "export_reference_state_dict",
    "import_prism_checkpoint",
    "import_reference_state_dict",
    "import_run",
    "load_pretrained_caduceus",
    "load_reference_checkpoint",
    "load_reference_model",
    "lookup_hparam",
    "prism_checkpoint_files",
    "read_reference_checkpoint",
    "reference_config",
    "reference_key_shapes",
]

# ------------------------------------------------------------------------------------------- assets

PRISM_HF_REPO = "yangyz1230/Prism"
#: Placeholder, not a commit: the repository's commit could not be read offline. Replace it in config with
#: the 40-hex ``sha`` of https://huggingface.co/api/models/yangyz1230/Prism/revision/main.
PRISM_HF_REVISION = "UNPINNED-set-the-40-hex-commit-of-yangyz1230/Prism"
PRISM_CKPT_FOLDER = "ckpt/{cell}/seed_{seed}"
PRISM_CKPT_PATTERN = "mse-*+Fold11.ckpt"  # the date in the name is resolved from the repository listing
PRISM_RELEASED_CELLS = ("K562", "GM12878")
PRISM_RELEASED_SEEDS = (2, 22, 222, 2222, 22222)

CADUCEUS_PH_REPO = "kuleshov-group/caduceus-ph_seqlen-131k_d_model-256_n_layer-16"
CADUCEUS_PS_REPO = "kuleshov-group/caduceus-ps_seqlen-131k_d_model-256_n_layer-16"


def prism_checkpoint_files(revision: str = PRISM_HF_REVISION, *, name: str = "released Prism",
                           log: Callable[[str], None] = print, **kwargs) -> dict[tuple[str, int], object]:
    """{(cell, seed): HFFile} of every released Prism checkpoint, each resolved from the repository listing."""
    from prism.download import resolve_hf_files

    out = {}
    for cell in PRISM_RELEASED_CELLS:
        for seed in PRISM_RELEASED_SEEDS:
            folder = PRISM_CKPT_FOLDER.format(cell=cell, seed=seed)
            out[(cell, seed)] = resolve_hf_files(PRISM_HF_REPO, revision, folder, PRISM_CKPT_PATTERN,
                                                 name=f"{name} {cell} seed {seed}", log=log, **kwargs)
    return out


# ------------------------------------------------------------------------------- their module tree

LIGHTNING_PREFIX = "model."  # SequenceLightningModule.model

#: Their module prefix -> ours (GeneExpformer.Prism attribute -> PrismModel attribute); below the prefix
#: the names are the same (mamba_ssm's Mamba/Block names, nn.Sequential indices).
_PREFIX_MAP = (
    ("caduceus.backbone.", "backbone."),
    ("seq_input_layer.", "seq_emb."),
    ("signal_input_layer.", "sig_emb."),
    ("weight_generator.cnn_encoder.", "confounder_encoder.cnn."),
    ("weight_generator.weight_projector.0.", "confounder_encoder.proj."),
    ("pToExpr.", "head."),
)

#: The released models' settings when a checkpoint carries no hyper-parameters: configs/model/prism.yaml,
#: configs/experiment/hg38/gene_express.yaml and the overrides of test.sh.
REFERENCE_DEFAULTS = {
    "model": {"config": {
        "d_model": 128, "n_layer": 4, "signal_size": 3, "base_size": 4, "rna_feat_dim": 9, "useRNAFeat": True,
        "center_len": 2000, "weight_act": "sigmoid", "intervention_loss_weight": 1.0, "n_context": 2,
        "cnn_dim": 8, "rms_norm": True, "norm_epsilon": 1e-5, "residual_in_fp32": False,
        "bidirectional": True, "bidirectional_strategy": "add", "bidirectional_weight_tie": True, "rcps": False,
        "ssm_cfg": {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": "auto", "conv_bias": True, "bias": False},
    }},
    "task": {"loss": {"intervention_loss_weight": 1.0, "uniform_loss_weight": 1.0}},
    "dataset": {"seq_range": 2000},
}

#: Their signal channels, in order (promo_enhan_inter.py stacks h3k27ac, dnase, hic; signal_size keeps a prefix).
_REFERENCE_SIGNALS = ("h3k27ac", "dnase", "hic")
_GAUSSIAN_KERNEL_T = 2.0  # GeneExpformer.Prism's default when the config has no gaussian_kernel_t


def _mamba_keys(prefix: str, arch: dict) -> list[tuple[str, tuple]]:
    """mamba_ssm Mamba's state-dict entries in its order: own parameters, then submodules as registered."""
    d, di, n, k, r = arch["d_model"], arch["d_inner"], arch["d_state"], arch["d_conv"], arch["dt_rank"]
    out = [("A_log", (di, n)), ("D", (di,)), ("in_proj.weight", (2 * di, d))]
    if arch["bias"]:
        out.append(("in_proj.bias", (2 * di,)))
    out.append(("conv1d.weight", (di, 1, k)))
    if arch["conv_bias"]:
        out.append(("conv1d.bias", (di,)))
    out += [("x_proj.weight", (r + 2 * n, di)), ("dt_proj.weight", (di, r)), ("dt_proj.bias", (di,)),
            ("out_proj.weight", (d, di))]
    if arch["bias"]:
        out.append(("out_proj.bias", (d,)))
    return [(prefix + name, shape) for name, shape in out]


def _backbone_keys(prefix: str, arch: dict) -> list[tuple[str, tuple]]:
    """CaduceusMixerModel without embedding: layers.{i}.mixer.mamba_{fwd,rev}.*, layers.{i}.norm, norm_f."""
    out = []
    for i in range(arch["n_layer"]):
        for direction in ("mamba_fwd", "mamba_rev"):
            out += _mamba_keys(f"{prefix}layers.{i}.mixer.{direction}.", arch)
        out.append((f"{prefix}layers.{i}.norm.weight", (arch["d_model"],)))
    out.append((f"{prefix}norm_f.weight", (arch["d_model"],)))
    return out


def _arch(d_model: int, n_layer: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
          dt_rank="auto", conv_bias: bool = True, bias: bool = False, **rest) -> dict:
    d_inner = int(expand * d_model)
    rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
    return dict(d_model=d_model, n_layer=n_layer, d_state=d_state, d_conv=d_conv, d_inner=d_inner, dt_rank=rank,
                conv_bias=conv_bias, bias=bias, **rest)


def caduceus_key_shapes(prefix: str, d_model: int, n_layer: int, *, d_state: int = 16, d_conv: int = 4,
                        expand: int = 2, dt_rank="auto", conv_bias: bool = True,
                        bias: bool = False) -> list[tuple[str, tuple]]:
    """(key, shape) of a Caduceus built with ``ignore_embed_layer`` (a CaduceusMixerModel: layers, norm_f)
    under ``prefix`` (e.g. ``"caduceus.backbone."``), in state-dict order; every architecture built on
    their Caduceus shares it (Prism, Seq2Exp's generator and encoder)."""
    return _backbone_keys(prefix, _arch(d_model, n_layer, d_state, d_conv, expand, dt_rank, conv_bias, bias))


def reference_key_shapes(d_model: int = 128, n_layer: int = 4, *, n_signals: int = 3, n_features: int = 9,
                         K: int = 2, cnn_dim: int = 8, prism: bool = True, d_state: int = 16, d_conv: int = 4,
                         expand: int = 2, dt_rank="auto", conv_bias: bool = True,
                         bias: bool = False) -> dict[str, tuple]:
    """{key: shape} of their ``Prism`` module's state dict (no Lightning prefix), in its order.

    ``prism=False`` is their model with ``intervention_loss_weight == 0`` (no ``weight_generator``):
    "Caduceus w/ signals". Derived from the module tree in the module docstring, not from our model.
    """
    a = _arch(d_model, n_layer, d_state, d_conv, expand, dt_rank, conv_bias, bias)
    d, w = d_model, cnn_dim
    out = _backbone_keys("caduceus.backbone.", a)
    out += [("seq_input_layer.weight", (d, 4)), ("seq_input_layer.bias", (d,)),
            ("signal_input_layer.weight", (d, n_signals)), ("signal_input_layer.bias", (d,))]
    if prism:
        # cnn_encoder: Conv1d at 0, 4, 8 and BatchNorm1d at 1, 5, 9 (ReLU and MaxPool hold no state)
        for conv, bn, c_in, c_out, k in ((0, 1, n_signals, w, 7), (4, 5, w, 2 * w, 5), (8, 9, 2 * w, 4 * w, 3)):
            p = "weight_generator.cnn_encoder."
            out += [(f"{p}{conv}.weight", (c_out, c_in, k)), (f"{p}{conv}.bias", (c_out,))]
            out += [(f"{p}{bn}.{s}", (c_out,)) for s in ("weight", "bias", "running_mean", "running_var")]
            out.append((f"{p}{bn}.num_batches_tracked", ()))
        out += [("weight_generator.weight_projector.0.weight", (d * K, 4 * w)),
                ("weight_generator.weight_projector.0.bias", (d * K,))]
    out += [("pToExpr.0.weight", (d, d + n_features)), ("pToExpr.0.bias", (d,)),
            ("pToExpr.2.weight", (d, d)), ("pToExpr.2.bias", (d,)),
            ("pToExpr.4.weight", (1, d)), ("pToExpr.4.bias", (1,))]
    return dict(out)


def _to_ours(key: str) -> str:
    for theirs, ours in _PREFIX_MAP:
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    raise KeyError(key)


def _to_theirs(key: str) -> str:
    for theirs, ours in _PREFIX_MAP:
        if key.startswith(ours):
            return theirs + key[len(ours):]
    raise KeyError(key)


def _shape(t) -> str:
    return "nothing" if t is None else "(" + ", ".join(str(int(s)) for s in t) + ")"


def check_keys(state: dict, expected: dict[str, tuple], name: str, what: str) -> None:
    """Refuse the first key that is extra or misshaped (in the file's order), else the first missing one."""
    for key, tensor in state.items():
        want = expected.get(key)
        got = tuple(tensor.shape)
        if want is None or got != tuple(want):
            raise DataError(f"{name}: key '{key}' has shape {_shape(got)} in the checkpoint, "
                            f"{what} needs {_shape(want)}")
    for key, want in expected.items():
        if key not in state:
            raise DataError(f"{name}: key '{key}' has shape nothing in the checkpoint, {what} needs {_shape(want)}")


def check_tied(state: dict, prefix: str, n_layer: int, name: str) -> None:
    """mamba_rev's in/out projections are mamba_fwd's (bidirectional_weight_tie): both names, one tensor."""
    import torch

    for i in range(n_layer):
        for proj in ("in_proj.weight", "in_proj.bias", "out_proj.weight", "out_proj.bias"):
            fwd = state.get(f"{prefix}layers.{i}.mixer.mamba_fwd.{proj}")
            rev_key = f"{prefix}layers.{i}.mixer.mamba_rev.{proj}"
            rev = state.get(rev_key)
            if fwd is not None and rev is not None and not torch.equal(fwd, rev):
                raise DataError(f"{name}: key '{rev_key}' differs from its tied twin in mamba_fwd "
                                f"(bidirectional_weight_tie: they must be one tensor)")


# ----------------------------------------------------------------------- reading a Lightning .ckpt


class _StandIn:
    """Inert stand-in for an OmegaConf class named in a checkpoint's pickle: holds its state, runs no code."""


def _stand_in(qualname: str) -> type:
    return type(qualname.rsplit(".", 1)[1], (_StandIn,), {"__module__": __name__})


#: OmegaConf classes a Lightning checkpoint's ``hyper_parameters`` (a DictConfig) pickles, for omegaconf 2.x
_OMEGACONF_NAMES = (
    "omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig", "omegaconf.base.ContainerMetadata",
    "omegaconf.base.Metadata", "omegaconf.nodes.AnyNode", "omegaconf.nodes.StringNode",
    "omegaconf.nodes.IntegerNode", "omegaconf.nodes.FloatNode", "omegaconf.nodes.BooleanNode",
    "omegaconf.nodes.BytesNode", "omegaconf.nodes.PathNode",
)


class _AttributeDict(dict):
    """Stand-in for Lightning's AttributeDict (hyper-parameters saved as a plain mapping)."""


_STAND_INS = [(_stand_in(n), n) for n in _OMEGACONF_NAMES] + [
    (_AttributeDict, "pytorch_lightning.utilities.parsing.AttributeDict"),
    (_AttributeDict, "lightning_fabric.utilities.data.AttributeDict"),
    (_AttributeDict, "lightning.fabric.utilities.data.AttributeDict"),
]
# harmless builtins the DictConfig's metadata names (object_type=dict, ref_type=typing.Any, resolver_cache)
_SAFE_BUILTINS = [dict, list, int, float, str, bool, tuple, typing.Any, collections.defaultdict]


def _plain(obj):
    """An unpickled hyper-parameter tree (stand-ins, dicts, lists) as plain dicts, lists and scalars."""
    if isinstance(obj, _StandIn):
        state = obj.__dict__
        if "_content" in state:  # DictConfig / ListConfig; None, '???' or '${...}' as content stays as is
            return _plain(state["_content"])
        return _plain(state.get("_val"))
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _unsupported_global(message: str) -> str:
    m = re.search(r"GLOBAL ([\w.]+)", message)
    return m.group(1) if m else "an object"


class ReferenceCheckpoint(typing.NamedTuple):
    """A Lightning checkpoint of the authors' model, read without running any of its pickled code."""

    state_dict: dict  # their key names, Lightning prefix removed
    hparams: dict | None  # the Hydra config as plain dicts (interpolations unresolved), None if absent
    meta: dict  # epoch, global_step, pytorch-lightning_version, hparams_name where present


def read_reference_checkpoint(path: str | Path, *, trusted: bool = False) -> ReferenceCheckpoint:
    """Read a Lightning .ckpt with ``torch.load(weights_only=True)``.

    The tensors, optimizer and scheduler states and the callback states load under weights_only as they
    are. The one thing their checkpoint holds that plain weights_only refuses is ``hyper_parameters``:
    an OmegaConf ``DictConfig`` (and its class as ``hparams_type``). Those classes are mapped to inert
    stand-ins that only keep their state, so no OmegaConf code runs and OmegaConf need not be installed.
    Anything else outside weights_only's allowlist is refused in one line naming it; ``trusted=True``
    then loads with ``weights_only=False`` (runs pickled code: only for a file whose checksum you trust).
    """
    import pickle

    import torch

    path = Path(path)
    try:
        if trusted:
            raw = torch.load(path, map_location="cpu", weights_only=False)
        else:
            with torch.serialization.safe_globals(_STAND_INS + _SAFE_BUILTINS):
                raw = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"{path}: checkpoint not found") from None
    except ImportError as exc:  # trusted=True unpickles the real classes
        raise DataError(f"{path}: unpickling it needs the module {exc.name!r}, which is not installed") from None
    except pickle.UnpicklingError as exc:
        raise DataError(f"{path}: holds {_unsupported_global(str(exc))}, which weights_only loading refuses; "
                        f"load it with trusted=True only if its checksum is the released one") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable PyTorch checkpoint ({' '.join(str(exc).split())[:200]})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("state_dict"), dict):
        raise DataError(f"{path}: not a Lightning checkpoint (no 'state_dict' mapping)")
    state = {}
    for key, tensor in raw["state_dict"].items():
        if not key.startswith(LIGHTNING_PREFIX):
            raise DataError(f"{path}: key '{key}' lacks the Lightning module's prefix '{LIGHTNING_PREFIX}'")
        state[key[len(LIGHTNING_PREFIX):]] = tensor
    hparams = raw.get("hyper_parameters")
    hparams = _plain(hparams) if hparams is not None else None
    if hparams is not None and not isinstance(hparams, dict):
        raise DataError(f"{path}: hyper_parameters is not a mapping")
    meta = {k: raw[k] for k in ("epoch", "global_step", "pytorch-lightning_version", "hparams_name") if k in raw}
    return ReferenceCheckpoint(state, hparams, meta)


# ---------------------------------------------------------------------------- hyper-parameters


#: a plain interpolation: absolute ``${a.b}`` or relative to the node's parent (``${.b}``, ``${..b}``)
_INTERPOLATION = re.compile(r"^\$\{(\.*)([A-Za-z_][\w.]*)\}$")


def lookup_hparam(tree: dict, dotted: str, default=None, _depth: int = 0):
    """tree['a']['b'] for 'a.b', following plain interpolations (``${x.y}``, and OmegaConf's relative
    ``${.y}`` = a sibling, ``${..y}`` = a sibling of the parent); ``default`` when absent."""
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    if isinstance(node, str):
        m = _INTERPOLATION.match(node)
        if m and _depth < 10:
            dots, target = len(m.group(1)), m.group(2)
            if dots:  # relative: one dot is the containing node, each further dot one level up
                parent = dotted.split(".")[:-1]
                if dots - 1 > len(parent):
                    raise ValueError(f"hyper-parameter {dotted} is {node!r}, which points above the config's root")
                target = ".".join(parent[:len(parent) - (dots - 1)] + [target])
            return lookup_hparam(tree, target, default, _depth + 1)
        if "${" in node:
            raise ValueError(f"hyper-parameter {dotted} is the expression {node!r}, which is not resolved here")
    return node


class CheckpointHparams:
    """A checkpoint's Hydra config, read by dotted key (:func:`lookup_hparam`). A key it lacks falls back to
    the reference code's default in ``defaults`` and is recorded in ``defaulted``; :meth:`need` refuses a
    value that ``model`` cannot express, in one line naming the checkpoint."""

    def __init__(self, hparams: dict | None, defaults: dict, name: str, model: str = "our model"):
        self.tree, self.defaults, self.name, self.model = hparams or {}, defaults, name, model
        self.defaulted: list[str] = []

    def get(self, dotted: str, fallback=None):
        value = lookup_hparam(self.tree, dotted)
        if value is None:
            value = lookup_hparam(self.defaults, dotted, fallback)
            self.defaulted.append(dotted)
        return value

    def need(self, dotted: str, want) -> None:
        got = self.get(dotted)
        if got != want:
            raise ValueError(f"{self.name}: {dotted} is {got!r}; {self.model} is built only for {want!r}")


def reference_config(hparams: dict | None, *, name: str = "checkpoint") -> tuple[dict, dict, dict]:
    """Their Hydra config -> (model_cfg, settings, info) of ours.

    model_cfg has the keys of config.yaml's ``model`` section (d_model, n_layer, d_state, d_conv, expand,
    confounder_width, center_len); settings the run settings of :class:`prism.runs.ModelSpec` (length,
    signals, K, lambda1, lambda2, retention); info the cell line, seed and which values came from
    :data:`REFERENCE_DEFAULTS` because the checkpoint lacked them. A setting our model cannot express
    (e.g. ``weight_act: softmax``, which they normalise over d_model, or ``rcps: true``) is a ValueError.
    """
    hp = hparams or {}
    h = CheckpointHparams(hp, REFERENCE_DEFAULTS, name)
    get, need, defaulted = h.get, h.need, h.defaulted

    mc = "model.config."
    for key, want in (("rms_norm", True), ("bidirectional", True), ("bidirectional_strategy", "add"),
                      ("bidirectional_weight_tie", True), ("rcps", False), ("base_size", 4),
                      ("weight_act", "sigmoid"), ("useRNAFeat", True), ("rna_feat_dim", 9),
                      ("ssm_cfg.dt_rank", "auto"), ("ssm_cfg.conv_bias", True), ("ssm_cfg.bias", False)):
        need(mc + key, want)
    if float(get(mc + "norm_epsilon")) != 1e-5:
        raise ValueError(f"{name}: {mc}norm_epsilon is {get(mc + 'norm_epsilon')!r}; our RMSNorm uses 1e-5")
    if float(lookup_hparam(hp, mc + "gaussian_kernel_t", _GAUSSIAN_KERNEL_T)) != _GAUSSIAN_KERNEL_T:
        raise ValueError(f"{name}: {mc}gaussian_kernel_t is {lookup_hparam(hp, mc + 'gaussian_kernel_t')!r}; "
                         f"our uniform loss uses t = 2")
    n_signals = int(get(mc + "signal_size"))
    if not 1 <= n_signals <= len(_REFERENCE_SIGNALS):
        raise ValueError(f"{name}: {mc}signal_size is {n_signals}; their data loader has 1 to 3 signals")
    prism = float(get(mc + "intervention_loss_weight")) != 0.0
    lambda1 = float(get("task.loss.intervention_loss_weight", 0.0))
    lambda2 = float(get("task.loss.uniform_loss_weight", 0.0))
    if prism and lambda1 == 0.0:
        raise ValueError(f"{name}: the model has a weight_generator but task.loss.intervention_loss_weight is 0; "
                         f"our model builds the confounder encoder only when lambda1 != 0")
    if not prism:
        K = 0
    elif hparams is None:
        K = int(get(mc + "n_context"))  # test.sh's N_CONTEXT
    else:
        K = int(lookup_hparam(hp, mc + "n_context", 4))  # GeneExpformer.Prism's default when the config has none
    model_cfg = {
        "d_model": int(get(mc + "d_model")),
        "n_layer": int(get(mc + "n_layer")),
        "d_state": int(get(mc + "ssm_cfg.d_state")),
        "d_conv": int(get(mc + "ssm_cfg.d_conv")),
        "expand": int(get(mc + "ssm_cfg.expand")),
        "confounder_width": int(get(mc + "cnn_dim")) if prism else 8,
        "center_len": int(get(mc + "center_len")),
    }
    settings = {
        "length": int(get("dataset.seq_range")),
        "signals": list(_REFERENCE_SIGNALS[:n_signals]),
        "K": K,
        "lambda1": lambda1 if prism else 0.0,
        "lambda2": lambda2 if prism else 0.0,
        "retention": 1.0,
    }
    info = {
        "cell": lookup_hparam(hp, "dataset.cell_type"),
        "seed": lookup_hparam(hp, "train.seed"),
        "expr_type": lookup_hparam(hp, "dataset.expr_type"),
        "residual_in_fp32": get(mc + "residual_in_fp32"),
        "defaulted": sorted(set(defaulted)),
    }
    return model_cfg, settings, info


# ------------------------------------------------------------------------------------ in and out


def _expected_reference_shapes(model_cfg: dict, settings: dict) -> dict[str, tuple]:
    K = int(settings["K"])
    return reference_key_shapes(
        model_cfg["d_model"], model_cfg["n_layer"], n_signals=len(settings["signals"]), n_features=9,
        K=max(K, 1), cnn_dim=model_cfg["confounder_width"], prism=K > 0, d_state=model_cfg["d_state"],
        d_conv=model_cfg["d_conv"], expand=model_cfg["expand"])


def _describe(model_cfg: dict, settings: dict) -> str:
    kind = f"Prism K={settings['K']}" if settings["K"] else "Caduceus w/ signals"
    return (f"the architecture it claims ({kind}, d_model {model_cfg['d_model']}, n_layer {model_cfg['n_layer']}, "
            f"{len(settings['signals'])} signals)")


def import_reference_state_dict(theirs: dict, model_cfg: dict, settings: dict, *, name: str = "checkpoint") -> dict:
    """Their state dict (no Lightning prefix) -> ours, after checking every key and shape against the
    architecture that model_cfg and settings describe (one-line DataError for the first bad key)."""
    check_keys(theirs, _expected_reference_shapes(model_cfg, settings), name, _describe(model_cfg, settings))
    check_tied(theirs, "caduceus.backbone.", model_cfg["n_layer"], name)
    return {_to_ours(k): v for k, v in theirs.items()}


def export_reference_state_dict(ours: dict, *, lightning_prefix: bool = True) -> dict:
    """Our PrismModel state dict -> theirs, in their module order, with the Lightning prefix by default.

    Tensors are shared, not copied. Every key of ours must map (a KeyError names one that does not).
    """
    order = {p: i for i, (p, _) in enumerate(_PREFIX_MAP)}
    renamed = []
    for key, tensor in ours.items():
        theirs = _to_theirs(key)
        rank = next(order[p] for p, _ in _PREFIX_MAP if theirs.startswith(p))
        renamed.append((rank, theirs, tensor))
    renamed.sort(key=lambda r: r[0])  # stable: within a module our order is theirs
    prefix = LIGHTNING_PREFIX if lightning_prefix else ""
    return {prefix + k: v for _, k, v in renamed}


class ImportedCheckpoint(typing.NamedTuple):
    """An authors' checkpoint read by its kind's importer (prism.archs.Kind.importer)."""

    state_dict: dict  # our key names, loads strictly into the model that hp and settings build
    hp: dict  # the hyper-parameters it claims, in our names (a subset of architectures.<name>.model)
    settings: dict  # the run settings it claims (prism.runs.ModelSpec: length, signals, ...)
    info: dict  # cell, seed and what was taken from the released configs because the checkpoint lacked it


def import_prism_checkpoint(ckpt: ReferenceCheckpoint, *, name: str = "checkpoint",
                            log: Callable[[str], None] = print) -> ImportedCheckpoint:
    """The Prism kind's importer: their GeneExpformer.Prism checkpoint -> our PrismModel's names, after
    checking every key and shape against the architecture its hyper-parameters claim."""
    if ckpt.hparams is None:
        log(f"{name}: no hyper_parameters saved; assuming the released models' settings (test.sh)")
    model_cfg, settings, info = reference_config(ckpt.hparams, name=name)
    if ckpt.hparams is not None and info["defaulted"]:
        log(f"{name}: not in its hyper_parameters, taken from the released configs: {', '.join(info['defaulted'])}")
    ours = import_reference_state_dict(ckpt.state_dict, model_cfg, settings, name=name)
    return ImportedCheckpoint(ours, model_cfg, settings, info)


def _load_reference(path, trusted: bool, log: Callable[[str], None]):
    ckpt = read_reference_checkpoint(path, trusted=trusted)
    got = import_prism_checkpoint(ckpt, name=str(path), log=log)
    return got.state_dict, got.hp, got.settings, got.info, ckpt.meta


def load_reference_checkpoint(path: str | Path, *, trusted: bool = False,
                              log: Callable[[str], None] = print) -> tuple[dict, dict, dict]:
    """An authors' Lightning checkpoint -> (state_dict in our names, model_cfg, settings).

    ``prism.evaluate.build_model({"kind": "prism", "model": model_cfg}, spec)`` builds the model the
    state dict loads into (strictly). The architecture comes from the checkpoint's saved hyper-parameters;
    values it lacks come from :data:`REFERENCE_DEFAULTS` (logged).
    """
    ours, model_cfg, settings, _, _ = _load_reference(path, trusted, log)
    return ours, model_cfg, settings


def load_reference_model(path: str | Path, *, trusted: bool = False, log: Callable[[str], None] = print):
    """An authors' checkpoint as our model in eval mode, plus a meta dict like ``prism.evaluate.load_model``'s
    (``model_cfg``, ``spec``) with ``source`` (the file) and ``reference`` (cell, seed, epoch, step)."""
    from prism.evaluate import build_model
    from prism.runs import ModelSpec

    ours, model_cfg, settings, info, ckpt_meta = _load_reference(path, trusted, log)
    spec = ModelSpec.from_settings(settings)
    model = build_model({"kind": "prism", "model": model_cfg}, spec)
    model.load_state_dict(ours, strict=True)
    model.eval()
    meta = {"model_cfg": model_cfg, "spec": spec.as_dict(), "source": str(path),
            "reference": {"cell": info["cell"], "seed": info["seed"], **ckpt_meta}}
    return model, meta


# --------------------------------------------------------------------------- pretrained Caduceus

#: CaduceusTokenizer ids (caduceus/tokenization_caduceus.py): 7 special tokens, then A, C, G, T, N.
CADUCEUS_TOKEN_IDS = {"A": 7, "C": 8, "G": 9, "T": 10, "N": 11}


def _token_ids(model_dir: Path) -> dict[str, int]:
    """Base -> token id; from tokenizer_config.json's ``characters`` when the directory has one."""
    cfg_path = model_dir / "tokenizer_config.json"
    if not cfg_path.exists():
        return dict(CADUCEUS_TOKEN_IDS)
    chars = json.loads(cfg_path.read_text()).get("characters", ["A", "C", "G", "T", "N"])
    ids = {ch: i + 7 for i, ch in enumerate(chars)}
    missing = [b for b in "ACGTN" if b not in ids]
    if missing:
        raise DataError(f"{cfg_path}: characters {chars} lack {missing}")
    return ids


def _read_weights(model_dir: Path) -> tuple[dict, Path]:
    """model.safetensors (preferred) or pytorch_model.bin, loaded without running pickled code."""
    st, pt = model_dir / "model.safetensors", model_dir / "pytorch_model.bin"
    if st.exists():
        from safetensors.torch import load_file

        try:
            return load_file(str(st)), st
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise DataError(f"{st}: not a readable safetensors file ({' '.join(str(exc).split())[:200]})") from None
    if pt.exists():
        import pickle

        import torch

        try:
            return torch.load(pt, map_location="cpu", weights_only=True), pt
        except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
            raise DataError(f"{pt}: not a plain state dict ({' '.join(str(exc).split())[:200]})") from None
    raise DataError(f"{model_dir}: has neither model.safetensors nor pytorch_model.bin")


def _backbone_cfg(config: dict, cfg_path: Path) -> dict:
    """Their CaduceusConfig -> CaduceusBackbone keyword arguments; a ValueError for what we cannot build."""
    def need(key, want, default=None):
        got = config.get(key, default)
        if got != want:
            raise ValueError(f"{cfg_path}: {key} is {got!r}; CaduceusBackbone is built only for {want!r}")

    if config.get("rcps", False):
        raise ValueError(f"{cfg_path}: rcps is true (the reverse-complement equivariant -ps model); CaduceusBackbone "
                         f"has no RC-equivariant blocks, use the -ph model")
    need("bidirectional", True, True)
    need("bidirectional_strategy", "add", "add")
    need("bidirectional_weight_tie", True, True)
    need("rms_norm", True, True)
    if config.get("d_intermediate", 0):
        raise ValueError(f"{cfg_path}: d_intermediate is {config['d_intermediate']}; CaduceusBackbone has no MLP")
    ssm = dict(config.get("ssm_cfg") or {})
    unknown = set(ssm) - {"d_state", "d_conv", "expand", "dt_rank", "dt_min", "dt_max", "dt_init", "dt_scale",
                          "dt_init_floor", "conv_bias", "bias", "use_fast_path", "layer_idx"}
    if unknown:
        raise ValueError(f"{cfg_path}: ssm_cfg has {sorted(unknown)}, which our Mamba mixer does not implement")
    for key in ("d_model", "n_layer"):
        if not isinstance(config.get(key), int):
            raise DataError(f"{cfg_path}: {key} is {config.get(key)!r}, not an integer")
    cfg = {"d_model": config["d_model"], "n_layer": config["n_layer"],
           "norm_eps": float(config.get("norm_epsilon", 1e-5))}
    for key, default in (("d_state", 16), ("d_conv", 4), ("expand", 2), ("dt_rank", "auto"), ("dt_min", 0.001),
                         ("dt_max", 0.1), ("dt_init", "random"), ("dt_scale", 1.0), ("dt_init_floor", 1e-4),
                         ("conv_bias", True), ("bias", False)):
        cfg[key] = ssm.get(key, default)  # mamba_ssm Mamba's defaults for what ssm_cfg leaves out
    return cfg


def load_pretrained_caduceus(model_dir: str | Path, *, n_token_bias: bool = False) -> tuple[dict, dict, dict]:
    """A local copy of a Hugging Face Caduceus repository -> (backbone_state, seq_emb_state, backbone_cfg).

    model_dir holds config.json and model.safetensors (or pytorch_model.bin). backbone_state loads
    strictly into ``CaduceusBackbone(**backbone_cfg)``; seq_emb_state into our ``Linear(4, d_model)``.

    seq_emb: the token embedding's rows of A, C, G, T become the Linear's columns, bias 0. For a one-hot
    base this is exactly their embedding (one product by 1, the rest by 0: bit-identical). Our N is all
    zeros, so it embeds to 0 where theirs uses the learned N row. ``n_token_bias=True`` instead sets
    bias = E[N] and column j = E[j] - E[N]: then N is exactly theirs too, and the four bases equal
    theirs to float32 rounding (one subtraction and one addition), not bit for bit.

    Their ``lm_head`` (tied to the embedding) has no counterpart and is dropped; ``mamba_rev``'s tied
    in/out projections are taken from ``mamba_fwd`` when the file stores them once (safetensors does).
    """
    import torch

    model_dir = Path(model_dir)
    cfg_path = model_dir / "config.json"
    try:
        config = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise DataError(f"{cfg_path}: not found") from None
    except ValueError:
        raise DataError(f"{cfg_path}: not valid JSON") from None
    backbone_cfg = _backbone_cfg(config, cfg_path)
    raw, weights_path = _read_weights(model_dir)
    name = str(weights_path)

    prefix = next((p for p in ("caduceus.backbone.", "backbone.") if f"{p}norm_f.weight" in raw), None)
    if prefix is None:
        raise DataError(f"{name}: no 'caduceus.backbone.norm_f.weight' (nor 'backbone.norm_f.weight'): "
                        f"not a Caduceus state dict")
    arch = _arch(**{k: backbone_cfg[k] for k in ("d_model", "n_layer", "d_state", "d_conv", "expand", "dt_rank",
                                                 "conv_bias", "bias")})
    expected = dict(_backbone_keys(prefix, arch))
    emb_key = f"{prefix}embeddings.word_embeddings.weight"
    ids = _token_ids(model_dir)
    vocab = raw[emb_key].shape[0] if emb_key in raw else max(ids.values()) + 1
    if vocab <= max(ids.values()):
        raise DataError(f"{name}: key '{emb_key}' has {vocab} rows, the tokenizer's N is id {ids['N']}")
    expected[emb_key] = (vocab, arch["d_model"])
    state = dict(raw)
    state.pop("lm_head.weight", None)  # the masked-LM head, tied to the embedding
    for i in range(arch["n_layer"]):  # stored once when saved with safetensors: restore the tied name
        for proj in ("in_proj.weight", "in_proj.bias", "out_proj.weight", "out_proj.bias"):
            fwd_key = f"{prefix}layers.{i}.mixer.mamba_fwd.{proj}"
            rev_key = f"{prefix}layers.{i}.mixer.mamba_rev.{proj}"
            if fwd_key in state and rev_key not in state and rev_key in expected:
                state[rev_key] = state[fwd_key]
    what = (f"the architecture its config.json claims (d_model {arch['d_model']}, n_layer {arch['n_layer']}, "
            f"d_state {arch['d_state']}, expand {backbone_cfg['expand']})")
    check_keys(state, expected, name, what)
    check_tied(state, prefix, arch["n_layer"], name)

    emb = state.pop(emb_key).float()  # (vocab, d_model)
    backbone_state = {k[len(prefix):]: v for k, v in state.items()}
    acgt = emb[[ids[b] for b in "ACGT"]]  # (4, d_model)
    if n_token_bias:
        seq_emb_state = {"weight": (acgt - emb[ids["N"]]).T.contiguous(), "bias": emb[ids["N"]].clone()}
    else:
        seq_emb_state = {"weight": acgt.T.contiguous(), "bias": torch.zeros(arch["d_model"])}
    return backbone_state, seq_emb_state, backbone_cfg


# --------------------------------------------------------------------------- into the workflow's runs


def import_run(ckpt_path: str | Path, run, arch: dict, out: str | Path, *, trusted: bool = False,
               log: Callable[[str], None] = print) -> dict:
    """An authors' Lightning checkpoint as the ``model.pt`` of ``run`` (an architecture with ``released:``),
    in the format prism.train writes, so the one evaluation rule scores it.

    The architecture's kind names the importer that reads its authors' layout (prism.archs.Kind.importer:
    Prism, Seq2Exp). What the checkpoint claims (its settings and hyper-parameters) must be the run's and
    ``architectures.<name>.model``'s, and its keys and shapes must fit that claim: anything else is
    refused with one line naming the file and the first key or setting at fault.
    """
    import os

    import torch

    from prism.archs import importer
    from prism.evaluate import build_model, spec_of

    name = str(ckpt_path)
    read = importer(arch["kind"])
    got = read(read_reference_checkpoint(ckpt_path, trusted=trusted), name=name, log=log)
    spec = spec_of({**got.settings, "arch": run.model.arch}, arch)
    if spec.model_id != run.model.model_id:
        raise DataError(f"{name}: the checkpoint is {spec.model_id}, but run {run.path} is {run.model.model_id}")
    for key, value in got.hp.items():
        if key in arch["model"] and arch["model"][key] != value:
            raise DataError(f"{name}: the checkpoint has {key} {value}, architectures.{arch['name']}.model "
                            f"says {arch['model'][key]}")
    model = build_model(arch, spec)
    model.load_state_dict(got.state_dict, strict=True)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    meta = {"state_dict": model.state_dict(), "run": run.path, "cells": list(run.cells), "spec": spec.as_dict(),
            "arch": dict(arch), "model_cfg": dict(arch["model"]), "best_val_mse": None, "best_step": None,
            "steps": None, "parameters": n, "source": name,
            "reference": {"cell": got.info.get("cell"), "seed": got.info.get("seed")}}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(meta, tmp)
    os.replace(tmp, out)
    log(f"imported {name} as {out} ({n:,} parameters, {spec.model_id})")
    return meta


def init_from_pretrained_caduceus(model, weights_dir: str | Path, where: str, *, log: Callable[[str], None] = print):
    """Start a Prism-kind model from a pre-trained Caduceus (backbone and sequence embedding), after
    checking that the architecture's sizes are the checkpoint's (read from its config.json).
    prism.model.prism.build calls this when an architecture has ``pretrained:``."""
    backbone_state, seq_emb_state, cfg = load_pretrained_caduceus(weights_dir)
    have = {"d_model": model.backbone.d_model, "n_layer": model.backbone.n_layer}
    for key, value in have.items():
        if cfg.get(key) != value:
            raise ValueError(f"{where}: {key} is {value}, the pre-trained weights in {weights_dir} have {cfg.get(key)} "
                             f"(set it to theirs)")
    model.backbone.load_state_dict(backbone_state, strict=True)
    model.seq_emb.load_state_dict(seq_emb_state, strict=True)
    log(f"backbone and sequence embedding initialised from {weights_dir} ({cfg['d_model']} x {cfg['n_layer']})")
