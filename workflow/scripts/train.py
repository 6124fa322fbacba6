"""Adapter: rule train -> prism.train.train_run."""
from pathlib import Path

from prism.logs import job_log
from prism.runs import Run
from prism.train import train_run

with job_log(snakemake) as log:
    w, p = snakemake.wildcards, snakemake.params.run
    run = Run.from_wildcards(w.cells, w.model, w.seed)
    train_run(run, p["inputs"], p["arch"], p["training"], Path(snakemake.output.model).parent,
              threads=snakemake.threads, log=log)
