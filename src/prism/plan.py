"""What the workflow builds, derived from a validated config: assets, runs, evaluations, tables.

The Snakefile's ``common.smk`` is a thin layer over :class:`Plan`; everything here is plain Python
(no torch, no pandas), so a dry run of the paper's ~600 jobs plans in well under a second and the
logic is unit-tested without Snakemake.

Paths (written whole so a user can find them):

    resources/<source>/<file>                     every download, verified (see prism.download)
    results/genome/hg38.ml.fa                     the genome, unpacked and indexed
    results/genes/{cell}.tsv                      per-gene table: TSS, split, target, 9 features
    results/shards/{cell}/{chrom}.npz             per-gene inputs (prism.shards)
    results/runs/{cells}/{model}/seed{seed}/      one trained model (prism.runs)
        .../eval/{cell}/{variant}.json            its test metrics (variant: full, drop-<signal>)
    results/tables/{table}.csv|.md                the paper's tables
    results/figures/{figure}.png                  the paper's figures
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass, field
from urllib.parse import urlparse

from .runs import ModelSpec, Run

TABLES = ("table1", "table2", "table3", "table7", "table13", "table16")
#: figure -> the table it is drawn from
FIGURES = {"figure_table2": "table2"}
#: Tables whose rows need trained runs (table3 only counts parameters).
TRAINED_TABLES = ("table1", "table2", "table7", "table13", "table16")


#: file extension of each signal kind, as the repositories name their downloads (ENCODE: ``bigBed``)
SIGNAL_EXT = {"bigwig": "bigWig", "hic": "hic", "bigbed": "bigBed"}
#: signal kinds that become per-base tracks of the shards (a bigBed as its 0/1 interval coverage)
TRACK_KINDS = ("bigwig", "bigbed")


class ConfigError(ValueError):
    """A configuration that cannot be planned; the message names the key at fault."""


@dataclass
class Asset:
    """One file to download into ``resources/``."""

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


@dataclass(frozen=True)
class Evaluation:
    """One test-set evaluation of one run: which table row it fills."""

    table: str
    group: str
    row: str
    cell: str
    run: Run
    variant: str = "full"

    @property
    def path(self) -> str:
        return f"{self.run.path}/eval/{self.cell}/{self.variant}.json"

    def as_entry(self) -> dict:
        return {
            "group": self.group,
            "row": self.row,
            "cell": self.cell,
            "seed": self.run.seed,
            "model": self.run.model.model_id,
            "variant": self.variant,
            "metrics": self.path,
        }


def _basename(url: str) -> str:
    name = posixpath.basename(urlparse(url).path)
    if not name:
        raise ConfigError(f"cannot name a file after URL {url!r}")
    return name


class Plan:
    """Everything the workflow needs to know, computed once from a validated config."""

    def __init__(self, config: dict, workdir: str | None = None):
        self.config = config
        self.workdir = os.path.abspath(workdir or os.getcwd())
        self.cells = list(config["cell_lines"])
        self.chromosomes = list(config["chromosomes"])
        self.seeds = list(config.get("seeds", [2, 22, 222, 2222, 22222]))
        self.defaults = dict(config.get("run_defaults", {}))
        self.window = int(config.get("preprocess", {}).get("window", 10000))
        self.assets: dict[str, Asset] = {}
        self._asset_by_name: dict[str, str] = {}
        self._signal_paths: dict[tuple[str, str], tuple[str, str]] = {}
        self._collect_assets()
        self.evaluations: dict[str, list[Evaluation]] = {t: self._evaluations(t) for t in TRAINED_TABLES}
        self._check_runs()

    # ------------------------------------------------------------------ assets
    def _fill(self, template: str, **kw) -> str:
        return template.format(workdir=self.workdir, **kw)

    def _add(self, asset: Asset) -> str:
        old = self.assets.get(asset.path)
        if old is not None and old.url != asset.url:
            raise ConfigError(f"two assets would download to {asset.path}: {old.url} and {asset.url}")
        self.assets[asset.path] = asset
        return asset.path

    def _collect_assets(self):
        for name, a in self.config["assets"].items():
            url = self._fill(a["url"])
            path = f"resources/assets/{name}/{_basename(url)}"
            self._asset_by_name[name] = self._add(Asset(path, url, a.get("md5"), a.get("size")))
        sources = self.config.get("sources", {})
        for cell, spec in self.config["cell_lines"].items():
            for signal, s in spec["signals"].items():
                key = f"cell_lines.{cell}.signals.{signal}"
                for src in ("encode", "4dn"):
                    if src in s:
                        if src not in sources:
                            raise ConfigError(f"{key} uses source {src!r}, but sources.{src} is not configured")
                        kind = s.get("kind", "hic" if src == "4dn" else "bigwig")
                        ext = SIGNAL_EXT[kind]
                        acc = s[src]
                        tmpl = sources[src]
                        asset = Asset(
                            path=f"resources/{src}/{acc}.{ext}",
                            url=self._fill(tmpl["download"], accession=acc, ext=ext),
                            md5=s.get("md5"),
                            size=s.get("size"),
                            metadata_url=self._fill(tmpl["metadata"], accession=acc, ext=ext),
                            expect={**tmpl.get("expect", {}), **s.get("expect", {})},
                            auth_env=tuple(tmpl["auth_env"]) if tmpl.get("auth_env") else None,
                        )
                        break
                else:
                    kind = s["kind"]
                    if "encode_experiment" in s:
                        asset = self._experiment_asset(s, sources, key)
                    else:
                        url = self._fill(s["url"])
                        asset = Asset(f"resources/signals/{cell}/{signal}/{_basename(url)}", url, s.get("md5"),
                                      s.get("size"))
                self._signal_paths[(cell, signal)] = (self._add(asset), kind)
            for what in ("expression", "promoter_activity"):
                ref = spec[what].get("asset")
                if ref is not None and ref not in self._asset_by_name:
                    raise ConfigError(f"cell_lines.{cell}.{what}.asset names {ref!r}, which is not under assets:")

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
        experiment_url = self._fill(tmpl["experiment"], accession=exp)
        return Asset(
            path=f"resources/encode/{exp}.{slug}.{ext}", url=experiment_url, md5=s.get("md5"), size=s.get("size"),
            expect={**expect, **select},  # the chosen file's own metadata must say what selected it
            resolve={"experiment_url": experiment_url, "select": select,
                     "download": self._fill(tmpl["download"], accession="{accession}", ext=ext),
                     "metadata": self._fill(tmpl["metadata"], accession="{accession}", ext=ext)},
        )

    def asset(self, name: str) -> str:
        """Path of a shared asset by its config name."""
        try:
            return self._asset_by_name[name]
        except KeyError:
            raise ConfigError(f"no asset named {name!r} under assets:") from None

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
        if len(hics) > 1:
            raise ConfigError(f"cell_lines.{cell}.signals has more than one Hi-C signal")
        return hics[0] if hics else None

    def gene_table_inputs(self, cell: str) -> dict[str, str]:
        """Files the per-gene table of a cell line is built from, by role."""
        spec = self.config["cell_lines"][cell]
        out = {"split": self.asset("split"), "halflife": self.asset("halflife"),
               "expression": self.asset(spec["expression"]["asset"])}
        pa = spec["promoter_activity"]
        if pa["source"] == "abc_genelist":
            if "asset" not in pa:
                raise ConfigError(f"cell_lines.{cell}.promoter_activity: source abc_genelist needs 'asset'")
            out["genelist"] = self.asset(pa["asset"])
        else:
            tracks = self.bigwig_tracks(cell)
            for need in ("h3k27ac", "dnase"):
                if need not in tracks:
                    raise ConfigError(
                        f"cell_lines.{cell}.promoter_activity: source bigwig needs a '{need}' bigWig signal")
            out["pa_h3k27ac"], out["pa_dnase"] = tracks["h3k27ac"], tracks["dnase"]
        return out

    # ------------------------------------------------------------------ runs and tables
    def model(self, overrides: dict, where: str) -> ModelSpec:
        try:
            return ModelSpec.from_settings({**self.defaults, **overrides})
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None

    def _cells(self, exp: dict, where: str) -> list[str]:
        cells = exp.get("cells", "all")
        cells = self.cells if cells == "all" else list(cells)
        for c in cells:
            if c not in self.config["cell_lines"]:
                raise ConfigError(f"{where}.cells names {c!r}, which is not under cell_lines:")
        return cells

    def _evaluations(self, table: str) -> list[Evaluation]:
        exp = self.config.get("experiments", {}).get(table)
        if exp is None:
            return []
        where = f"experiments.{table}"
        seeds = list(exp.get("seeds", self.seeds))
        cells = self._cells(exp, where)
        out = []
        if table == "table1":
            for label, settings in exp["rows"].items():
                spec = self.model(settings or {}, f"{where}.rows.{label}")
                out += [Evaluation(table, "", label, c, Run((c,), spec, s)) for c in cells for s in seeds]
        elif table == "table2":
            for param, values in exp["sweeps"].items():
                for v in values:
                    spec = self.model({param: v}, f"{where}.sweeps.{param}")
                    out += [Evaluation(table, param, f"{v:g}", c, Run((c,), spec, s)) for c in cells for s in seeds]
        elif table == "table7":
            spec = self.model(exp.get("model", {}), f"{where}.model")
            for sig in exp["drop"]:
                if sig not in spec.signals:
                    raise ConfigError(f"{where}.drop names {sig!r}, which the model does not use ({list(spec.signals)})")
            variants = [("Baseline (all signals)", "full")] + [(f"Drop {s}", f"drop-{s}") for s in exp["drop"]]
            out += [Evaluation(table, "", label, c, Run((c,), spec, s), variant)
                    for label, variant in variants for c in cells for s in seeds]
        elif table == "table13":
            if len(cells) < 2:
                raise ConfigError(f"{where}.cells: mixed-cell training needs at least two cell lines")
            spec = self.model(exp.get("model", {}), f"{where}.model")
            out += [Evaluation(table, "", "Prism (cell-specific)", c, Run((c,), spec, s)) for c in cells for s in seeds]
            out += [Evaluation(table, "", "Prism (mixed-training)", c, Run(tuple(cells), spec, s))
                    for c in cells for s in seeds]
        elif table == "table16":
            for r in exp["retention"]:
                spec = self.model({**exp.get("dropout_model", {"K": 0}), "retention": r}, f"{where}.retention")
                out += [Evaluation(table, "", f"Caduceus w/ dropout (retention {r:g})", c, Run((c,), spec, s))
                        for c in cells for s in seeds]
            spec = self.model(exp.get("model", {}), f"{where}.model")
            if not spec.uses_confounder:
                raise ConfigError(f"{where}.model must be Prism (K > 0, lambda1 != 0) to test its learned weights")
            out += [Evaluation(table, "", "Prism w/ learned weights", c, Run((c,), spec, s), "weighted")
                    for c in cells for s in seeds]
        return out

    def _check_runs(self):
        for run in self.runs():
            if run.model.length > self.window:
                raise ConfigError(
                    f"run {run.path} needs input length {run.model.length} > preprocess.window {self.window}")
            for cell in run.cells:
                for sig in run.model.signals:
                    self.signal(cell, sig)

    def runs(self, table: str | None = None) -> list[Run]:
        """Distinct runs, in a stable order (all tables when table is None)."""
        tables = [table] if table else list(self.evaluations)
        seen = {}
        for t in tables:
            for e in self.evaluations.get(t, []):
                seen.setdefault(e.run.path, e.run)
        return list(seen.values())

    def table_entries(self, table: str) -> list[dict]:
        return [e.as_entry() for e in self.evaluations.get(table, [])]

    def table_inputs(self, table: str) -> list[str]:
        return sorted({e.path for e in self.evaluations.get(table, [])})

    def table3_rows(self) -> dict[str, dict]:
        exp = self.config.get("experiments", {}).get("table3", {"rows": {}})
        return {label: self.model(s or {}, f"experiments.table3.rows.{label}").as_dict()
                for label, s in exp["rows"].items()}

    def configured_tables(self) -> list[str]:
        return [t for t in TABLES if t in self.config.get("experiments", {})]

    def configured_figures(self) -> list[str]:
        return [f for f, t in FIGURES.items() if t in self.config.get("experiments", {})]

    # ------------------------------------------------------------------ per-run inputs
    def run_inputs(self, run: Run) -> dict[str, list[str]]:
        return {
            "genes": [f"results/genes/{c}.tsv" for c in run.cells],
            "shards": [f"results/shards/{c}/{chrom}.npz" for c in run.cells for chrom in self.chromosomes],
        }

    def eval_inputs(self, run: Run, cell: str) -> dict[str, list[str]]:
        return {
            "model": [f"{run.path}/model.pt"],
            "genes": [f"results/genes/{cell}.tsv"],
            "shards": [f"results/shards/{cell}/{chrom}.npz" for chrom in self.chromosomes],
        }


def wildcard_pattern(values) -> str:
    """A regex matching exactly the given names (for wildcard_constraints)."""
    return "|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))
