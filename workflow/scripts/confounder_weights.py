"""Adapter: rule confounder_weights -> prism.evaluate.confounder_weights (Figure 5)."""
from prism.evaluate import confounder_weights
from prism.logs import job_log

with job_log(snakemake) as log:
    confounder_weights(snakemake.input.model[0], snakemake.wildcards.cell, snakemake.params.inputs,
                       snakemake.output[0], log=log)
