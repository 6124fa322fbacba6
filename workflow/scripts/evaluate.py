"""Adapter: rule evaluate -> prism.evaluate.evaluate_run."""
from prism.evaluate import evaluate_run
from prism.logs import job_log

with job_log(snakemake) as log:
    p = snakemake.params.evaluation
    evaluate_run(snakemake.input.model[0], [tuple(t) for t in p["tests"]], p["inputs"], snakemake.output.metrics,
                 snakemake.output.predictions, threads=snakemake.threads, log=log)
