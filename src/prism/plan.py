"""What the workflow builds, derived from a validated config: assets, architectures, runs, tables, figures.

The Snakefile's ``common.smk`` is a thin layer over :class:`Plan`; everything here is plain Python
(no torch, no pandas), so a dry run of the paper's jobs plans in well under a second and the logic
is unit-tested without Snakemake.

Paths (written whole so a user can find them):

    resources/<source>/<file>                     every download, verified (see prism.download)
    results/genome/hg38.ml.fa                     the genome, unpacked and indexed
    results/genes/{cell}.tsv                      per-gene table: TSS, split, target, 9 features
    results/shards/{cell}/{chrom}.npz             per-gene windows up to preprocess.window (prism.shards)
    results/store/...                             base-resolution arrays for longer inputs (prism.store)
    results/peaks/{cell}/dnase.macs3.narrowPeak   MACS3 DNase peaks (prism.peaks)
    results/candidates/{cell}.tsv                 EPInformer's enhancer candidates (prism.candidates)
    results/runs/{cells}/{model}/seed{seed}/      one trained model (prism.runs)
        .../evaluation.json                       its test metrics, per (cell line, test-time variant)
    results/tables/{table}.csv|.md|.html          the paper's tables (and any the config adds)
    results/figures/{figure}.png|.svg             the paper's figures

Experiments are data: every table is a config entry of one of a few kinds (:data:`TABLE_KINDS`), and
every figure one of a few plots (:data:`FIGURE_PLOTS`). A metrics table declares its cell lines and
seeds and either rows (label -> settings) or sweeps (setting -> values), optionally in groups; the plan
enumerates runs and evaluations from that alone. :meth:`Plan.targets` is the one registry from which
the Snakefile derives target rules, and the report its titles, sections and captions.
"""

from __future__ import annotations

import csv
import os
import posixpath
import re
from dataclasses import dataclass, field, replace
from importlib import resources
from urllib.parse import urlparse

from . import archs
from .runs import DEFAULT_ARCH, PAPER_DEFAULTS, ModelSpec, Run, RunError

#: kinds of table target and what builds them
TABLE_KINDS = ("metrics", "parameters", "data_statistics", "hyperparameters")
#: kinds of figure panel
FIGURE_PLOTS = ("lines", "bars", "weights", "locus")
#: settings a row may give beside the model settings: how it is tested and on what it is trained
ROW_KEYS = ("variant", "test_length", "trained_on", "seeds", "cells")
#: swept settings that are test-time, not training-time
TEST_SETTINGS = ("test_length",)

#: file extension of each signal kind, as the repositories name their downloads (ENCODE: ``bigBed``)
SIGNAL_EXT = {"bigwig": "bigWig", "hic": "hic", "bigbed": "bigBed"}
#: signal kinds that become per-base tracks of the shards (a bigBed as its 0/1 interval coverage)
TRACK_KINDS = ("bigwig", "bigbed")
#: the paper's three signals and what a Hi-C channel is called in run settings
HIC_SIGNAL_KIND = "hic"


class ConfigError(ValueError):
    """A configuration that cannot be planned; the message names the key at fault."""


@dataclass
class Asset:
    """One file to download into ``resources/``. URLs may hold ``{workdir}``, filled at download time
    (so that a moved working directory plans nothing new)."""

    path: str
    url: str
    md5: str | None = None
    size: int | None = None
    metadata_url: str | None = None
    expect: dict = field(default_factory=dict)
    auth_env: tuple[str, str] | None = None
    #: for files known by ENCODE experiment: {"experiment_url", "select", "download", "metadata"}, the
    #: last two templates still holding {accession}, filled once the experiment names the file
    resolve: dict | None = None

    def as_params(self) -> dict:
        return {
            "resolve": self.resolve,
            "url": self.url,
            "md5": self.md5,
            "size": self.size,
            "metadata_url": self.metadata_url,
            "expect": dict(self.expect),
            "auth_env": list(self.auth_env) if self.auth_env else None,
        }


def expand_workdir(value, workdir: str):
    """``{workdir}`` filled in every string of a params structure (the download adapter's one step)."""
    if isinstance(value, str):
        return value.replace("{workdir}", os.path.abspath(workdir))
    if isinstance(value, dict):
        return {k: expand_workdir(v, workdir) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(expand_workdir(v, workdir) for v in value)
    return value


@dataclass(frozen=True)
class Row:
    """One row of a metrics table: what was trained, on which cell lines, and how it is tested.

    ``trained_on`` None: every test cell line trains its own run; a tuple: one run trained on those
    cell lines together (mixed-cell training), tested on each. ``cells``: the table's cell lines this row
    is tested on, when not all of them. ``x`` is the numeric value of a swept setting (``setting``) for
    figures; None for a labelled row.
    """

    group: str
    label: str
    spec: ModelSpec
    variant: str = "full"
    trained_on: tuple[str, ...] | None = None
    seeds: tuple[int, ...] = ()
    setting: str | None = None
    x: float | None = None
    cells: tuple[str, ...] | None = None

    def key(self) -> dict:
        """How the row was trained and tested, for comparing with the paper's rows."""
        return {**self.spec.as_dict(), "variant": self.variant, "mixed": self.trained_on is not None}


@dataclass(frozen=True)
class Evaluation:
    """One test-set evaluation of one run: which table row it fills."""

    table: str
    row: Row
    cell: str
    run: Run

    @property
    def variant(self) -> str:
        return self.row.variant

    def as_entry(self) -> dict:
        return {
            "group": self.row.group,
            "row": self.row.label,
            "cell": self.cell,
            "seed": self.run.seed,
            "model": self.run.model.model_id,
            "run": self.run.path,
            "variant": self.row.variant,
            "setting": self.row.setting,
            "x": self.row.x,
            "key": self.row.key(),
            "metrics": f"{self.run.path}/evaluation.json",
        }


@dataclass(frozen=True)
class Target:
    """One named target (``snakemake table5``): its files, title, section and caption."""

    name: str
    kind: str  # a table kind, or "figure"
    title: str
    section: str
    caption: str
    outputs: tuple[str, ...]


def _basename(url: str) -> str:
    name = posixpath.basename(urlparse(url).path)
    if not name:
        raise ConfigError(f"cannot name a file after URL {url!r}")
    return name


def paper_data() -> dict:
    """The paper's own numbers, titles and sections (prism/data/paper_tables.yaml)."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 20x faster on this 300-line file
    return yaml.load(resources.files("prism").joinpath("data/paper_tables.yaml").read_text(), Loader=loader)


def variant_kind(variant: str) -> str | None:
    """'full', 'weighted', 'drop' or 'length' for a test-time variant string; None if it is not one."""
    if variant in ("full", "weighted"):
        return variant
    m = re.fullmatch(r"(drop)-[a-z0-9.]+|(length)-[1-9][0-9]*", variant)
    return (m.group(1) or m.group(2)) if m else None


def _fmt_value(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


class Plan:
    """Everything the workflow needs to know, computed once from a validated config."""

    def __init__(self, config: dict, workdir: str | None = None, paper: dict | None = None):
        self.config = config
        self.workdir = os.path.abspath(workdir or os.getcwd())
        self.paper = paper_data() if paper is None else paper
        self.cells = list(config["cell_lines"])
        #: cell lines with an expression source: only these can be tested
        self.measured_cells = [c for c in self.cells if config["cell_lines"][c].get("expression")]
        self.chromosomes = list(config["chromosomes"])
        self.seeds = self._seeds(config.get("seeds", [2, 22, 222, 2222, 22222]), "seeds")
        self.defaults = dict(config.get("run_defaults", {}))
        self.window = int(config.get("preprocess", {}).get("window", 10000))
        self.assets: dict[str, Asset] = {}
        self._asset_by_name: dict[str, str] = {}
        self._signal_paths: dict[tuple[str, str], tuple[str, str]] = {}
        self.notes: list[str] = []  # what the plan decided that a user should read (logged by common.smk)
        self._collect_assets()
        self._check_cells()
        self._check_chromosomes()
        self.architectures = self._architectures()
        self._check_run_defaults()
        self.tables = dict(config.get("experiments", {}))
        self.figures = dict(config.get("figures", {}))
        for name in self.figures:
            if name in self.tables:
                raise ConfigError(f"figures.{name}: a table of the same name exists under experiments:")
        self.evaluations: dict[str, list[Evaluation]] = {
            t: self._evaluations(t, spec) for t, spec in self.tables.items() if self._table_kind(t) == "metrics"}
        self.tests: dict[str, list[tuple[str, str]]] = self._tests()
        self.predictions = self._predictions()
        self._check_runs()
        self._check_figures()
        skipped = [c for c in self.cells if c not in self.measured_cells]
        if skipped:
            self.notes.append(f"cell lines without expression ({', '.join(skipped)}) are left out of every table "
                              "(cells: all); they get shards and predictions")

    # ------------------------------------------------------------------ assets
    def _add(self, asset: Asset) -> str:
        old = self.assets.get(asset.path)
        if old is not None and old.url != asset.url:
            raise ConfigError(f"two assets would download to {asset.path}: {old.url} and {asset.url}")
        self.assets[asset.path] = asset
        return asset.path

    def _collect_assets(self):
        for name, a in self.config["assets"].items():
            path = f"resources/assets/{name}/{_basename(a['url'])}"
            self._asset_by_name[name] = self._add(Asset(path, a["url"], a.get("md5"), a.get("size")))
        sources = self.config.get("sources", {})
        for cell, spec in self.config["cell_lines"].items():
            hics = []
            for signal, s in spec["signals"].items():
                key = f"cell_lines.{cell}.signals.{signal}"
                for src in ("encode", "4dn"):
                    if src in s:
                        if src not in sources:
                            raise ConfigError(f"{key} uses source {src!r}, but sources.{src} is not configured")
                        for need in ("download", "metadata"):
                            if need not in sources[src]:
                                raise ConfigError(f"sources.{src} lacks {need} (a URL template)")
                        kind = s.get("kind", "hic" if src == "4dn" else "bigwig")
                        ext = SIGNAL_EXT[kind]
                        acc = s[src]
                        tmpl = sources[src]
                        asset = Asset(
                            path=f"resources/{src}/{acc}.{ext}",
                            url=tmpl["download"].format(accession=acc, ext=ext, workdir="{workdir}"),
                            md5=s.get("md5"),
                            size=s.get("size"),
                            metadata_url=tmpl["metadata"].format(accession=acc, ext=ext, workdir="{workdir}"),
                            # ENCODE's metadata names the format: a ChIA-PET file that is not a bigWig is refused
                            expect={**({"file_format": ext} if src == "encode" else {}), **tmpl.get("expect", {}),
                                    **s.get("expect", {})},
                            auth_env=tuple(tmpl["auth_env"]) if tmpl.get("auth_env") else None,
                        )
                        break
                else:
                    kind = s["kind"]
                    if "encode_experiment" in s:
                        asset = self._experiment_asset(s, sources, key)
                    else:
                        asset = Asset(f"resources/signals/{cell}/{signal}/{_basename(s['url'])}", s["url"],
                                      s.get("md5"), s.get("size"))
                if kind == "hic":
                    hics.append(signal)
                self._signal_paths[(cell, signal)] = (self._add(asset), kind)
            if len(hics) > 1:
                raise ConfigError(f"cell_lines.{cell}.signals has {len(hics)} Hi-C signals ({', '.join(hics)}); "
                                  "a cell line takes one")
        self._weights_assets()

    def _weights_assets(self):
        """Released and pre-trained weights (``weights:``): Hugging Face files, resolved through the
        repository's listing at a pinned commit at download time (sizes and SHA-256 from the listing)."""
        endpoint = self.config.get("sources", {}).get("huggingface", {}).get("endpoint", "https://huggingface.co")
        self._released: dict[tuple[str, str, int], str] = {}
        for name, w in self.config.get("weights", {}).items():
            where = f"weights.{name}"
            hf = w.get("huggingface")
            if not hf or not {"repo", "revision"} <= set(hf):
                raise ConfigError(f"{where}.huggingface needs repo and revision (a pinned commit)")
            base = {"kind": "huggingface", "repo": hf["repo"], "revision": hf["revision"], "endpoint": endpoint}
            for f in w.get("files", []):
                folder, _, pattern = f.rpartition("/")
                path = f"resources/weights/{name}/{f}"
                self._add(Asset(path, f"{endpoint}/{hf['repo']}/{f}",
                                resolve={**base, "folder": folder, "pattern": pattern}))
            per_run = w.get("per_run")
            if per_run:
                for cell, theirs in w.get("cells", {}).items():
                    for seed in w.get("seeds", self.seeds):
                        folder = per_run["folder"].format(cell=theirs, seed=seed)
                        path = f"resources/weights/{name}/{cell}/seed{seed}.ckpt"
                        self._add(Asset(path, f"{endpoint}/{hf['repo']}/{folder}/{per_run['pattern']}",
                                        resolve={**base, "folder": folder, "pattern": per_run["pattern"]}))
                        self._released[(name, cell, int(seed))] = path

    def _experiment_asset(self, s: dict, sources: dict, key: str) -> Asset:
        """A file named by its ENCODE experiment and fields; its accession is resolved at download time."""
        tmpl = sources.get("encode", {})
        if "experiment" not in tmpl:
            raise ConfigError(f"{key} uses encode_experiment, but sources.encode.experiment is not configured")
        exp, ext = s["encode_experiment"], SIGNAL_EXT[s["kind"]]
        expect = {**tmpl.get("expect", {}), **s.get("expect", {})}
        select = {"file_format": ext, **({"assembly": expect["assembly"]} if "assembly" in expect else {}),
                  **s["select"]}
        slug = "_".join(str(v).replace(" ", "-") for k, v in s["select"].items())
        experiment_url = tmpl["experiment"].format(accession=exp, workdir="{workdir}")
        fill = {"accession": "{accession}", "ext": ext, "workdir": "{workdir}"}
        return Asset(
            path=f"resources/encode/{exp}.{slug}.{ext}", url=experiment_url, md5=s.get("md5"), size=s.get("size"),
            expect={**expect, **select},  # the chosen file's own metadata must say what selected it
            resolve={"experiment_url": experiment_url, "select": select,
                     "download": tmpl["download"].format(**fill), "metadata": tmpl["metadata"].format(**fill)},
        )

    def asset(self, name: str, where: str | None = None) -> str:
        """Path of a shared asset by its config name."""
        try:
            return self._asset_by_name[name]
        except KeyError:
            at = f"{where} names {name!r}, which" if where else f"asset {name!r}"
            raise ConfigError(f"{at} is not under assets:") from None

    def signal(self, cell: str, name: str) -> tuple[str, str]:
        """(path, kind) of one signal of one cell line; kind is 'bigwig', 'bigbed' or 'hic'."""
        try:
            return self._signal_paths[(cell, name)]
        except KeyError:
            raise ConfigError(f"cell line {cell!r} has no signal {name!r} (cell_lines.{cell}.signals)") from None

    def signals_of(self, cell: str) -> list[str]:
        return list(self.config["cell_lines"][cell]["signals"])

    def bigwig_tracks(self, cell: str) -> dict[str, str]:
        return {n: p for (c, n), (p, k) in self._signal_paths.items() if c == cell and k == "bigwig"}

    def tracks(self, cell: str) -> dict[str, tuple[str, str]]:
        """{name: (path, kind)} of the signals that become shard tracks (bigWig, bigBed), in config order."""
        return {n: (p, k) for (c, n), (p, k) in self._signal_paths.items() if c == cell and k in TRACK_KINDS}

    def hic(self, cell: str) -> str | None:
        hics = [p for (c, n), (p, k) in self._signal_paths.items() if c == cell and k == "hic"]
        return hics[0] if hics else None

    def _check_cells(self):
        """Every cell line's expression and promoter activity can be built, checked before any job runs."""
        for cell, spec in self.config["cell_lines"].items():
            expr = spec.get("expression")
            if expr is not None:
                self.asset(expr["asset"], f"cell_lines.{cell}.expression.asset")
                if expr["source"] == "csv_column" and not expr.get("column"):
                    raise ConfigError(f"cell_lines.{cell}.expression: source csv_column needs 'column' "
                                      "(the CSV column holding this cell line's CAGE)")
            pa = spec["promoter_activity"]
            if pa["source"] == "abc_genelist":
                if "asset" not in pa:
                    raise ConfigError(f"cell_lines.{cell}.promoter_activity: source abc_genelist needs 'asset'")
                self.asset(pa["asset"], f"cell_lines.{cell}.promoter_activity.asset")
            else:
                tracks = self.bigwig_tracks(cell)
                for need in ("h3k27ac", "dnase"):
                    if need not in tracks:
                        raise ConfigError(f"cell_lines.{cell}.promoter_activity: source bigwig needs a "
                                          f"'{need}' bigWig signal under cell_lines.{cell}.signals")

    def _check_chromosomes(self):
        """Configured chromosomes must hold genes: checked against the split CSV and the genome index
        when they are already here (a fresh checkout has neither; the gene-table job checks then)."""
        seen = set()
        for c in self.chromosomes:
            if c in seen:
                raise ConfigError(f"chromosomes lists {c} twice")
            seen.add(c)
        split = os.path.join(self.workdir, self.asset("split"))
        if os.path.exists(split):
            with open(split, newline="") as fh:
                rows = csv.reader(fh)
                header = next(rows, [])
                col = header.index("chrom") if "chrom" in header else None
                have = {("chr" + r[col].removeprefix("chr")) for r in rows if col is not None and len(r) > col}
            for c in self.chromosomes:
                if col is not None and "chr" + c.removeprefix("chr") not in have:
                    raise ConfigError(f"chromosomes lists {c}, which holds no gene of {self.asset('split')}")
        fai = os.path.join(self.workdir, "results/genome/hg38.ml.fa.fai")
        if os.path.exists(fai):
            with open(fai) as fh:
                names = {"chr" + line.split("\t", 1)[0].removeprefix("chr") for line in fh if line.strip()}
            for c in self.chromosomes:
                if "chr" + c.removeprefix("chr") not in names:
                    raise ConfigError(f"chromosomes lists {c}, which is absent from the genome ({fai})")

    def gene_table_inputs(self, cell: str) -> dict[str, str]:
        """Files the per-gene table of a cell line is built from, by role."""
        spec = self.config["cell_lines"][cell]
        out = {"split": self.asset("split"), "halflife": self.asset("halflife")}
        if spec.get("expression"):
            out["expression"] = self.asset(spec["expression"]["asset"])
        pa = spec["promoter_activity"]
        if pa["source"] == "abc_genelist":
            out["genelist"] = self.asset(pa["asset"])
        else:
            tracks = self.bigwig_tracks(cell)
            out["pa_h3k27ac"], out["pa_dnase"] = tracks["h3k27ac"], tracks["dnase"]
        return out

    # ------------------------------------------------------------------ architectures
    def _architectures(self) -> dict[str, dict]:
        """{name: {kind, model, training, ...}}: each architecture with its training settings merged."""
        out = {}
        base_training = dict(self.config.get("training", {}))
        for name, a in self.config.get("architectures", {}).items():
            where = f"architectures.{name}"
            try:
                kind = archs.kind(a["kind"])
            except ValueError as e:
                raise ConfigError(f"{where}.kind: {e}") from None
            missing = [k for k in kind.required_hp if k not in a.get("model", {})]
            if missing:
                raise ConfigError(f"{where}.model lacks {', '.join(missing)} (kind {kind.name} needs them)")
            model = dict(a.get("model", {}))
            if a.get("pretrained"):
                if not kind.pretrained:
                    raise ConfigError(f"{where}.pretrained: kind {kind.name} cannot start from pre-trained weights")
                if model.get("pretrained"):
                    raise ConfigError(f"{where}: give pretrained once, as architectures.{name}.pretrained")
                # the model is built from the downloaded weights' directory, for training and evaluation alike
                model["pretrained"] = f"resources/weights/{a['pretrained']}"
            out[name] = {**a, "kind": kind.name, "model": model,
                         "training": {**base_training, **a.get("training", {})}}
            for ref in ("pretrained", "released"):
                if a.get(ref) is not None and a[ref] not in self.config.get("weights", {}):
                    raise ConfigError(f"{where}.{ref} names {a[ref]!r}, which is not under weights:")
            if a.get("released") and not self.config["weights"][a["released"]].get("per_run"):
                raise ConfigError(f"{where}.released: weights.{a['released']} needs per_run (one checkpoint per run)")
            if a.get("released") and kind.importer is None:
                raise ConfigError(f"{where}.released: kind {kind.name} has no importer of released checkpoints "
                                  f"(prism.archs: {', '.join(k.name for k in archs.KINDS.values() if k.importer)})")
        if DEFAULT_ARCH not in out:
            raise ConfigError(f"architectures has no {DEFAULT_ARCH!r} entry (Prism's own model)")
        return out

    def kind_of(self, arch: str) -> archs.Kind:
        return archs.kind(self.architectures[arch]["kind"])

    def model(self, overrides: dict, where: str, *, inherit: bool = True) -> ModelSpec:
        """The canonical model settings of one row: run_defaults, then the row's own settings."""
        settings = {**self.defaults, **overrides} if inherit else dict(overrides)
        arch = settings.get("arch", DEFAULT_ARCH)
        if arch not in self.architectures:
            raise ConfigError(f"{where}.arch names {arch!r}, which is not under architectures: "
                              f"({', '.join(self.architectures)})")
        kind = self.kind_of(arch)
        if not kind.confounder:
            given = [k for k in ("K", "lambda1", "lambda2") if k in overrides]
            if given:
                raise ConfigError(f"{where}: {', '.join(given)} do not apply to architecture {arch} "
                                  f"(kind {kind.name} has no confounder encoder)")
        if not kind.takes_signals and overrides.get("signals"):
            raise ConfigError(f"{where}: signals do not apply to architecture {arch} (kind {kind.name} is "
                              "sequence only)")
        try:
            return ModelSpec.from_settings(settings, confounder=kind.confounder, takes_signals=kind.takes_signals)
        except (RunError, ValueError) as e:
            raise ConfigError(f"{where}: {e}") from None

    def _check_run_defaults(self):
        """run_defaults on their own, so their errors are blamed on them and not on the first table."""
        spec = self.model({}, "run_defaults")
        for cell in self.measured_cells:
            for sig in spec.signals:
                if (cell, sig) not in self._signal_paths:
                    raise ConfigError(f"run_defaults.signals names {sig!r}, which cell line {cell} does not have "
                                      f"(cell_lines.{cell}.signals: {', '.join(self.signals_of(cell))})")

    # ------------------------------------------------------------------ tables
    def _table_kind(self, table: str) -> str:
        return self.tables[table].get("kind", "metrics")

    def _seeds(self, seeds, where: str) -> list[int]:
        seeds = list(seeds)
        dup = sorted({s for s in seeds if seeds.count(s) > 1})
        if dup:
            raise ConfigError(f"{where} lists seed {dup[0]} twice (each seed is one run)")
        return seeds

    def _cells(self, exp: dict, where: str) -> list[str]:
        cells = exp.get("cells", "all")
        if cells == "all":
            return list(self.measured_cells)
        cells = list(cells)
        for c in cells:
            if c not in self.config["cell_lines"]:
                raise ConfigError(f"{where}.cells names {c!r}, which is not under cell_lines:")
            if c not in self.measured_cells:
                raise ConfigError(f"{where}.cells names {c!r}, which has no expression: to test on it, give "
                                  f"cell_lines.{c}.expression")
        if len(set(cells)) != len(cells):
            raise ConfigError(f"{where}.cells lists a cell line twice")
        return cells

    def table_rows(self, table: str) -> list[Row]:
        """The rows of a metrics or parameters table, in order (groups, then rows or sweep values)."""
        exp = self.tables[table]
        where = f"experiments.{table}"
        seeds = tuple(self._seeds(exp.get("seeds", self.seeds), f"{where}.seeds"))
        base = dict(exp.get("model", {}))
        groups: list[tuple[str, dict, str]] = []  # (group label, group spec, where)
        if "rows" in exp:
            groups.append(("", {"rows": exp["rows"]}, where))
        for setting, values in exp.get("sweeps", {}).items():
            groups.append((setting, {"sweep": {setting: values}}, f"{where}.sweeps"))
        for label, g in exp.get("groups", {}).items():
            groups.append((label, g, f"{where}.groups.{label}"))
        if not groups:
            raise ConfigError(f"{where} has no rows, sweeps or groups")
        out = []
        for glabel, g, gwhere in groups:
            gbase = {**base, **g.get("model", {})}
            if "rows" in g:
                for label, r in g["rows"].items():
                    out.append(self._row(glabel, str(label), {**gbase, **(r or {})}, seeds, f"{gwhere}.rows.{label}"))
            for setting, values in g.get("sweep", {}).items():
                if len(set(map(float, values))) != len(values):
                    raise ConfigError(f"{gwhere}.{setting} lists a value twice")
                for v in sorted(values, key=float):  # numeric order, whatever the config's order
                    r = self._row(glabel, _fmt_value(v), {**gbase, setting: v}, seeds, f"{gwhere}.{setting}")
                    out.append(replace(r, setting=setting, x=float(v)))
        labels = [(r.group, r.label) for r in out]
        for i, lab in enumerate(labels):
            if lab in labels[:i]:
                raise ConfigError(f"{where} has two rows labelled {lab[1]!r}" + (f" in group {lab[0]!r}" if lab[0] else ""))
        return out

    def _row(self, group: str, label: str, settings: dict, seeds: tuple, where: str) -> Row:
        settings = dict(settings)
        extra = {k: settings.pop(k) for k in ROW_KEYS if k in settings}
        spec = self.model(settings, where)
        variant = extra.get("variant", "full")
        if "test_length" in extra:
            if variant != "full":
                raise ConfigError(f"{where}: give either variant or test_length, not both")
            tl = int(extra["test_length"])
            if tl > spec.length:
                raise ConfigError(f"{where}: test_length {tl} is longer than the trained length {spec.length}")
            variant = f"length-{tl}"
        self._check_variant(variant, spec, where)
        trained_on = extra.get("trained_on")
        if trained_on is not None:
            trained_on = ("all",) if trained_on == "all" else tuple(trained_on)
        row_seeds = tuple(self._seeds(extra["seeds"], f"{where}.seeds")) if "seeds" in extra else seeds
        cells = tuple(extra["cells"]) if "cells" in extra else None
        return Row(group, label, spec, variant, trained_on, row_seeds, cells=cells)

    def _check_variant(self, variant: str, spec: ModelSpec, where: str):
        kind = self.kind_of(spec.arch)
        name = variant_kind(variant)
        if name is None:
            raise ConfigError(f"{where}: unknown test-time variant {variant!r} (full, weighted, drop-<signal>; "
                              "or give test_length)")
        if name not in kind.variants:
            raise ConfigError(f"{where}: variant {variant!r} does not apply to architecture {spec.arch} "
                              f"(kind {kind.name}: {', '.join(kind.variants)})")
        if name == "drop" and variant[5:] not in spec.signals:
            raise ConfigError(f"{where}: variant {variant!r} drops {variant[5:]!r}, which the model does not use "
                              f"({list(spec.signals)})")
        if name == "weighted" and not spec.uses_confounder:
            raise ConfigError(f"{where}: variant 'weighted' needs Prism (K > 0, lambda1 != 0)")

    def _evaluations(self, table: str, exp: dict) -> list[Evaluation]:
        where = f"experiments.{table}"
        cells = self._cells(exp, where)
        out = []
        for row in self.table_rows(table):
            rwhere = f"{where}: row {row.label!r}"
            tested = cells
            if row.cells is not None:
                for c in row.cells:
                    if c not in cells:
                        raise ConfigError(f"{rwhere}: cells names {c!r}, which is not among the table's cells "
                                          f"({', '.join(cells)})")
                if len(set(row.cells)) != len(row.cells):
                    raise ConfigError(f"{rwhere}: cells lists a cell line twice")
                tested = [c for c in cells if c in row.cells]  # in the table's column order
            if row.trained_on is not None:
                together = list(cells) if row.trained_on == ("all",) else list(row.trained_on)
                for c in together:
                    if c not in self.measured_cells:
                        raise ConfigError(f"{rwhere}: trained_on names {c!r}, which is not a cell line with "
                                          "expression under cell_lines:")
                if len(together) < 2:
                    raise ConfigError(f"{rwhere}: trained_on (mixed-cell training) needs at least two cell lines")
                rrow = replace(row, trained_on=tuple(together))
                missing = [c for c in tested if c not in together]
                if missing:
                    raise ConfigError(f"{rwhere}: tested on {missing[0]}, which it is not trained on")
                out += [Evaluation(table, rrow, c, Run(tuple(together), row.spec, s)) for c in tested for s in row.seeds]
            else:
                out += [Evaluation(table, row, c, Run((c,), row.spec, s)) for c in tested for s in row.seeds]
        return out

    def _tests(self) -> dict[str, list[tuple[str, str]]]:
        """{run path: sorted (cell, variant) pairs} that one evaluation job per run computes."""
        tests: dict[str, set] = {}
        for evs in self.evaluations.values():
            for e in evs:
                tests.setdefault(e.run.path, set()).add((e.cell, e.variant))
        return {k: sorted(v) for k, v in tests.items()}

    def _check_runs(self):
        for run in self.runs():
            kind = self.kind_of(run.model.arch)
            for cell in run.cells:
                for sig in run.model.signals:
                    if (cell, sig) not in self._signal_paths:
                        tables = sorted({e.table for evs in self.evaluations.values() for e in evs if e.run == run})
                        raise ConfigError(f"run {run.path} (experiments.{tables[0]}) uses signal {sig!r}, which cell "
                                          f"line {cell} does not have (cell_lines.{cell}.signals)")
                if "peaks" in kind.inputs_for(self.architectures[run.model.arch]["model"]) and \
                        self.dnase_signal(cell) is None:
                    raise ConfigError(f"run {run.path}: architecture {run.model.arch} needs MACS3 peaks of a 'dnase' "
                                      f"bigWig, which cell line {cell} does not have")
                if "elements" in kind.inputs:
                    self.candidates_inputs(cell)
            if "blacklist" in kind.inputs and "blacklist" not in self._asset_by_name:
                raise ConfigError(f"run {run.path}: architecture {run.model.arch} (kind {kind.name}) masks the "
                                  "ENCODE blacklist: add assets.blacklist")
            if self.architectures[run.model.arch].get("released"):
                self.released_checkpoint(run)
            store = int(self.config.get("preprocess", {}).get("store_length", 200000))
            if run.model.length > max(self.window, store):
                raise ConfigError(f"run {run.path} needs input length {run.model.length}, longer than "
                                  f"preprocess.window {self.window} and preprocess.store_length {store}")

    def dnase_signal(self, cell: str) -> str | None:
        p = self.bigwig_tracks(cell).get("dnase")
        return p

    def runs(self, table: str | None = None) -> list[Run]:
        """Distinct runs, in a stable order (all tables, and predictions, when table is None)."""
        tables = [table] if table else list(self.evaluations)
        seen = {}
        for t in tables:
            for e in self.evaluations.get(t, []):
                seen.setdefault(e.run.path, e.run)
        if table is None:
            for _, run in getattr(self, "predictions", []):
                seen.setdefault(run.path, run)
        return list(seen.values())

    def released_archs(self) -> list[str]:
        return [a for a, v in self.architectures.items() if v.get("released")]

    def model_pattern(self, *, released: bool) -> str:
        """Regex of the model wildcard for runs that are imported (released) or trained (not)."""
        rel = [re.escape(a) for a in self.released_archs()]
        generic = r"([a-z][a-z0-9.-]*_)?L\d+_[A-Za-z0-9.+_-]+"
        if released:
            return f"({'|'.join(rel)})_L\\d+_[A-Za-z0-9.+_-]+" if rel else "no-released-model"
        return f"(?!({'|'.join(rel)})_){generic}" if rel else generic

    def peaks_inputs(self, cell: str) -> dict[str, str]:
        dnase = self.dnase_signal(cell)
        if dnase is None:
            raise ConfigError(f"cell line {cell}: MACS3 peaks need a 'dnase' bigWig signal (cell_lines.{cell}.signals)")
        return {"dnase": dnase}

    def candidates_inputs(self, cell: str) -> dict[str, list[str]]:
        """EPInformer's candidates: the cell line's ABC predictions if it has them, else its MACS3 peaks
        with activity and contact from its own signals (a new cell line needs no ABC run)."""
        out = {"genes": [f"results/genes/{cell}.tsv"]}
        abc = self.config["cell_lines"][cell].get("abc_predictions")
        if abc:
            out["abc"] = [self.asset(abc["asset"], f"cell_lines.{cell}.abc_predictions.asset")]
            return out
        tracks = self.bigwig_tracks(cell)
        missing = [s for s in ("h3k27ac", "dnase") if s not in tracks]
        if missing or not self.hic(cell):
            raise ConfigError(f"cell line {cell}: EPInformer's candidates need abc_predictions, or h3k27ac and dnase "
                              f"bigWigs and a Hi-C signal (cell_lines.{cell})")
        out.update(peaks=[f"results/peaks/{cell}/dnase.macs3.narrowPeak"], h3k27ac=[tracks["h3k27ac"]],
                   dnase=[tracks["dnase"]], hic=[self.hic(cell)])
        return out

    def statistics_inputs(self, cell: str) -> dict[str, list[str]]:
        """Files Table 8's statistics of one cell line are computed from."""
        out = {"genes": [f"results/genes/{cell}.tsv"], "fai": ["results/genome/hg38.ml.fa.fai"]}
        hic = self.hic(cell)
        if hic is None:
            raise ConfigError(f"cell line {cell}: Table 8's statistics need a Hi-C signal (cell_lines.{cell}.signals)")
        out["hic"] = [hic]
        abc = self.config["cell_lines"][cell].get("abc_predictions")
        if abc:
            out["abc"] = [self.asset(abc["asset"], f"cell_lines.{cell}.abc_predictions.asset")]
        return out

    def table_entries(self, table: str) -> list[dict]:
        return [e.as_entry() for e in self.evaluations.get(table, [])]

    def table_inputs(self, table: str) -> list[str]:
        return sorted({f"{e.run.path}/evaluation.json" for e in self.evaluations.get(table, [])})

    def table_spec(self, table: str) -> dict:
        """What the table script needs besides its inputs: kind, title, paper key, cells, rows."""
        exp = self.tables[table]
        kind = self._table_kind(table)
        out = {"name": table, "kind": kind, "title": self.title(table), "paper": exp.get("paper", table)}
        if exp.get("cells", "all") == "all":  # said in the table's log: cell lines left out for want of expression
            out["skipped_cells"] = [c for c in self.cells if c not in self.measured_cells]
        if kind == "parameters":
            out["rows"] = [{"label": r.label, "group": r.group, "settings": r.spec.as_dict(),
                            "model_id": r.spec.model_id, "arch": self.architectures[r.spec.arch]}
                           for r in self.table_rows(table)]
        elif kind == "hyperparameters":
            names = exp.get("architectures", [DEFAULT_ARCH])
            for a in names:
                if a not in self.architectures:
                    raise ConfigError(f"experiments.{table}.architectures names {a!r}, which is not under "
                                      "architectures:")
            out["architectures"] = {a: self.architectures[a] for a in names}
        elif kind == "data_statistics":
            out["cells"] = self._cells(exp, f"experiments.{table}")
        return out

    # ------------------------------------------------------------------ targets (the one registry)
    def title(self, name: str) -> str:
        spec = self.tables.get(name) or self.figures.get(name) or {}
        paper = self.paper.get("tables", {}).get(spec.get("paper", name), {})
        return spec.get("title") or paper.get("title") or name

    def section(self, name: str) -> str:
        spec = self.tables.get(name) or self.figures.get(name) or {}
        paper = self.paper.get("tables", {}).get(spec.get("paper", name), {})
        return spec.get("section") or paper.get("section") or "Other tables and figures"

    def caption(self, name: str) -> str:
        """What was trained, on which cell lines, with how many seeds, and which paper table it reproduces."""
        spec = self.tables.get(name) or self.figures.get(name) or {}
        paper_key = spec.get("paper", name)
        reproduces = (f"It reproduces the paper's {self.paper['tables'][paper_key].get('reference', paper_key)}."
                      if paper_key in self.paper.get("tables", {}) else "It is not in the paper.")
        if name in self.figures:
            srcs = sorted({p.get("table") for p in self._panels(name) if p.get("table")})
            return f"{self.title(name)}. Drawn from {', '.join(srcs) or 'its own inputs'}. {reproduces}"
        kind = self._table_kind(name)
        if kind != "metrics":
            what = {"parameters": "Trainable parameters of each model (tied weights once); nothing is trained.",
                    "data_statistics": "Statistics computed from the data; nothing is trained.",
                    "hyperparameters": "The hyper-parameters this configuration uses, with the paper's beside."}[kind]
            return f"{self.title(name)}. {what} {reproduces}"
        evs = self.evaluations[name]
        cells = list(dict.fromkeys(e.cell for e in evs))
        archs_used = list(dict.fromkeys(e.run.model.arch for e in evs))
        seeds = sorted({len(r.seeds) for r in self.table_rows(name)})
        n_runs = len({e.run.path for e in evs})
        return (f"{self.title(name)}. {n_runs} trained runs ({', '.join(archs_used)}), tested on "
                f"{', '.join(cells)}; mean ± std over {'/'.join(map(str, seeds))} seed(s) per row. {reproduces}")

    def targets(self) -> list[Target]:
        out = []
        for t in self.tables:
            out.append(Target(t, self._table_kind(t), self.title(t), self.section(t), self.caption(t),
                              tuple(f"results/tables/{t}.{ext}" for ext in ("csv", "md", "html"))))
        for f in self.figures:
            out.append(Target(f, "figure", self.title(f), self.section(f), self.caption(f),
                              tuple(f"results/figures/{f}.{ext}" for ext in ("png", "svg"))))
        return out

    def target(self, name: str) -> Target:
        for t in self.targets():
            if t.name == name:
                return t
        raise ConfigError(f"no table or figure named {name!r}")

    def tables_of_kind(self, kind: str) -> list[str]:
        return [t for t in self.tables if self._table_kind(t) == kind]

    # ------------------------------------------------------------------ figures
    def _panels(self, figure: str) -> list[dict]:
        f = self.figures[figure]
        return list(f.get("panels", [])) or [{k: v for k, v in f.items() if k not in ("title", "section", "paper")}]

    def _check_figures(self):
        for name in self.figures:
            for i, p in enumerate(self._panels(name)):
                where = f"figures.{name}.panels[{i}]"
                plot = p.get("plot")
                if plot not in FIGURE_PLOTS:
                    raise ConfigError(f"{where}.plot is {plot!r}, not one of {', '.join(FIGURE_PLOTS)}")
                t = p.get("table")
                if t is None or t not in self.tables or self._table_kind(t) != "metrics":
                    raise ConfigError(f"{where}.table names {t!r}, which is not a metrics table under experiments:")
                if plot in ("weights", "locus"):
                    self._figure_run(name, p, where)

    def _figure_run(self, figure: str, panel: dict, where: str) -> tuple[Evaluation, dict]:
        """The evaluation a weights or locus panel draws from: its table's row, cell line and seed."""
        evs = [e for e in self.evaluations[panel["table"]] if e.row.label == str(panel.get("row"))]
        if not evs:
            raise ConfigError(f"{where}.row names {panel.get('row')!r}, which is not a row of "
                              f"experiments.{panel['table']}")
        cell = panel.get("cell", evs[0].cell)
        seed = panel.get("seed", evs[0].run.seed)
        hit = [e for e in evs if e.cell == cell and e.run.seed == seed]
        if not hit:
            raise ConfigError(f"{where}: row {panel['row']!r} of experiments.{panel['table']} is not tested on "
                              f"{cell} with seed {seed}")
        if panel["plot"] == "weights" and not hit[0].run.model.uses_confounder:
            raise ConfigError(f"{where}: row {panel['row']!r} has no confounder encoder, so no learned weights")
        return hit[0], panel

    def figure_inputs(self, figure: str) -> dict[str, list[str]]:
        out = {"tables": [], "weights": [], "predictions": [], "tracks": []}
        for i, p in enumerate(self._panels(figure)):
            if p["plot"] in ("lines", "bars"):
                out["tables"].append(f"results/tables/{p['table']}.csv")
            else:
                e, _ = self._figure_run(figure, p, f"figures.{figure}.panels[{i}]")
                if p["plot"] == "weights":
                    out["weights"].append(f"{e.run.path}/weights/{e.cell}.npz")
                else:
                    out["predictions"].append(self.prediction_path(e.cell, e.run))
                    out["tracks"] += [self.signal(e.cell, s)[0] for s in e.run.model.signals]
                    out["genes"] = [f"results/genes/{e.cell}.tsv"]
                    out["fai"] = ["results/genome/hg38.ml.fa.fai"]
        return {k: sorted(set(v)) for k, v in out.items() if v}

    def figure_spec(self, figure: str) -> dict:
        panels = []
        for i, p in enumerate(self._panels(figure)):
            p = dict(p)
            if p["plot"] in ("weights", "locus"):
                e, _ = self._figure_run(figure, p, f"figures.{figure}.panels[{i}]")
                p.update(cell=e.cell, seed=e.run.seed, run=e.run.path,
                         weights=f"{e.run.path}/weights/{e.cell}.npz",
                         predictions=self.prediction_path(e.cell, e.run),
                         genes=f"results/genes/{e.cell}.tsv", fai="results/genome/hg38.ml.fa.fai",
                         hic_normalization=self.config.get("preprocess", {}).get("hic_normalization", "VC"),
                         hic_resolution=self.config.get("preprocess", {}).get("hic_resolution", 5000),
                         signals={s: self.signal(e.cell, s) for s in e.run.model.signals})
            panels.append(p)
        return {"name": figure, "title": self.title(figure), "panels": panels}

    # ------------------------------------------------------------------ predictions
    def prediction_path(self, cell: str, run: Run) -> str:
        return f"results/predictions/{cell}/{run.cells_id}__{run.model.model_id}__seed{run.seed}.tsv"

    def _predictions(self) -> list[tuple[str, Run]]:
        """(cell line, run) pairs of the ``predictions`` config: models applied to any cell line."""
        cfg = self.config.get("predictions")
        if not cfg:
            return []
        out = []
        for c in cfg["cells"]:
            if c not in self.cells:
                raise ConfigError(f"predictions.cells names {c!r}, which is not under cell_lines:")
        for i, m in enumerate(cfg["models"]):
            where = f"predictions.models[{i}]"
            if m["table"] not in self.evaluations:
                raise ConfigError(f"{where}.table names {m['table']!r}, which is not a metrics table")
            evs = [e for e in self.evaluations[m["table"]] if e.row.label == str(m["row"])]
            if not evs:
                raise ConfigError(f"{where}.row names {m['row']!r}, which is not a row of experiments.{m['table']}")
            cell = m.get("cell", evs[0].cell)
            seed = m.get("seed", evs[0].run.seed)
            hit = [e for e in evs if e.cell == cell and e.run.seed == seed]
            if not hit:
                raise ConfigError(f"{where}: row {m['row']!r} has no run for cell line {cell} and seed {seed}")
            run = hit[0].run
            for c in cfg["cells"]:
                for sig in run.model.signals:
                    if (c, sig) not in self._signal_paths:
                        raise ConfigError(f"{where}: the model uses signal {sig!r}, which cell line {c} does not "
                                          f"have (cell_lines.{c}.signals)")
                out.append((c, run))
        return out

    def prediction_targets(self) -> list[str]:
        out = [self.prediction_path(c, r) for c, r in self.predictions]
        return out + [p.removesuffix(".tsv") + ".bed" for p in out]

    # ------------------------------------------------------------------ per-run inputs
    def uses_store(self, spec: ModelSpec) -> bool:
        """Inputs longer than the shards' window are served from the base-resolution store."""
        return spec.length > self.window

    def data_inputs(self, cell: str, spec: ModelSpec) -> dict[str, list[str]]:
        """The files a run of ``spec`` reads for one cell line, by role."""
        kind = self.kind_of(spec.arch)
        hp = self.architectures[spec.arch]["model"]
        out = {"genes": [f"results/genes/{cell}.tsv"]}
        if "elements" in kind.inputs:
            out["candidates"] = [f"results/candidates/{cell}.tsv"]
            out["genome"] = [f"results/store/genome/{c}.npy" for c in self.chromosomes]
        elif self.uses_store(spec):
            out["genome"] = [f"results/store/genome/{c}.npy" for c in self.chromosomes]
            parts = ("tracks.npy", "tracks.json") + (("hic.npz",) if self.hic(cell) else ())
            out["store"] = [f"results/store/{cell}/{c}.{part}" for c in self.chromosomes for part in parts]
        else:
            out["shards"] = [f"results/shards/{cell}/{c}.npz" for c in self.chromosomes]
        if "blacklist" in kind.inputs_for(hp):
            out["blacklist"] = [self.asset("blacklist")]
        if "peaks" in kind.inputs_for(hp):
            out["peaks"] = [f"results/peaks/{cell}/dnase.macs3.narrowPeak"]
        pre = self.architectures[spec.arch].get("pretrained")
        if pre:
            out["pretrained"] = self.weights_files(pre)
        return out

    #: per-chromosome files a job depends on through one gathered list (few DAG edges: fast dry runs)
    GATHERED = ("shards", "store", "genome")

    def gathered(self, folder: str) -> list[str]:
        """The per-chromosome files of one folder (shards/<cell>, store/<cell>, store/genome)."""
        if folder == "store/genome":
            return [f"results/store/genome/{c}.npy" for c in self.chromosomes]
        kind, _, cell = folder.partition("/")
        if kind == "shards":
            return [f"results/shards/{cell}/{c}.npz" for c in self.chromosomes]
        parts = ("tracks.npy", "tracks.json") + (("hic.npz",) if self.hic(cell) else ())
        return [f"results/store/{cell}/{c}.{part}" for c in self.chromosomes for part in parts]

    def gathered_folders(self) -> list[str]:
        return ["store/genome"] + [f"{k}/{c}" for k in ("shards", "store") for c in self.cells]

    def data_deps(self, cell: str, spec: ModelSpec) -> dict[str, list[str]]:
        """What a job on one cell line's data depends on: like :meth:`data_inputs`, with per-chromosome
        files replaced by their folder's gathered list (results/<folder>/inputs.json)."""
        out = {}
        for role, paths in self.data_inputs(cell, spec).items():
            if role in self.GATHERED:
                folder = "store/genome" if role == "genome" else f"{role}/{cell}"
                out[role] = [f"results/{folder}/inputs.json"]
            else:
                out[role] = paths
        return out

    def _merge_deps(self, pairs) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for cell, spec in pairs:
            for k, v in self.data_deps(cell, spec).items():
                out.setdefault(k, []).extend(p for p in v if p not in out.get(k, []))
        return out

    def run_inputs(self, run: Run) -> dict[str, list[str]]:
        return self._merge_deps((c, run.model) for c in run.cells)

    def eval_inputs(self, run: Run) -> dict[str, list[str]]:
        return {"model": [f"{run.path}/model.pt"],
                **self._merge_deps((cell, run.model) for cell, _ in self.tests.get(run.path, []))}

    def weights_files(self, name: str) -> list[str]:
        w = self.config["weights"][name]
        return [f"resources/weights/{name}/{f}" for f in w.get("files", [])]

    def released_checkpoint(self, run: Run) -> str:
        """The downloaded checkpoint a released run is imported from."""
        name = self.architectures[run.model.arch]["released"]
        key = (name, run.cells[0], run.seed)
        if len(run.cells) != 1 or key not in self._released:
            have = sorted({(c, s) for n, c, s in self._released if n == name})
            raise ConfigError(f"run {run.path}: weights.{name} has no checkpoint for {run.cells_id} seed {run.seed} "
                              f"(it has {', '.join(f'{c} seed {s}' for c, s in have) or 'none'})")
        return self._released[key]


def write_gathered(paths: list[str], out) -> None:
    """results/<folder>/inputs.json: the gathered files with their sizes and modification times, so that
    it changes (and its dependants rerun) whenever one of them is rebuilt."""
    import json

    doc = {"files": {p: {"size": os.path.getsize(p), "mtime_ns": os.stat(p).st_mtime_ns} for p in paths}}
    tmp = f"{out}.tmp"
    with open(tmp, "w") as fh:
        json.dump(doc, fh, indent=1)
    os.replace(tmp, out)


def wildcard_pattern(values) -> str:
    """A regex matching exactly the given names (for wildcard_constraints)."""
    return "|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))
