"""Adapter: rule predict -> prism.evaluate.predict_cell."""
from prism.evaluate import predict_cell
from prism.logs import job_log

with job_log(snakemake) as log:
    predict_cell(snakemake.input.model[0], snakemake.wildcards.cell, snakemake.params.inputs,
                 snakemake.output.tsv, snakemake.output.bed, log=log)
