"""Per-run metrics -> the paper's tables (CSV, long form; Markdown, wide) and figures.

Every table row is mean +- std over seeds (sample std, ddof = 1; NaN with one seed), with the paper's
number beside it and the difference (ours - paper) in units of our std.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .metrics import METRICS

SHOWN = ("mse", "mae", "pearson")
LABELS = {"mse": "MSE", "mae": "MAE", "pearson": "Pearson", "r2": "R2"}


def paper_values() -> dict:
    return yaml.safe_load(resources.files("prism").joinpath("data/paper_tables.yaml").read_text())


def _write_atomic(path: str | Path, text: str):
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_entries(entries: list[dict]) -> pd.DataFrame:
    """One row per (evaluation, metric) from the metrics JSON files named by the plan's entries."""
    rows = []
    for e in entries:
        with open(e["metrics"]) as f:
            m = json.load(f)
        extra = ["mean_weight"] if m.get("mean_weight") is not None and e["variant"] == "weighted" else []
        for metric in [*METRICS, *extra]:
            rows.append({**{k: e[k] for k in ("group", "row", "cell", "seed", "model", "variant")},
                         "metric": metric, "value": m[metric]})
    return pd.DataFrame(rows)


def summarize(values: pd.DataFrame, table: str, paper: dict | None = None) -> pd.DataFrame:
    """Mean, std and seed count per (group, row, cell, metric), with the paper's number beside it."""
    paper = paper_values() if paper is None else paper
    keys = ["group", "row", "cell", "metric"]
    order = {k: list(dict.fromkeys(values[k])) for k in ("group", "row", "cell")}
    g = values.groupby(keys, sort=False)["value"]
    out = g.agg(mean="mean", std=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"),
                n_seeds="count").reset_index()
    out["model"] = values.groupby(keys, sort=False)["model"].first().to_numpy()
    ref = paper.get(table, {})

    def lookup(r):
        pm = ref.get(r["group"], {}).get(r["row"], {}).get(r["cell"], {}).get(r["metric"])
        return pd.Series(pm if pm else [None, None], index=["paper_mean", "paper_std"])

    out[["paper_mean", "paper_std"]] = out.apply(lookup, axis=1)
    pm = pd.to_numeric(out["paper_mean"], errors="coerce")
    out["diff_in_std"] = (out["mean"] - pm) / out["std"].where(out["std"] > 0)
    for k in ("group", "row", "cell"):
        out[k] = pd.Categorical(out[k], categories=order[k], ordered=True)
    out = out.sort_values(["group", "row", "cell"], kind="stable")
    for k in ("group", "row", "cell"):
        out[k] = out[k].astype(str)
    return out.reset_index(drop=True)


def _fmt(mean, std) -> str:
    if mean is None or pd.isna(mean):
        return ""
    return f"{mean:.4f}" if std is None or pd.isna(std) else f"{mean:.4f} ± {std:.4f}"


def to_markdown(summary: pd.DataFrame, table: str, title: str, cited: dict | None = None) -> str:
    """A wide table: one line per (group, row), per cell line our value and the paper's."""
    cells = list(dict.fromkeys(summary["cell"]))
    head = ["", ""] + [f"{c} {LABELS[m]}" for c in cells for m in SHOWN]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by = summary.set_index(["group", "row", "cell", "metric"])
    for (group, row), _ in summary.groupby(["group", "row"], sort=False):
        ours, theirs = [], []
        for c in cells:
            for m in SHOWN:
                key = (group, row, c, m)
                r = by.loc[key] if key in by.index else None
                ours.append(_fmt(r["mean"], r["std"]) if r is not None else "")
                theirs.append(_fmt(r["paper_mean"], r["paper_std"]) if r is not None else "")
        name = f"{group}={row}" if group else row
        n = int(summary[(summary["group"] == group) & (summary["row"] == row)]["n_seeds"].max())
        lines.append(f"| {name} | ours (n={n}) | " + " | ".join(ours) + " |")
        if any(theirs):
            lines.append("| | paper | " + " | ".join(theirs) + " |")
    for label, per_cell in (cited or {}).items():
        vals = [_fmt(*per_cell.get(c, {}).get(m, [None, None])) for c in cells for m in SHOWN]
        if any(vals):
            lines.append(f"| {label} | cited | " + " | ".join(vals) + " |")
    for _, r in summary[summary["metric"] == "mean_weight"].iterrows():
        lines.append(f"\n{r['row']} ({r['cell']}): mean learned weight {_fmt(r['mean'], r['std'])} "
                     "(the paper: about 0.35 on K562)")
    lines += ["", "ours: mean ± sample std over seeds (n = seeds); paper: shared/paper/prism-paper.txt; "
              "metrics on log10(CAGE + 1), pooled over the test split.", ""]
    return "\n".join(lines)


TITLES = {
    "table1": "Table 1: gene expression prediction (test split)",
    "table2": "Table 2: sensitivity to K, lambda1 (intervention) and lambda2 (uniformity)",
    "table7": "Table 7: signals removed at test time from Caduceus trained on all signals",
    "table13": "Table 13: Prism trained per cell line vs on several cell lines at once (tested per cell line)",
    "table16": "Table 16: input-signal dropout during training vs Prism tested with its learned weights",
}


def metrics_table(table: str, entries: list[dict], csv_out, md_out) -> pd.DataFrame:
    paper = paper_values()
    summary = summarize(load_entries(entries), table, paper)
    tmp = Path(str(csv_out) + ".tmp")
    summary.to_csv(tmp, index=False)
    os.replace(tmp, csv_out)
    cited = paper.get("table1_cited") if table == "table1" else None
    _write_atomic(md_out, to_markdown(summary, table, TITLES.get(table, table), cited))
    return summary


def parameter_table(rows: dict[str, dict], model_cfg: dict, csv_out, md_out) -> pd.DataFrame:
    """Table 3: trainable parameters (tied weights once) of each configured model, and its parts."""
    from .model import count_parameters
    from .runs import ModelSpec
    from .evaluate import build_model

    paper = paper_values().get("table3", {})
    out = []
    for label, settings in rows.items():
        model = build_model(model_cfg, ModelSpec.from_settings(settings))
        enc = getattr(model, "confounder_encoder", None)
        out.append({"row": label, "model": ModelSpec.from_settings(settings).model_id,
                    "parameters": count_parameters(model),
                    "confounder_encoder": count_parameters(enc) if enc is not None else 0,
                    "backbone": count_parameters(model.backbone),
                    "paper": paper.get(label)})
    df = pd.DataFrame(out)
    tmp = Path(str(csv_out) + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, csv_out)
    lines = ["# Table 3: trainable parameters", "", "| model | ours | paper | confounder encoder | backbone |",
             "|---|---|---|---|---|"]
    for r in out:
        p = f"{r['paper'] / 1000:.0f}K" if r["paper"] else ""
        lines.append(f"| {r['row']} | {r['parameters']:,} ({r['parameters'] / 1000:.0f}K) | {p} | "
                     f"{r['confounder_encoder']:,} | {r['backbone']:,} |")
    lines += ["", f"architecture: {json.dumps(model_cfg, sort_keys=True)}", ""]
    _write_atomic(md_out, "\n".join(lines))
    return df


def figure_table2(csv_in, png_out):
    """Pearson r (mean +- std over seeds) per swept value of K, lambda1 and lambda2, paper beside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = pd.read_csv(csv_in, dtype={"row": str, "group": str})
    s = s[s["metric"] == "pearson"]
    groups = list(dict.fromkeys(s["group"]))
    fig, axes = plt.subplots(1, len(groups), figsize=(4 * len(groups), 3.4), squeeze=False)
    names = {"K": "K (background states)", "lambda1": "λ1 (intervention)", "lambda2": "λ2 (uniformity)"}
    for ax, g in zip(axes[0], groups):
        d = s[s["group"] == g]
        for cell, dc in d.groupby("cell", sort=False):
            x = np.arange(len(dc))
            ax.errorbar(x, dc["mean"], yerr=dc["std"].fillna(0), marker="o", capsize=3, label=f"ours ({cell})")
            if dc["paper_mean"].notna().any():
                ax.plot(x, dc["paper_mean"], "s--", color="grey", label=f"paper ({cell})")
            ax.set_xticks(x, dc["row"])
        ax.set_xlabel(names.get(g, g))
        ax.set_ylabel("test Pearson r")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Prism sensitivity (Table 2)")
    fig.tight_layout()
    tmp = Path(str(png_out) + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, png_out)
