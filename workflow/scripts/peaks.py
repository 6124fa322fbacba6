"""Adapter: rule peaks -> prism.peaks.call_dnase_peaks (MACS3 bdgpeakcall on the DNase bigWig)."""
from prism.logs import job_log
from prism.peaks import call_dnase_peaks

with job_log(snakemake) as log:
    out = call_dnase_peaks(snakemake.input.dnase, snakemake.output[0], chromosomes=snakemake.params.chromosomes)
    log(f"{out['n_peaks']} peaks in {out['seconds']:.1f} s: " + ", ".join(f"{c} {n}" for c, n in out["per_chrom"].items()))
