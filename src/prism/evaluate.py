"""Trained models: build, load, and score on a split (no Lightning: evaluation jobs start fast).

``evaluate_run`` scores one run's ``model.pt`` on every (cell line, test-time variant) the plan asks
of it, through the one metrics function, and writes one ``evaluation.json`` plus per-gene predictions.
``predict_cell`` applies a model to every gene of a cell line, measured or not (prism.predict writes
the TSV and BED); ``confounder_weights`` writes Prism's learned weights per test gene (Figure 5).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from .archs import build_model as _build_arch
from .archs import kind as arch_kind
from .data import CellData
from .genes import FEATURES
from .metrics import regression_metrics
from .plan import variant_kind
from .runs import DEFAULT_ARCH, ModelSpec


def spec_of(settings: dict, arch: dict) -> ModelSpec:
    k = arch_kind(arch["kind"])
    return ModelSpec.from_settings(settings, confounder=k.confounder, takes_signals=k.takes_signals)


def build_model(arch: dict, spec: ModelSpec):
    """The model of one run: architecture (kind + hyper-parameters) from the config, variant from the run."""
    return _build_arch(arch, spec.canonical(), len(FEATURES))


def load_model(path: str | Path):
    """(model in eval mode, metadata) from a model.pt; a model.pt from before architectures is Prism's."""
    meta = torch.load(path, map_location="cpu", weights_only=False)
    arch = meta.get("arch") or {"kind": "prism", "model": meta["model_cfg"]}
    spec = spec_of(meta["spec"], arch)
    model = build_model(arch, spec)
    model.load_state_dict(meta["state_dict"])
    model.eval()
    return model, {**meta, "arch": arch, "spec_obj": spec}


def apply_variant(batch, variant: str, signals: list[str]):
    """The batch as a test-time variant sees it, and the model mode.

    ``full``: as trained. ``drop-<signal>``: that signal zeroed (Table 7). ``length-<bp>``: the central
    bp of the window only (Table 4: a model trained on long inputs tested on shorter ones).
    ``weighted``: Prism predicting from its K weighted copies (Table 16).
    """
    kind = variant_kind(variant)
    if kind is None:
        raise ValueError(f"unknown test-time variant {variant!r}")
    if kind == "drop":
        name = variant[5:]
        if name not in signals:
            raise ValueError(f"variant {variant!r}: the model has no signal {name!r} (signals {signals})")
        sig = batch.signals.clone()
        sig[:, signals.index(name)] = 0
        batch = type(batch)(batch.seq, sig, batch.features, batch.target, batch.index, dict(batch.extra))
    elif kind == "length":
        L, keep = batch.seq.shape[1], int(variant[7:])
        if keep > L:
            raise ValueError(f"variant {variant!r} is longer than the model's input ({L} bp)")
        a = (L - keep) // 2
        extra = {k: (v[:, a:a + keep] if v.dim() >= 2 and v.shape[1] == L else v) for k, v in batch.extra.items()}
        batch = type(batch)(batch.seq[:, a:a + keep], batch.signals[..., a:a + keep], batch.features, batch.target,
                            batch.index, extra)
    return batch, ("weighted" if kind == "weighted" else "eval")


@torch.no_grad()
def predict(model, data: CellData, rows: np.ndarray, *, variant: str = "full", batch_size: int = 64,
            device: str = "cpu", weights: bool = False) -> tuple[np.ndarray, float | None, np.ndarray | None]:
    """(predictions, mean learned weight or None, per-gene weights (n, d_model, K) if asked and learned)."""
    model.to(device)
    preds, wsum, wn, wall = [], 0.0, 0, []
    for i in range(0, len(rows), batch_size):
        b = data.batch(rows[i:i + batch_size]).to(device)
        b, mode = apply_variant(b, variant, data.signal_names)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            out = model.forward_batch(b, mode)
        preds.append(out["pred"].float().cpu().numpy())
        w = out.get("weights")
        if w is not None:
            wsum += float(w.float().sum())
            wn += w.numel()
            if weights:
                wall.append(w.float().cpu().numpy().astype(np.float16))
    pred = np.concatenate(preds) if preds else np.zeros(0, np.float32)
    return pred, (wsum / wn if wn else None), (np.concatenate(wall) if wall else None)


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _atomic_text(path, text: str):
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def evaluate_run(model_path: str | Path, tests: list[tuple[str, str]], data_inputs: dict[str, dict],
                 metrics_out: str | Path, predictions_out: str | Path, *, split: str = "test",
                 threads: int | None = None, log=print) -> dict:
    """Score one model on each (cell line, variant) of ``tests``; ``data_inputs[cell]`` holds that cell
    line's data files (prism.plan.Plan.data_inputs). Writes one JSON and one long predictions TSV."""
    if threads:
        torch.set_num_threads(threads)
    model, meta = load_model(model_path)
    spec = meta["spec_obj"]
    device = _device()
    results, lines = {}, ["cell\tvariant\tgene_id\tchrom\ttarget\tprediction\n"]
    datas = {}
    for cell, variant in tests:
        if cell not in datas:
            datas[cell] = CellData.from_inputs(cell, data_inputs[cell], spec, meta["arch"])
        data = datas[cell]
        rows = data.indices(split)
        if len(rows) == 0:
            raise ValueError(f"cell line {cell}: no genes in the {split!r} split of its gene table")
        pred, mean_weight, _ = predict(model, data, rows, variant=variant, device=device)
        m = regression_metrics(data.target[rows], pred)
        results[f"{cell}/{variant}"] = {**m, "mean_weight": mean_weight}
        lines += [f"{cell}\t{variant}\t{g}\t{c}\t{y:.6g}\t{p:.6g}\n"
                  for g, c, y, p in zip(data.gene_id[rows], data.chrom[rows], data.target[rows], pred)]
        log(f"{cell} {split} ({variant}): mse {m['mse']:.4f} mae {m['mae']:.4f} pearson {m['pearson']:.4f} "
            f"n {m['n']}" + (f" mean weight {mean_weight:.3f}" if mean_weight is not None else ""))
    _atomic_text(predictions_out, "".join(lines))
    out = {"run": meta["run"], "model": spec.model_id, "arch": meta["arch"].get("name", spec.arch),
           "split": split, "device": device, "best_step": meta.get("best_step"),
           "best_val_mse": meta.get("best_val_mse"), "results": results}
    _atomic_text(metrics_out, json.dumps(out, indent=2) + "\n")
    return out


def confounder_weights(model_path, cell: str, data_inputs: dict, out, *, split: str = "test", log=print):
    """Prism's learned weights w_1..w_K per gene of a split as .npz: gene_id (n,), weights (n, d_model, K)."""
    model, meta = load_model(model_path)
    if not getattr(model, "uses_confounder", False):
        raise ValueError(f"{model_path}: the model has no confounder encoder, so no learned weights")
    data = CellData.from_inputs(cell, data_inputs, meta["spec_obj"], meta["arch"])
    rows = data.indices(split)
    _, mean_weight, w = predict(model, data, rows, device=_device(), weights=True)
    tmp = Path(str(out) + ".tmp.npz")
    np.savez(tmp, gene_id=data.gene_id[rows].astype(str), weights=w)
    os.replace(tmp, out)
    log(f"{cell} {split}: learned weights of {len(rows)} genes, shape {w.shape}, mean {mean_weight:.3f}")


def predict_cell(model_path, cell: str, data_inputs: dict, tsv_out, bed_out, *, log=print):
    """Predictions for every gene of a cell line (with or without measured expression)."""
    from .predict import write_predictions

    model, meta = load_model(model_path)
    data = CellData.from_inputs(cell, data_inputs, meta["spec_obj"], meta["arch"])
    rows = np.arange(len(data))
    pred, _, _ = predict(model, data, rows, device=_device())
    write_predictions(data.gene_id, data.chrom, data.tss, pred, tsv_out, bed_out,
                      name=f"{cell}-{meta['spec_obj'].model_id}", measured=data.target)
    log(f"{cell}: predicted {len(rows)} genes with {meta['run']}")


__all__ = ["DEFAULT_ARCH", "apply_variant", "build_model", "confounder_weights", "evaluate_run", "load_model",
           "predict", "predict_cell", "spec_of"]
