"""Adapter: rule store_genome -> prism.store.build_genome_store (memory-mapped sequence codes)."""
from pathlib import Path

from prism.logs import job_log
from prism.store import build_genome_store

with job_log(snakemake) as log:
    build_genome_store(snakemake.input.fasta, snakemake.params.chromosomes, Path(snakemake.output[0]).parent, log=log)
