# All of the workflow's Python: config validation, the plan (assets, runs, tables) and input functions.
# The rules hold no logic; the plan itself is prism.plan (plain Python, unit-tested, no torch).
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from prism.config import check_config  # noqa: E402
from prism.plan import Plan, ConfigError, TRAINED_TABLES, wildcard_pattern  # noqa: E402
from prism.runs import Run  # noqa: E402

SCHEMA = Path(workflow.basedir) / "workflow/schemas/config.schema.yaml"
try:  # duplicate keys in any config file, then the schema (its defaults filled in); one line per problem
    check_config(config, workflow.configfiles, SCHEMA)
except ConfigError as e:
    raise SystemExit("\n".join(f"config error: {m}" for m in str(e).splitlines()))
try:
    PLAN = Plan(config)
except ConfigError as e:
    raise WorkflowError(f"config error: {e}") from None

DEMO = "demo" in config
MIRROR = config["demo"]["mirror"] if DEMO else None


wildcard_constraints:
    asset=wildcard_pattern(p.removeprefix("resources/") for p in PLAN.assets),
    cell=wildcard_pattern(PLAN.cells),
    chrom=wildcard_pattern(PLAN.chromosomes),
    table=wildcard_pattern(TRAINED_TABLES),
    seed=r"\d+",
    cells=r"[A-Za-z0-9_.+-]+",
    model=r"L\d+_[A-Za-z0-9.+_-]+",
    variant=r"full|weighted|drop-[a-z0-9.]+",


def _run(wildcards):
    return Run.from_wildcards(wildcards.cells, wildcards.model, wildcards.seed)


# ---------------------------------------------------------------- downloads
def download_inputs(wildcards):
    """The demo's local mirror must exist before anything is 'downloaded' from it."""
    return [f"{MIRROR}/MANIFEST.json"] if DEMO else []


def download_params(wildcards):
    return PLAN.assets[f"resources/{wildcards.asset}"].as_params()


# ---------------------------------------------------------------- preprocessing
def gene_table_inputs(wildcards):
    return PLAN.gene_table_inputs(wildcards.cell)


def gene_table_params(wildcards):
    spec = config["cell_lines"][wildcards.cell]
    return {
        "expression": spec["expression"],
        "promoter_activity": spec["promoter_activity"],
        "fold": config["genes"]["fold"],
        "chromosomes": PLAN.chromosomes,
    }


def shard_inputs(wildcards):
    inputs = {
        "genes": f"results/genes/{wildcards.cell}.tsv",
        "fasta": "results/genome/hg38.ml.fa",
        "fai": "results/genome/hg38.ml.fa.fai",
        "tracks": [path for path, kind in PLAN.tracks(wildcards.cell).values()],
    }
    hic = PLAN.hic(wildcards.cell)
    if hic:
        inputs["hic"] = hic
    return inputs


def shard_params(wildcards):
    pre = config["preprocess"]
    hic = PLAN.hic(wildcards.cell)
    return {
        "tracks": PLAN.tracks(wildcards.cell),
        "hic": (
            {
                "path": hic,
                "normalization": pre["hic_normalization"],
                "resolution": pre["hic_resolution"],
            }
            if hic
            else None
        ),
        "window": pre["window"],
    }


# ---------------------------------------------------------------- training and evaluation
def train_inputs(wildcards):
    return PLAN.run_inputs(_run(wildcards))


def eval_inputs(wildcards):
    return PLAN.eval_inputs(_run(wildcards), wildcards.cell)


# ---------------------------------------------------------------- tables and figures
def table_inputs(wildcards):
    return PLAN.table_inputs(wildcards.table)


def table_entries(wildcards):
    return PLAN.table_entries(wildcards.table)


def all_targets():
    targets = []
    for t in PLAN.configured_tables():
        targets += [f"results/tables/{t}.csv", f"results/tables/{t}.md"]
    targets += [f"results/figures/{f}.png" for f in PLAN.configured_figures()]
    return targets
