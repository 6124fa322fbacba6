"""Adapter: rule demo_mirror -> prism.demo.write_mirror."""
from prism.demo import write_mirror
from prism.logs import job_log

with job_log(snakemake) as log:
    info = write_mirror(snakemake.params.out, seed=snakemake.params.seed, n_genes=snakemake.params.n_genes)
    log(f"wrote the synthetic mirror to {snakemake.params.out}")
