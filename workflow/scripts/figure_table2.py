"""Adapter: rule figure_table2 -> prism.tables.figure_table2."""
from prism.logs import job_log
from prism.tables import figure_table2

with job_log(snakemake) as log:
    figure_table2(snakemake.input[0], snakemake.output[0])
