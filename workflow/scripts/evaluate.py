"""Adapter: rule evaluate -> prism.evaluate.evaluate_run."""
from prism.logs import job_log
from prism.evaluate import evaluate_run

with job_log(snakemake) as log:
    w = snakemake.wildcards
    evaluate_run(snakemake.input.model[0], w.cell, snakemake.input.genes[0], list(snakemake.input.shards),
                 w.variant, snakemake.output.metrics, snakemake.output.predictions,
                 threads=snakemake.threads, log=log)
