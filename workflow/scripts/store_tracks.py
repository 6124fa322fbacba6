"""Adapter: rule store_tracks -> prism.store.build_track_store (one cell line, one chromosome)."""
from prism.logs import job_log
from prism.statistics import _sizes
from prism.store import build_track_store

with job_log(snakemake) as log:
    chrom = snakemake.wildcards.chrom
    out = build_track_store(snakemake.params.tracks, chrom, _sizes(snakemake.input.fai)[chrom],
                            snakemake.output.tracks.removesuffix(".tracks.npy"))
    log(f"{chrom}: tracks {out['tracks']} in {out['seconds']:.1f} s")
