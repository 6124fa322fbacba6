# All of the workflow's Python: config validation, the plan (assets, runs, tables) and input functions.
# The rules hold no logic; the plan itself is prism.plan (plain Python, unit-tested, no torch).
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from prism.config import check_config  # noqa: E402
from prism.plan import Plan, ConfigError, wildcard_pattern  # noqa: E402
from prism.runs import Run  # noqa: E402

SCHEMA = Path(workflow.basedir) / "workflow/schemas/config.schema.yaml"
try:  # duplicate keys in any config file, then the schema (its defaults filled in); one line per problem
    check_config(config, workflow.configfiles, SCHEMA)
    PLAN = Plan(config)
except ConfigError as e:
    raise SystemExit("\n".join(f"config error: {m}" for m in str(e).splitlines()))
for note in PLAN.notes:
    logger.info(note)

DEMO = "demo" in config
MIRROR = config["demo"]["mirror"] if DEMO else None
TARGETS = PLAN.targets()


wildcard_constraints:
    asset=wildcard_pattern(p.removeprefix("resources/") for p in PLAN.assets),
    cell=wildcard_pattern(PLAN.cells),
    chrom=wildcard_pattern(PLAN.chromosomes),
    seed=r"\d+",
    cells=r"[A-Za-z0-9_.+-]+",
    model=r"([a-z][a-z0-9.-]*_)?L\d+_[A-Za-z0-9.+_-]+",
    figure=wildcard_pattern(PLAN.figures) or "no-figure",
    folder=wildcard_pattern(PLAN.gathered_folders()),


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
        "expression": spec.get("expression"),
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


def store_track_inputs(wildcards):
    return {
        "fai": "results/genome/hg38.ml.fa.fai",
        "tracks": [path for path, kind in PLAN.tracks(wildcards.cell).values()],
    }


def store_track_params(wildcards):
    return PLAN.tracks(wildcards.cell)


def store_hic_inputs(wildcards):
    return {
        "genes": f"results/genes/{wildcards.cell}.tsv",
        "fai": "results/genome/hg38.ml.fa.fai",
        "hic": PLAN.hic(wildcards.cell),
    }


def store_hic_params(wildcards):
    return {
        **shard_params(wildcards)["hic"],
        "length": config["preprocess"]["store_length"],
    }


def gathered_inputs(wildcards):
    return PLAN.gathered(wildcards.folder)


# ---------------------------------------------------------------- training and evaluation
def train_inputs(wildcards):
    return PLAN.run_inputs(_run(wildcards))


def _arch_params(run):
    """The run's architecture as the model code reads it: its name, kind and hyper-parameters."""
    arch = PLAN.architectures[run.model.arch]
    return {
        "name": run.model.arch,
        **{k: v for k, v in arch.items() if k != "training"},
    }


def train_params(wildcards):
    run = _run(wildcards)
    return {
        "arch": _arch_params(run),
        "training": PLAN.architectures[run.model.arch]["training"],
        "inputs": {c: PLAN.data_inputs(c, run.model) for c in run.cells},
    }


def released_checkpoint(wildcards):
    return PLAN.released_checkpoint(_run(wildcards))


def import_params(wildcards):
    return _arch_params(_run(wildcards))


def eval_inputs(wildcards):
    return PLAN.eval_inputs(_run(wildcards))


def eval_params(wildcards):
    run = _run(wildcards)
    tests = PLAN.tests.get(run.path, [])
    return {
        "tests": tests,
        "inputs": {c: PLAN.data_inputs(c, run.model) for c, _ in tests},
    }


def weights_inputs(wildcards):
    run = _run(wildcards)
    return {
        "model": [f"{run.path}/model.pt"],
        **PLAN.data_deps(wildcards.cell, run.model),
    }


def weights_params(wildcards):
    return PLAN.data_inputs(wildcards.cell, _run(wildcards).model)


predict_inputs = weights_inputs
predict_params = weights_params


# ---------------------------------------------------------------- tables and figures
def table_inputs(wildcards):
    return PLAN.table_inputs(wildcards.table)


def table_params(wildcards):
    return {
        "spec": PLAN.table_spec(wildcards.table),
        "entries": PLAN.table_entries(wildcards.table),
        "archs_hp": {a: v["model"] for a, v in PLAN.architectures.items()},
        "cell_map": config.get("paper_cells", {}),
    }


def target_caption(wildcards):
    return PLAN.caption(wildcards.get("table") or wildcards.get("figure"))


def target_section(wildcards):
    return PLAN.section(wildcards.get("table") or wildcards.get("figure"))


def target_labels(wildcards):
    name = wildcards.get("table") or wildcards.get("figure")
    return {"target": name, "title": PLAN.title(name)}


def peaks_inputs(wildcards):
    return PLAN.peaks_inputs(wildcards.cell)


def candidates_inputs(wildcards):
    return PLAN.candidates_inputs(wildcards.cell)


def candidates_params(wildcards):
    pre = config["preprocess"]
    abc = config["cell_lines"][wildcards.cell].get("abc_predictions")
    return {
        "member": abc.get("member") if abc else None,
        "hic": {
            "normalization": pre["hic_normalization"],
            "resolution": pre["hic_resolution"],
        },
    }


def statistics_inputs(wildcards):
    return PLAN.statistics_inputs(wildcards.cell)


def statistics_params(wildcards):
    pre = config["preprocess"]
    return {
        "hic_normalization": pre["hic_normalization"],
        "hic_resolution": pre["hic_resolution"],
        "abc": config["cell_lines"][wildcards.cell].get("abc_predictions"),
    }


def statistics_table_inputs(wildcards):
    cells = PLAN.table_spec(wildcards.table)["cells"]
    return {"stats": [f"results/statistics/{c}.json" for c in cells]}


def figure_inputs(wildcards):
    return PLAN.figure_inputs(wildcards.figure)


def figure_params(wildcards):
    return PLAN.figure_spec(wildcards.figure)


def all_targets():
    return [path for t in TARGETS for path in t.outputs] + PLAN.prediction_targets()
