"""Adapter: rule gather -> prism.plan.write_gathered (one dependency standing for a folder's per-chromosome files)."""
from prism.logs import job_log
from prism.plan import write_gathered

with job_log(snakemake) as log:
    write_gathered(list(snakemake.input), snakemake.output[0])
    log(f"{len(snakemake.input)} files")
