"""Adapter: rule genome -> prism.preprocess.gunzip_fasta (+ pyfaidx index)."""
from prism.logs import job_log
from prism.preprocess import chrom_sizes, gunzip_fasta

with job_log(snakemake) as log:
    gunzip_fasta(snakemake.input[0], snakemake.output.fasta)
    sizes = chrom_sizes(snakemake.output.fasta)
    log(f"{len(sizes)} sequences, {sum(sizes.values()):,} bases")
