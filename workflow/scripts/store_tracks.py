"""Adapter: rule store_tracks -> prism.store.build_track_store and build_long_hic (one cell line, one chromosome)."""
from prism.logs import job_log
from prism.store import build_cell_store

with job_log(snakemake) as log:
    spec, out = snakemake.params.spec, snakemake.output
    build_cell_store(genes_tsv=snakemake.input.genes, chrom=snakemake.wildcards.chrom, fasta=snakemake.input.fasta,
                     tracks=spec["tracks"], hic=spec["hic"], length=spec["length"], tracks_out=out.tracks,
                     meta_out=out.meta, hic_out=out.hic, log=log)
