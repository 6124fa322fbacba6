"""Adapter: rule shard -> prism.preprocess.build_shard."""
from prism.logs import job_log
from prism.preprocess import build_shard

with job_log(snakemake) as log:
    spec = snakemake.params.spec
    info = build_shard(genes_tsv=snakemake.input.genes, chrom=snakemake.wildcards.chrom,
                       fasta=snakemake.input.fasta, tracks=spec["tracks"], hic=spec["hic"],
                       window=spec["window"], out=snakemake.output[0])
    log(f"{info['n_genes']} genes of {snakemake.wildcards.chrom}, window {spec['window']} bp, "
        f"tracks {list(spec['tracks'])}, Hi-C {'yes' if spec['hic'] else 'no'}")
