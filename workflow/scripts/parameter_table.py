"""Adapter: rule parameter_table -> prism.tables.parameter_table (no training)."""
from prism.logs import job_log
from prism.tables import parameter_table

with job_log(snakemake) as log:
    out = snakemake.output
    parameter_table(snakemake.params.table["spec"], out.csv, out.md, out.html, log=log)
