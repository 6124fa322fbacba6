"""Adapter: rule store_genome -> prism.store.build_genome_store (one chromosome's sequence codes)."""
from pathlib import Path

from prism.logs import job_log
from prism.store import build_genome_store

with job_log(snakemake) as log:
    info = build_genome_store(snakemake.input.fasta, [snakemake.wildcards.chrom], Path(snakemake.output[0]).parent)
    for chrom, r in info.items():
        log(f"{chrom}: {r['size']:,} bp, N fraction {r['n_fraction']:.4f}")
