"""Adapter: rule data_statistics_table -> prism.tables.data_statistics_table."""
from prism.logs import job_log
from prism.tables import data_statistics_table

with job_log(snakemake) as log:
    t, out = snakemake.params.table, snakemake.output
    files = dict(zip(t["spec"]["cells"], snakemake.input.stats))
    data_statistics_table(t["spec"], files, out.csv, out.md, out.html, cell_map=t["cell_map"], log=log)
