"""Shared fixtures: one synthetic demo mirror per test session (prism.demo), built in ~2 s."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def demo_mirror(tmp_path_factory):
    """The dict returned by prism.demo.write_mirror for seed 0 (default size)."""
    from prism.demo import write_mirror

    return write_mirror(tmp_path_factory.mktemp("mirror"), seed=0)


@pytest.fixture(scope="session")
def demo_fasta(demo_mirror, tmp_path_factory):
    """The demo genome gunzipped to a plain FASTA (pyfaidx-indexable), as the workflow does."""
    from prism.preprocess import gunzip_fasta

    return gunzip_fasta(demo_mirror["genome"], tmp_path_factory.mktemp("genome") / "hg38.ml.fa")


def demo_gene_specs(mirror: dict, cell: str) -> tuple[dict, dict]:
    """(expression, promoter_activity) specs of a demo cell, as the workflow config would give them."""
    entry = mirror["cells"][cell]
    if entry["expression_column"]:
        expression = {"source": "csv_column", "path": mirror["expression_csv"], "column": entry["expression_column"]}
        promoter = {"source": "abc_genelist", "path": entry["genelist"]}
    else:
        expression = {"source": "bigwig_sum", "path": entry["cage_bigwig"], "flank": 192}
        promoter = {"source": "bigwig", "h3k27ac": entry["h3k27ac"]["path"], "dnase": entry["dnase"]["path"], "flank": 500}
    return expression, promoter


@pytest.fixture(scope="session")
def demo_gene_tables(demo_mirror, demo_fasta, tmp_path_factory):
    """{cell: path of the written gene table TSV} for every demo cell (fold_11, all chromosomes)."""
    from prism.genes import build_gene_table, write_gene_table

    out = tmp_path_factory.mktemp("genes")
    paths = {}
    for cell in demo_mirror["cells"]:
        expression, promoter = demo_gene_specs(demo_mirror, cell)
        df = build_gene_table(
            cell=cell,
            split_csv=demo_mirror["split_csv"],
            halflife_csv=demo_mirror["halflife_csv"],
            expression=expression,
            promoter_activity=promoter,
            chromosomes=None,
            genome_fai_or_sizes=demo_mirror["chromosomes"],
        )
        paths[cell] = out / f"{cell}.genes.tsv"
        write_gene_table(df, paths[cell])
    return paths


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    """The demo workflow (every target), run once per test session for real into a fresh directory: the
    slow part of the suite, shared by every test that reads its outputs."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    d = tmp_path_factory.mktemp("demo")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(root / "Snakefile"), "--directory", str(d),
                           "--configfile", str(root / "config/demo.yaml"), "--cores", "2", "all"],
                          cwd=root, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise AssertionError(f"the demo failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return d
