"""Adapter: rule metrics_table -> prism.tables.metrics_table."""
from prism.logs import job_log
from prism.tables import metrics_table

with job_log(snakemake) as log:
    t, out = snakemake.params.table, snakemake.output
    metrics_table(t["spec"], t["entries"], t["archs_hp"], out.csv, out.md, out.html, cell_map=t["cell_map"], log=log)
