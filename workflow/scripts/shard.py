"""Adapter: rule shard -> prism.preprocess.build_shard."""
from prism.logs import job_log
from prism.preprocess import build_shard

with job_log(snakemake) as log:
    spec = snakemake.params.spec
    info = build_shard(genes_tsv=snakemake.input.genes, chrom=snakemake.wildcards.chrom,
                       fasta=snakemake.input.fasta, tracks=spec["tracks"], hic=spec["hic"],
                       window=spec["window"], out=snakemake.output[0], missing=spec.get("missing", "error"))
    log(f"{info['n_genes']} genes of {snakemake.wildcards.chrom}, window {spec['window']} bp, "
        f"tracks {list(spec['tracks'])}, Hi-C {'yes' if spec['hic'] else 'no'}; "
        f"N {100 * info['n_fraction']:.2f}% of the window bases, "
        f"soft-masked (lower case, read as bases) {100 * info['soft_masked_fraction']:.1f}%")
