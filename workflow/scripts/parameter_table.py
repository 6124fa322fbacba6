"""Adapter: rule parameter_table -> prism.tables.parameter_table (Table 3; no training)."""
from prism.logs import job_log
from prism.tables import parameter_table

with job_log(snakemake) as log:
    df = parameter_table(snakemake.params.rows, snakemake.params.model, snakemake.output.csv, snakemake.output.md)
    log(df.to_string(index=False))
