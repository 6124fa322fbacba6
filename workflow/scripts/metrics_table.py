"""Adapter: rule metrics_table -> prism.tables.metrics_table."""
from prism.logs import job_log
from prism.tables import metrics_table

with job_log(snakemake) as log:
    s = metrics_table(snakemake.wildcards.table, snakemake.params.entries, snakemake.output.csv, snakemake.output.md)
    log(f"{len(snakemake.params.entries)} evaluations -> {len(s)} summary rows")
