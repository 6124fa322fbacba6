"""Per-run metrics -> the paper's tables (CSV, long form; Markdown and HTML, wide).

Every metrics row is mean ± std over seeds (sample std, ddof = 1; NaN with one seed). A paper number
stands beside one of our rows only when the paper trained that row the same way: same architecture
(kind and backbone size), input length, signals, Prism settings, test-time variant and mixed-cell
training (:func:`training_key`). A paper row with the same label but trained otherwise is shown as a
note saying how the two differ; paper rows that match none of ours are listed as cited rows.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .archs import kind as arch_kind
from .metrics import METRICS
from .plan import paper_data
from .runs import PAPER_DEFAULTS, ModelSpec

SHOWN = ("mse", "mae", "pearson")
LABELS = {"mse": "MSE", "mae": "MAE", "pearson": "Pearson", "r2": "R²", "mean_weight": "mean weight"}
#: architecture hyper-parameters that must equal the paper's for "trained the same way"
SIZE_KEYS = ("d_model", "n_layer")
FOOTER = ("ours: mean ± sample std over seeds (n = seeds); paper: shared/paper/prism-paper.txt; metrics on "
          "log10(CAGE + 1), pooled over the test split.")


def _write_atomic(path: str | Path, text: str):
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _csv_atomic(df: pd.DataFrame, path):
    tmp = Path(str(path) + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


# ---------------------------------------------------------------- how a row was trained


def training_key(settings: dict, *, kind: str) -> dict:
    """Canonical settings of a paper row (given over the paper's defaults), in our rows' key form."""
    s = dict(settings)
    variant = s.pop("variant", "full")
    if "test_length" in s:
        variant = f"length-{int(s.pop('test_length'))}"
    mixed = s.pop("trained_on", None) is not None
    k = arch_kind(kind)
    spec = ModelSpec.from_settings({**PAPER_DEFAULTS, **s}, confounder=k.confounder, takes_signals=k.takes_signals)
    return {**spec.as_dict(), "variant": variant, "mixed": mixed}


def _differences(ours: dict, theirs: dict) -> list[str]:
    """'length 2000 vs 200000' for every field that differs (ours first)."""
    out = []
    for k in sorted(set(ours) | set(theirs), key=lambda k: (k not in ("arch", "length"), k)):
        a, b = ours.get(k), theirs.get(k)
        if a != b:
            fa = "+".join(a) if isinstance(a, list) else a
            fb = "+".join(b) if isinstance(b, list) else b
            fb = "not stated" if b is None and k in SIZE_KEYS else fb  # the paper gives no HyenaDNA d_model
            out.append(f"{k} {fa if fa not in ('', None) else 'none'} vs {fb if fb != '' else 'none'}")
    return out


def _describe(key: dict) -> str:
    sig = "+".join(key["signals"]) or "no signals"
    parts = [key["arch"], f"{key['length']:,} bp", sig]
    if key.get("K") is not None:
        parts.append(f"K={key['K']}" + (f", λ1={key['lambda1']:g}, λ2={key['lambda2']:g}" if key["K"] else ""))
    if key.get("retention", 1.0) < 1:
        parts.append(f"retention {key['retention']:g}")
    if key.get("variant", "full") != "full":
        parts.append(f"tested {key['variant']}")
    if key.get("mixed"):
        parts.append("mixed-cell training")
    return ", ".join(parts)


class PaperRows:
    """The paper's rows of one table with their training keys, and matching against ours."""

    def __init__(self, table: str, paper: dict, archs_hp: dict, cell_map: dict):
        self.archs = paper.get("architectures", {})
        self.table = paper.get("tables", {}).get(table, {})
        self.archs_hp = archs_hp  # our architectures: name -> hp dict
        self.cell_map = cell_map  # our cell line -> the paper's name for it
        self.rows = []
        for r in self.table.get("rows", []):
            trained = r.get("trained", {})
            arch = trained.get("arch", "prism")
            size = {k: v for k, v in self.archs.get(arch, {}).items() if k in SIZE_KEYS}
            key = training_key(trained, kind=self.archs.get(arch, {}).get("kind", "prism")) if "trained" in r else None
            self.rows.append({**r, "group": str(r.get("group", "")), "label": str(r["label"]), "key": key,
                              "size": size, "used": False})

    def _ours_size(self, arch: str) -> dict:
        hp = self.archs_hp.get(arch, {})
        return {k: hp[k] for k in SIZE_KEYS if k in hp}

    def match(self, group: str, label: str, key: dict) -> tuple[dict | None, str | None]:
        """(the paper row trained like ours, or None; a note when a same-label paper row differs)."""
        size = self._ours_size(key["arch"])
        for r in self.rows:
            if r["key"] == key and all(size.get(k) == v for k, v in r["size"].items()):
                r["used"] = True
                return r, None
        for r in self.rows:
            if r["label"] == label and r["group"] == group and r["key"] is not None:
                diff = _differences({**key, **size}, {**r["key"], **r["size"]})
                return None, f"the paper's row {label!r} was trained differently: {'; '.join(diff)} (ours vs paper)"
        return None, None

    def value(self, row: dict, cell: str, metric: str):
        v = row.get("values", {}).get(self.cell_map.get(cell, cell), {})
        v = v.get(metric) if isinstance(v, dict) else None
        return (v[0], v[1]) if isinstance(v, list) else (None, None)

    def unused(self) -> list[dict]:
        return [r for r in self.rows if not r["used"]]


# ---------------------------------------------------------------- metrics tables


def load_entries(entries: list[dict]) -> pd.DataFrame:
    """One row per (evaluation, metric) from the runs' evaluation.json, picking each entry's cell and variant."""
    rows, cache = [], {}
    for e in entries:
        if e["metrics"] not in cache:
            with open(e["metrics"]) as f:
                cache[e["metrics"]] = json.load(f)
        results = cache[e["metrics"]]["results"]
        key = f"{e['cell']}/{e['variant']}"
        if key not in results:
            raise ValueError(f"{e['metrics']}: no result for {key} (has {', '.join(results)})")
        m = results[key]
        extra = ["mean_weight"] if e["variant"] == "weighted" and m.get("mean_weight") is not None else []
        for metric in [*METRICS, *extra]:
            rows.append({**{k: e[k] for k in ("group", "row", "cell", "seed", "model", "variant", "setting", "x")},
                         "metric": metric, "value": m[metric]})
    return pd.DataFrame(rows)


def summarize(values: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and seed count per (group, row, cell, metric), in the plan's row order."""
    keys = ["group", "row", "cell", "metric"]
    order = {k: list(dict.fromkeys(values[k])) for k in ("group", "row", "cell")}
    g = values.groupby(keys, sort=False)
    out = g["value"].agg(mean="mean", std=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"),
                         n_seeds="count").reset_index()
    for col in ("model", "variant", "setting", "x"):
        out[col] = g[col].first().to_numpy()
    idx = {(gr, r): i for i, (gr, r) in enumerate(dict.fromkeys(zip(values["group"], values["row"])))}
    out["_order"] = [idx[(gr, r)] for gr, r in zip(out["group"], out["row"])]
    out["_cell"] = out["cell"].map({c: i for i, c in enumerate(order["cell"])})
    out = out.sort_values(["_order", "_cell"], kind="stable").drop(columns=["_order", "_cell"])
    return out.reset_index(drop=True)


def _fmt(mean, std) -> str:
    if mean is None or pd.isna(mean):
        return ""
    return f"{mean:.4f}" if std is None or pd.isna(std) else f"{mean:.4f} ± {std:.4f}"


class Grid:
    """A wide table as rows of strings with a kind ('ours', 'paper', 'cited', 'note'), as Markdown or HTML."""

    def __init__(self, title: str, header: list[str], footer: str = FOOTER):
        self.title, self.header, self.rows, self.notes, self.footer = title, header, [], [], footer

    def add(self, kind: str, cells: list[str]):
        self.rows.append((kind, cells))

    def markdown(self) -> str:
        lines = [f"# {self.title}", "", "| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for _, cells in self.rows]
        lines += [""] + [f"- {n}" for n in self.notes] + ["", self.footer, ""]
        return "\n".join(lines)

    def html(self) -> str:
        esc = html.escape
        head = "".join(f"<th>{esc(h)}</th>" for h in self.header)
        body = "\n".join(f'<tr class="{kind}">' + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>"
                         for kind, cells in self.rows)
        notes = "".join(f"<li>{esc(n)}</li>" for n in self.notes)
        return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{esc(self.title)}</title>"
                "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
                "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,td:nth-child(2)"
                "{text-align:left}tr.paper td,tr.cited td{color:#555;font-style:italic}tr.note td{color:#a50}"
                "th{background:#eee}</style></head><body>\n"
                f"<h2>{esc(self.title)}</h2>\n<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>\n"
                f"<ul>{notes}</ul><p><small>{esc(self.footer)}</small></p></body></html>\n")


def metrics_table(spec: dict, entries: list[dict], archs_hp: dict, csv_out, md_out, html_out, *,
                  paper: dict | None = None, cell_map: dict | None = None, log=print) -> pd.DataFrame:
    """One metrics table: CSV (long form, with the paper beside), Markdown and HTML (wide)."""
    paper = paper_data() if paper is None else paper
    rows_paper = PaperRows(spec["paper"], paper, archs_hp, cell_map or {})
    summary = summarize(load_entries(entries))
    keys = {(e["group"], e["row"]): e["key"] for e in entries}
    cells = list(dict.fromkeys(summary["cell"]))
    notes, matched = {}, {}
    for (group, label), key in keys.items():
        matched[(group, label)], notes[(group, label)] = rows_paper.match(group, label, key)

    def paper_cols(r):
        m = matched[(r["group"], r["row"])]
        mean, std = rows_paper.value(m, r["cell"], r["metric"]) if m else (None, None)
        return pd.Series([mean, std, m["label"] if m else None], index=["paper_mean", "paper_std", "paper_row"])

    summary[["paper_mean", "paper_std", "paper_row"]] = summary.apply(paper_cols, axis=1)
    pm = pd.to_numeric(summary["paper_mean"], errors="coerce")
    summary["diff_in_std"] = (summary["mean"] - pm) / summary["std"].where(summary["std"] > 0)
    summary["paper_note"] = [notes[(g, r)] for g, r in zip(summary["group"], summary["row"])]
    _csv_atomic(summary, csv_out)

    shown = [m for m in SHOWN if m in set(summary["metric"])]
    grid = Grid(spec["title"], ["", ""] + [f"{c} {LABELS[m]}" for c in cells for m in shown])
    by = summary.set_index(["group", "row", "cell", "metric"])
    differ: dict[str, list[str]] = {}  # how the paper trained a same-label row differently -> our rows
    untested: dict[str, list[str]] = {}  # cell lines a row is not tested on (its cells:) -> our rows
    tested = set(by.index.droplevel("metric"))
    for (group, label) in dict.fromkeys(zip(summary["group"], summary["row"])):
        name = f"{group}: {label}" if group else label
        ours, theirs = [], []
        for c in cells:
            if (group, label, c) not in tested:
                untested.setdefault(c, []).append(name)
            for m in shown:
                r = by.loc[(group, label, c, m)] if (group, label, c, m) in by.index else None
                ours.append(_fmt(r["mean"], r["std"]) if r is not None else "—")
                theirs.append(_fmt(r["paper_mean"], r["paper_std"]) if r is not None else "")
        n = int(summary[(summary["group"] == group) & (summary["row"] == label)]["n_seeds"].max())
        grid.add("ours", [name, f"ours (n={n})"] + ours)
        if any(theirs):
            grid.add("paper", ["", "paper"] + theirs)
        if notes[(group, label)]:
            how = notes[(group, label)].split(": ", 1)[1]  # the differences, without the row's label
            differ.setdefault(how, []).append(name)
    for c, names in untested.items():
        grid.notes.append(f"Not tested on {c} (the row's cells:): {', '.join(names)}.")
    for how, names in differ.items():
        grid.notes.append(f"{', '.join(names)}: the paper's row{'s' if len(names) > 1 else ''} of the same "
                          f"label {'were' if len(names) > 1 else 'was'} trained differently: {how}.")
    cited_elsewhere = []
    for r in rows_paper.unused():
        vals = [_fmt(*rows_paper.value(r, c, m)) for c in cells for m in shown]
        name = f"{r['group']}: {r['label']}" if r["group"] else r["label"]
        how = f"cited; trained as {_describe(r['key'])}" if r["key"] else "cited"
        if any(vals):
            grid.add("cited", [name, how] + vals)
        else:
            cited_elsewhere.append(f"{name} ({how})")
    if cited_elsewhere:
        grid.notes.append("The paper also reports, for cell lines not in this table: " + "; ".join(cited_elsewhere) + ".")
    for _, r in summary[summary["metric"] == "mean_weight"].iterrows():
        grid.notes.append(f"{r['row']} ({r['cell']}): mean learned weight {_fmt(r['mean'], r['std'])}.")
    if rows_paper.table.get("notes"):
        grid.notes.append(f"Paper: {rows_paper.table['notes']}")
    _write_atomic(md_out, grid.markdown())
    _write_atomic(html_out, grid.html())
    if spec.get("skipped_cells"):
        log(f"{spec['name']}: cell lines without expression left out: {', '.join(spec['skipped_cells'])}")
    log(f"{spec['name']}: {len(entries)} evaluations, {len(keys)} rows, "
        f"{sum(m is not None for m in matched.values())} beside a paper row trained the same way")
    return summary


# ---------------------------------------------------------------- parameter counts


def parameter_table(spec: dict, csv_out, md_out, html_out, *, paper: dict | None = None, log=print) -> pd.DataFrame:
    """Trainable parameters (tied weights once) of each row's model and of its parts, paper beside."""
    from .archs import build_model
    from .genes import FEATURES
    from .model import count_parameters

    paper = paper_data() if paper is None else paper
    archs_hp = {r["settings"]["arch"]: r["arch"]["model"] for r in spec["rows"]}
    rows_paper = PaperRows(spec["paper"], paper, archs_hp, {})
    out = []
    for r in spec["rows"]:
        s = r["settings"]
        k = arch_kind(r["arch"]["kind"])
        model_spec = ModelSpec.from_settings(s, confounder=k.confounder, takes_signals=k.takes_signals)
        model = build_model(r["arch"], model_spec, len(FEATURES))
        parts = {name: count_parameters(m) for name, m in model.named_children()}
        key = {**model_spec.as_dict(), "variant": "full", "mixed": False}
        match, note = rows_paper.match(r.get("group", ""), r["label"], key)
        out.append({"row": r["label"], "model": r["model_id"], "parameters": count_parameters(model),
                    "parts": json.dumps(parts), "paper": match["values"] if match else None, "paper_note": note})
    df = pd.DataFrame(out)
    _csv_atomic(df, csv_out)
    grid = Grid(spec["title"], ["model", "ours", "paper", "parts"],
                footer="ours: trainable parameters (tied weights once) of the configured architectures; paper: "
                       "shared/paper/prism-paper.txt.")
    for r in out:
        p = f"{r['paper'] / 1000:,.0f}K" if r["paper"] else ""
        parts = ", ".join(f"{k} {v:,}" for k, v in json.loads(r["parts"]).items())
        grid.add("ours", [r["row"], f"{r['parameters']:,} ({r['parameters'] / 1000:,.0f}K)", p, parts])
        if r["paper_note"]:
            grid.notes.append(f"{r['row']}: {r['paper_note']}.")
    for r in rows_paper.unused():
        grid.add("cited", [r["label"], "", f"{r['values'] / 1000:,.0f}K (cited)", ""])
    _write_atomic(md_out, grid.markdown())
    _write_atomic(html_out, grid.html())
    log(df.drop(columns=["parts"]).to_string(index=False))
    return df


# ---------------------------------------------------------------- hyper-parameters


def hyperparameter_table(spec: dict, csv_out, md_out, html_out, *, paper: dict | None = None, log=print):
    """The hyper-parameters each listed architecture trains with, read from the config; the paper's beside."""
    paper = paper_data() if paper is None else paper
    prow = {r["key"]: r for r in paper.get("tables", {}).get(spec["paper"], {}).get("rows", [])}
    names = list(spec["architectures"])
    out = []
    for arch in names:
        a = spec["architectures"][arch]
        t = a["training"]
        values = {**{k: v for k, v in a["model"].items()}, **t,
                  "schedule": "CosineLR with Linear Warmup" if t.get("schedule", "warmup_cosine") == "warmup_cosine"
                  else t["schedule"], "selection": "validation MSE"}
        for k, v in values.items():
            p = prow.get(k)
            out.append({"architecture": arch, "hyperparameter": p["label"] if p else k, "key": k,
                        "value": json.dumps(v) if isinstance(v, (list, dict)) else v,
                        "paper": p["values"] if p else None})
    df = pd.DataFrame(out)
    _csv_atomic(df, csv_out)
    grid = Grid(spec["title"], ["hyper-parameter"] + [f"ours: {a}" for a in names] + ["paper"],
                footer="ours: the configuration's values (architectures.<name>.model and training); paper: Table 9.")
    keys = list(dict.fromkeys(df["key"]))
    keys.sort(key=lambda k: (k not in prow, list(prow).index(k) if k in prow else 0))
    for k in keys:
        sub = df[df["key"] == k]
        vals = [str(sub[sub["architecture"] == a]["value"].iloc[0]) if (sub["architecture"] == a).any() else ""
                for a in names]
        p = prow.get(k)
        grid.add("ours", [p["label"] if p else k] + vals + [str(p["values"]) if p else ""])
    _write_atomic(md_out, grid.markdown())
    _write_atomic(html_out, grid.html())
    log(f"{len(keys)} hyper-parameters of {', '.join(names)}")
    return df


# ---------------------------------------------------------------- data statistics (Table 8)


def data_statistics_table(spec: dict, stats_files: dict, csv_out, md_out, html_out, *, paper: dict | None = None,
                          cell_map: dict | None = None, log=print):
    """Per-cell-line statistics (prism.statistics JSON files) beside the paper's Table 8."""
    paper = paper_data() if paper is None else paper
    cell_map = cell_map or {}
    prows = paper.get("tables", {}).get(spec["paper"], {}).get("rows", [])
    stats = {c: json.loads(Path(p).read_text()) for c, p in stats_files.items()}
    cells = list(stats)
    out = []
    for r in prows:
        for c in cells:
            out.append({"statistic": r["label"], "key": r["key"], "cell": c, "value": stats[c].get(r["key"]),
                        "paper": r.get("values", {}).get(cell_map.get(c, c))})
    df = pd.DataFrame(out)
    _csv_atomic(df, csv_out)
    grid = Grid(spec["title"], ["statistic"] + [f"{c} {w}" for c in cells for w in ("ours", "paper")],
                footer="ours: computed from this workflow's gene tables, .hic files and ABC predictions; paper: "
                       "Appendix D, Table 8.")
    for r in prows:
        vals = []
        for c in cells:
            v, p = stats[c].get(r["key"]), r.get("values", {}).get(cell_map.get(c, c))
            vals += ["" if v is None else f"{v:,.1f}" if isinstance(v, float) else f"{v:,}",
                     "" if p is None else f"{p:,}"]
        grid.add("ours", [r["label"]] + vals)
    for c in cells:
        for line in stats[c].get("definitions", []):
            if line not in grid.notes:
                grid.notes.append(line)
    _write_atomic(md_out, grid.markdown())
    _write_atomic(html_out, grid.html())
    log(f"statistics of {', '.join(cells)}")
    return df
