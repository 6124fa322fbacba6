"""Adapter: rule train -> prism.train.train_run."""
from pathlib import Path

from prism.logs import job_log
from prism.runs import Run
from prism.train import train_run

with job_log(snakemake) as log:
    w = snakemake.wildcards
    run = Run.from_wildcards(w.cells, w.model, w.seed)
    genes = {c: f"results/genes/{c}.tsv" for c in run.cells}
    shards = {c: [p for p in snakemake.input.shards if p.startswith(f"results/shards/{c}/")] for c in run.cells}
    train_run(run, genes, shards, snakemake.params.model, snakemake.params.training,
              Path(snakemake.output.model).parent, threads=snakemake.threads, log=log)
