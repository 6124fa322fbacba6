"""Adapter: rule hyperparameter_table -> prism.tables.hyperparameter_table (from the config)."""
from prism.logs import job_log
from prism.tables import hyperparameter_table

with job_log(snakemake) as log:
    out = snakemake.output
    hyperparameter_table(snakemake.params.table["spec"], out.csv, out.md, out.html, log=log)
