"""The paper's figures, drawn from the workflow's tables and runs: PNG plus SVG, each panel says what is
ours (mean ± std over n seeds) and what is the paper's.

Panel plots (``figures.<name>.panels`` in config; prism.plan.FIGURE_PLOTS):

- ``lines``: a metric against a swept setting (``x`` of the table's CSV), one line per group and cell line;
  log x axis when the values span 20x or more (lengths, lambdas), linear otherwise (K);
- ``bars``: a metric per row of a table, ours with error bars, the paper's as markers;
- ``weights``: heatmap of Prism's learned weight vectors w_1..w_K for sample test genes (Figure 5);
- ``locus``: the signals around one gene's TSS with its measured and predicted expression (Figure 6).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .genes import DataError

NAMES = {"K": "K (background states)", "lambda1": "λ1 (intervention)", "lambda2": "λ2 (uniformity)",
         "length": "input length (bp)", "test_length": "test input length (bp)", "retention": "retention"}
LABELS = {"mse": "MSE", "mae": "MAE", "pearson": "Pearson r", "r2": "R²"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, png_out, svg_out):
    for out in (png_out, svg_out):
        tmp = Path(str(out) + ".tmp" + Path(out).suffix)
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, out)


def _log_scale(x: np.ndarray) -> bool:
    x = x[np.isfinite(x)]
    return len(x) > 1 and x.min() > 0 and x.max() / x.min() >= 20


def lines_panel(ax, table_csv, panel: dict):
    s = pd.read_csv(table_csv, dtype={"row": str, "group": str, "cell": str}, keep_default_na=False,
                    na_values=[""])
    metric = panel.get("metric", "pearson")
    s = s[(s["metric"] == metric) & s["x"].notna()]
    if panel.get("group") is not None:
        s = s[s["group"] == str(panel["group"])]
    if s.empty:
        raise DataError(f"{table_csv}: no swept rows with metric {metric} for this panel")
    settings = sorted(set(s["setting"].dropna()))
    n = int(s["n_seeds"].max())
    for (group, cell), d in s.groupby(["group", "cell"], sort=False):
        d = d.sort_values("x")
        name = f"{group} ({cell})" if group not in settings else cell
        line = ax.errorbar(d["x"], d["mean"], yerr=d["std"].fillna(0), marker="o", capsize=3,
                           label=f"ours: {name}")
        if d["paper_mean"].notna().any():
            ax.plot(d["x"], d["paper_mean"], "s--", color=line[0].get_color(), alpha=0.5, label=f"paper: {name}")
    scale = panel.get("xscale", "auto")
    if scale == "log" or (scale == "auto" and _log_scale(s["x"].to_numpy(float))):
        ax.set_xscale("log")
    ax.set_xlabel(NAMES.get(settings[0], settings[0]) if len(settings) == 1 else "value")
    ax.set_ylabel(f"test {LABELS.get(metric, metric)}")
    ax.set_title(panel.get("title", ""), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, title=f"ours: mean ± std, n ≤ {n} seeds", title_fontsize=7)


def bars_panel(ax, table_csv, panel: dict):
    s = pd.read_csv(table_csv, dtype={"row": str, "group": str, "cell": str}, keep_default_na=False,
                    na_values=[""])
    metric = panel.get("metric", "pearson")
    s = s[s["metric"] == metric]
    if s.empty:
        raise DataError(f"{table_csv}: no rows with metric {metric}")
    cells = list(dict.fromkeys(s["cell"]))
    rows = list(dict.fromkeys(s["row"]))
    width = 0.8 / len(cells)
    n = int(s["n_seeds"].max())
    for i, cell in enumerate(cells):
        d = s[s["cell"] == cell].set_index("row").reindex(rows)
        x = np.arange(len(rows)) + (i - (len(cells) - 1) / 2) * width
        ax.bar(x, d["mean"], width, yerr=d["std"].fillna(0), capsize=3, label=f"ours ({cell})", alpha=0.8)
        if d["paper_mean"].notna().any():
            ax.plot(x, d["paper_mean"], "k_", markersize=14, markeredgewidth=2, label=f"paper ({cell})")
    ax.set_xticks(np.arange(len(rows)), rows, rotation=30, ha="right", fontsize=8)
    lo = np.nanmin(s[["mean", "paper_mean"]].to_numpy(float))
    hi = np.nanmax(s[["mean", "paper_mean"]].to_numpy(float))
    pad = 0.1 * (hi - lo) if hi > lo else 0.05
    ax.set_ylim(lo - pad if metric == "pearson" else 0, hi + pad)
    ax.set_ylabel(f"test {LABELS.get(metric, metric)}")
    ax.set_title(panel.get("title", ""), fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, title=f"ours: mean ± std, n ≤ {n} seeds", title_fontsize=7)


def weights_panel(ax, weights_npz, panel: dict):
    """Rows: sample test genes x the K states; columns: the d_model embedding channels."""
    with np.load(weights_npz, allow_pickle=False) as z:
        w, genes = z["weights"], z["gene_id"]  # (n, d_model, K), (n,)
    if w.size == 0:
        raise DataError(f"{weights_npz}: no learned weights (a model without a confounder encoder?)")
    n = min(int(panel.get("n_genes", 20)), len(w))
    K = w.shape[2]
    img = w[:n].transpose(0, 2, 1).reshape(n * K, -1)  # (n * K, d_model)
    im = ax.imshow(img, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks(np.arange(n * K), [f"{g} w{k + 1}" for g in genes[:n] for k in range(K)], fontsize=5)
    ax.set_xlabel("embedding channel")
    ax.set_title(panel.get("title", f"learned weights, {panel.get('cell')} seed {panel.get('seed')} (ours)"),
                 fontsize=10)
    ax.figure.colorbar(im, ax=ax, fraction=0.03)


def locus_panel(axes, panel: dict):
    """Signal tracks around the TSS of panel['gene'] and its measured and predicted expression."""
    import pyBigWig

    from .genes import read_gene_table, resolve_chrom

    genes = read_gene_table(panel["genes"]).set_index("gene_id")
    gene = panel["gene"]
    if gene not in genes.index:
        raise DataError(f"{panel['genes']}: gene {gene} is not in the gene table of {panel['cell']} "
                        "(figures.*.gene must be one of its genes)")
    g = genes.loc[gene]
    pred = pd.read_csv(panel["predictions"], sep="\t", dtype={"gene_id": str}).set_index("gene_id")
    flank = int(panel.get("flank", 10000))
    chrom, tss = str(g["chrom"]), int(g["tss"])
    tracks = {k: v for k, v in panel["signals"].items() if v[1] in ("bigwig", "bigbed")}
    hic = {k: v for k, v in panel["signals"].items() if v[1] == "hic"}
    for ax, (name, (path, kind)) in zip(axes, tracks.items()):
        bw = pyBigWig.open(path)
        if bw is None:
            raise DataError(f"{path}: not a readable bigWig/bigBed")
        try:
            c = resolve_chrom(chrom, bw.chroms(), path)
            size = bw.chroms(c)
            lo, hi = max(0, tss - flank), min(size, tss + flank)
            if kind == "bigwig":
                v = np.nan_to_num(bw.values(c, lo, hi, numpy=True))
            else:
                v = np.zeros(hi - lo)
                for s, e, *_ in bw.entries(c, lo, hi) or []:
                    v[max(s, lo) - lo:min(e, hi) - lo] = 1
        finally:
            bw.close()
        ax.fill_between(np.arange(lo, hi) - tss, v, step="mid", alpha=0.7)
        ax.set_ylabel(name, rotation=0, ha="right", fontsize=8)
        ax.axvline(0, color="k", lw=0.5)
    if hic:
        from .preprocess import _read_hic_band, hic_features
        from .shards import hic_offsets_for

        ax = axes[len(tracks)]
        name, (path, _) = next(iter(hic.items()))
        res = int(panel.get("hic_resolution", 5000))
        offsets = hic_offsets_for(2 * flank, res)
        from .statistics import _sizes

        size = _sizes(panel["fai"]).get(chrom)
        if size is None:
            raise DataError(f"{panel['fai']}: chromosome {chrom} of gene {gene} is not in the genome index")
        band = _read_hic_band(path, chrom, panel.get("hic_normalization", "VC"), res, int(np.abs(offsets).max()), size)
        h = hic_features(band, np.array([tss]), offsets, res)[0]
        ax.bar(offsets * res + res / 2 - (tss % res), h, width=res * 0.9, alpha=0.7)
        ax.set_ylabel(name, rotation=0, ha="right", fontsize=8)
        ax.axvline(0, color="k", lw=0.5)
    axes[-1].set_xlabel(f"position relative to the TSS of {gene} ({chrom}:{tss:,}), bp")
    p = pred.loc[gene] if gene in pred.index else None
    measured = float(g["target"])
    axes[0].set_title(f"{gene} in {panel['cell']}: measured log10(CAGE + 1) {measured:.3f}, predicted "
                      + (f"{float(p['prediction']):.3f}" if p is not None else "n/a") + " (ours)", fontsize=9)


def draw_figure(spec: dict, inputs: dict, png_out, svg_out, *, log=print):
    """One figure of any number of panels (prism.plan.Plan.figure_spec) as PNG and SVG."""
    plt = _plt()
    panels = spec["panels"]
    if len(panels) == 1 and panels[0]["plot"] == "locus":
        p = panels[0]
        n = len([s for s in p["signals"].values()])
        fig, axes = plt.subplots(n, 1, figsize=(9, 1.3 * n + 1), sharex=True, squeeze=False)
        locus_panel(list(axes[:, 0]), p)
    else:
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2), squeeze=False)
        for ax, p in zip(axes[0], panels):
            if p["plot"] == "lines":
                lines_panel(ax, f"results/tables/{p['table']}.csv" if "csv" not in p else p["csv"], p)
            elif p["plot"] == "bars":
                bars_panel(ax, f"results/tables/{p['table']}.csv" if "csv" not in p else p["csv"], p)
            elif p["plot"] == "weights":
                weights_panel(ax, p["weights"], p)
            else:
                raise DataError(f"figure {spec['name']}: a locus panel must be the figure's only panel")
    fig.suptitle(spec["title"], fontsize=11)
    fig.tight_layout()
    _save(fig, png_out, svg_out)
    plt.close(fig)
    log(f"{spec['name']}: {len(panels)} panel(s) -> {png_out}, {svg_out}")
