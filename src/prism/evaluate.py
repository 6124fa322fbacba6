"""Trained models: build, load, and score on a split (no Lightning: evaluation jobs start fast).

``evaluate_run`` scores a ``model.pt`` on one cell line's test split, optionally with a test-time
variant (a signal zeroed), through the one metrics function.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from .data import CellData
from .genes import FEATURES
from .metrics import regression_metrics
from .model import ModelConfig, PrismModel
from .runs import ModelSpec


def build_model(model_cfg: dict, spec: ModelSpec) -> PrismModel:
    """The model of one run: architecture from the config, variant from the run's settings."""
    spec = spec.canonical()
    cfg = ModelConfig(
        **{k: model_cfg[k] for k in ("d_model", "n_layer", "d_state", "d_conv", "expand", "confounder_width",
                                     "center_len") if k in model_cfg},
        n_signals=len(spec.signals), n_features=len(FEATURES), K=spec.K,
        lambda1=spec.lambda1, lambda2=spec.lambda2,
    )
    return PrismModel(cfg)


def load_model(path: str | Path) -> tuple[PrismModel, dict]:
    meta = torch.load(path, map_location="cpu", weights_only=False)
    model = build_model(meta["model_cfg"], ModelSpec.from_settings(meta["spec"]))
    model.load_state_dict(meta["state_dict"])
    model.eval()
    return model, meta


def parse_variant(variant: str, signals: list[str]) -> tuple[list[float], bool]:
    """A test-time variant as (per-signal multipliers, use the interventional prediction).

    ``full``: the model as trained. ``drop-<signal>``: that signal zeroed (Table 7).
    ``weighted``: Prism's learned weights multiplied into the embedded signals, i.e. the prediction made
    from the K weighted copies (Table 16; only for models with a confounder encoder).
    """
    if variant == "full":
        return [1.0] * len(signals), False
    if variant == "weighted":
        return [1.0] * len(signals), True
    if variant.startswith("drop-") and variant[5:] in signals:
        return [0.0 if s == variant[5:] else 1.0 for s in signals], False
    raise ValueError(f"unknown test-time variant {variant!r} for a model with signals {signals}")


@torch.no_grad()
def predict(model: PrismModel, data: CellData, rows: np.ndarray, *, multipliers=None, weighted=False,
            batch_size=64, device="cpu") -> tuple[np.ndarray, float | None]:
    """Predictions for the given rows, and the mean learned weight (None without a confounder encoder)."""
    if weighted and not model.uses_confounder:
        raise ValueError("the 'weighted' variant needs a model with a confounder encoder (K > 0, lambda1 != 0)")
    model.to(device)
    preds, wsum, wn = [], 0.0, 0
    for i in range(0, len(rows), batch_size):
        b = data.batch(rows[i:i + batch_size]).to(device)
        scale = None if multipliers is None else torch.tensor(multipliers, dtype=b.signals.dtype, device=device)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            out = model(b.seq, b.signals, b.features, signal_weights=scale, intervention=weighted)
        preds.append(out["pred_intervention" if weighted else "pred"].float().cpu().numpy())
        if out["weights"] is not None:
            wsum += float(out["weights"].float().sum())
            wn += out["weights"].numel()
    return (np.concatenate(preds) if preds else np.zeros(0, np.float32)), (wsum / wn if wn else None)


def evaluate_run(model_path: str | Path, cell: str, genes_tsv: str, shard_paths: list[str], variant: str,
                 metrics_out: str | Path, predictions_out: str | Path, *, split="test", threads=None,
                 log=print) -> dict:
    """Score a trained model on one cell line's split; write metrics JSON and a per-gene predictions TSV."""
    if threads:
        torch.set_num_threads(threads)
    model, meta = load_model(model_path)
    spec = ModelSpec.from_settings(meta["spec"])
    data = CellData(cell, genes_tsv, shard_paths, list(spec.signals), spec.length)
    rows = data.indices(split)
    if len(rows) == 0:
        raise ValueError(f"cell line {cell}: no genes in the {split!r} split of {genes_tsv}")
    mult, weighted = parse_variant(variant, list(spec.signals))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pred, mean_weight = predict(model, data, rows, multipliers=mult, weighted=weighted, device=device)
    m = regression_metrics(data.target[rows], pred)
    result = {**m, "cell": cell, "split": split, "variant": variant, "run": meta["run"],
              "model": spec.model_id, "best_step": meta["best_step"], "best_val_mse": meta["best_val_mse"],
              "mean_weight": mean_weight}
    tmp = Path(str(predictions_out) + ".tmp")
    with open(tmp, "w") as f:
        f.write("gene_id\tchrom\ttarget\tprediction\n")
        for g, c, y, p in zip(data.gene_id[rows], data.chrom[rows], data.target[rows], pred):
            f.write(f"{g}\t{c}\t{y:.6g}\t{p:.6g}\n")
    os.replace(tmp, predictions_out)
    tmp = Path(str(metrics_out) + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, metrics_out)
    log(f"{cell} {split} ({variant}): mse {m['mse']:.4f} mae {m['mae']:.4f} pearson {m['pearson']:.4f} n {m['n']}")
    return result
