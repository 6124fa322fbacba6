"""Adapter: rule shard -> prism.preprocess.build_shard."""
from prism.logs import job_log
from prism.preprocess import build_shard

with job_log(snakemake) as log:
    spec = snakemake.params.spec
    build_shard(genes_tsv=snakemake.input.genes, chrom=snakemake.wildcards.chrom, fasta=snakemake.input.fasta,
                tracks=spec["tracks"], hic=spec["hic"], window=spec["window"], out=snakemake.output[0])
