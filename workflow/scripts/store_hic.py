"""Adapter: rule store_hic -> prism.store.build_long_hic (per-gene Hi-C reaching preprocess.store_length)."""
from prism.logs import job_log
from prism.statistics import _sizes
from prism.store import build_long_hic

with job_log(snakemake) as log:
    spec, chrom = snakemake.params.spec, snakemake.wildcards.chrom
    out = build_long_hic(snakemake.input.genes, chrom, spec, spec["length"], snakemake.output[0],
                         chrom_size=_sizes(snakemake.input.fai)[chrom])
    log(f"{chrom}: {out['n_genes']} genes, Hi-C over {spec['length']:,} bp")
